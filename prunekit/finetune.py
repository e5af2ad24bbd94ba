"""Fine-tuning a pruned run: the run's pruned model trained further on its data set, recorded in the run.

>>> run = finetune_run("runs/20261121-091500-resnet20-3f2a1c", finetune_config(epochs=10))
>>> run.manifest["finetune"]["accuracy"]     # test accuracy (%) after fine-tuning; list_runs() shows it too

Files go to ``<run>/finetune/`` (what :func:`prunekit.train.fit` writes: ``state.pt``, ``epoch001.safetensors``,
``model.safetensors``, ``metrics.jsonl``); the pruned ``<run>/model.safetensors`` is never overwritten. The
manifest's ``finetune`` entry holds the config, the data (its ``name``: a data set's, or an image folder's path),
the device, ``started`` / ``updated`` / ``finished`` timestamps, one row per finished epoch (``epochs``), and at the
end ``accuracy`` and ``loss`` on the test split and the fine-tuned model's file; under torchrun also ``ddp`` (world
size, backend and, at the end, every rank's weights hash: rank 0 alone writes the manifest and the files). While
fine-tuning, the run's ``status`` is ``running`` and owned by this process (a killed process reads as
``interrupted``); at the end ``done``, or ``failed`` with the error. Calling :func:`finetune_run` again resumes
after the last finished epoch.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from . import distributed as dist_util
from .checkpoints import load_checkpoint
from .data import ArraySet, folder_splits, load_arrays, make_loaders
from .data import subset as subset_of
from .metrics import best_device
from .runs import MODEL_FILE, Run, utc_now
from .train import TrainConfig, fit

__all__ = ["FINETUNE_DIR", "FINETUNE_RECIPE", "finetune_config", "finetune_run"]

FINETUNE_DIR = "finetune"
# The usual CIFAR fine-tuning after pruning (e.g. Torch-Pruning's CIFAR benchmarks: SGD lr 0.01, momentum 0.9,
# weight decay 5e-4, batch 128), without Nesterov or warm-up, with a cosine schedule (issue 5).
FINETUNE_RECIPE = {"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "batch_size": 128,
                   "schedule": "cosine", "warmup_epochs": 0.0}


def finetune_config(epochs: int = 30, **overrides) -> TrainConfig:
    """The fine-tuning recipe (:data:`FINETUNE_RECIPE`, ``epochs``) with any TrainConfig field overridden."""
    return TrainConfig(**{**FINETUNE_RECIPE, "epochs": epochs, **overrides})


def finetune_run(
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    train_set: ArraySet | None = None,
    test_set: ArraySet | None = None,
    data: str | None = None,
    data_root: str | os.PathLike | None = None,
    folder: str | os.PathLike | None = None,
    image_size: int = 224,
    num_workers: int | None = None,
    subset: int = 0,
    test_subset: int = 0,
    device: str | torch.device | None = None,
    resume: bool = True,
    progress: bool = True,
    on_batch=None,
) -> Run:
    """Fine-tune the pruned model of the run in ``run_dir`` and record it in the run; returns the run.

    config: default :func:`finetune_config` (``doconv=True`` trains over-parameterized; files hold plain convs).
    train_set / test_set: the data (both or neither); by default the splits of the data set named ``data``,
    else by the run's manifest, loaded from ``data_root``; or ``folder``, an image folder holding ``train/`` and
    ``val/`` ImageFolder trees (:func:`prunekit.data.folder_splits` at ``image_size``, read by ``num_workers``
    DataLoader processes; default min(8, CPU count)). subset: train on this many images (0: all);
    test_subset: test on this many (0: all). device: default the best available. resume: continue after the
    last finished epoch in ``<run>/finetune``. Under torchrun (inside :func:`prunekit.distributed.distributed`)
    every rank calls this alike, each on ``cuda:LOCAL_RANK`` on CUDA, and rank 0 alone writes the run.
    on_batch: passed to :func:`prunekit.train.fit` (per-step progress; raising there stops the fine-tuning).
    A failure marks the run ``failed`` (``interrupted`` for Ctrl-C) and re-raises.
    """
    if (train_set is None) != (test_set is None):
        raise ValueError("give both train_set and test_set, or neither")
    if folder is not None and train_set is not None:
        raise ValueError("give train_set and test_set, or folder, not both")
    run = Run.open(run_dir)
    model_file = run.path / MODEL_FILE
    if not model_file.is_file():
        raise ValueError(f"run {run.manifest['id']} has no pruned model ({MODEL_FILE}; status {run.status})")
    if folder is not None:
        train_set, test_set = folder_splits(folder, image_size=image_size)
        name = str(Path(folder).resolve())
    elif train_set is None:
        name = data or (run.manifest.get("data") or {}).get("name")
        if not name:
            raise ValueError(f"run {run.manifest['id']} records no data set (pruned without test images); name one "
                             "(or an image folder)")
        with dist_util.main_first():  # rank 0 decodes into the cache, the others read it
            train_set, test_set = load_arrays(name, "train", data_root), load_arrays(name, "test", data_root)
    else:
        name = train_set.name
    model, header = load_checkpoint(model_file)
    arch, num_classes = header["arch"], int(header["num_classes"])
    if len(train_set.classes) != num_classes:
        raise ValueError(f"the model has {num_classes} classes, the data set {name!r} {len(train_set.classes)}")
    config = config or finetune_config()
    if subset:
        train_set = subset_of(train_set, subset, seed=config.seed)
    if test_subset:
        test_set = subset_of(test_set, test_subset, seed=0)
    if len(train_set) < config.batch_size:
        raise ValueError(f"{len(train_set)} training images make no batch of {config.batch_size}")
    device = dist_util.rank_device(device or best_device())
    ddp = dist_util.world(device)
    loaders = make_loaders(train_set, test_set, config.batch_size, device=device, seed=config.seed,
                           num_workers=num_workers)
    if not ddp.is_main:  # the other ranks train alongside and write nothing
        _fit(model, loaders, config, run, arch, num_classes, name, resume, None, on_batch, False, None)
        return run
    previous = (run.manifest.get("finetune") or {}) if resume else {}
    run.start()
    entry = {"dir": FINETUNE_DIR, "config": asdict(config), "device": str(device),
             "data": {"name": name, "train": len(train_set), "test": len(test_set)},
             "started": previous.get("started") or utc_now(), "updated": utc_now(), "finished": None,
             "epochs": previous.get("epochs") or [], "accuracy": None, "loss": None, "model": None}
    if ddp.enabled:
        entry["ddp"] = {"world_size": ddp.world_size, "backend": ddp.backend}
    run.update(finetune=entry)

    def record(row: dict) -> None:
        done = [r for r in run.manifest["finetune"]["epochs"] if r["epoch"] < row["epoch"]]
        run.update(finetune={**run.manifest["finetune"], "epochs": [*done, row], "updated": utc_now()})

    def finished(meta: dict) -> None:  # before fit raises for ranks that disagree, so that the manifest says so
        if "ddp" in meta:
            run.update(finetune={**run.manifest["finetune"], "ddp": meta["ddp"]})

    with run.failures_recorded():
        rows = _fit(model, loaders, config, run, arch, num_classes, name, resume, record, on_batch, progress,
                    finished)
    run.update(finetune={**run.manifest["finetune"], "epochs": rows, "accuracy": rows[-1]["test_accuracy"],
                         "loss": rows[-1]["test_loss"], "model": str(Path(FINETUNE_DIR) / "model.safetensors"),
                         "updated": utc_now(), "finished": utc_now()})
    run.finish("done")
    return run


def _fit(model, loaders, config, run, arch, num_classes, data_name, resume, on_epoch, on_batch, progress,
         on_finish) -> list[dict]:
    """:func:`prunekit.train.fit` of the pruned ``model`` on the (train, test) ``loaders`` into ``<run>/finetune``
    (on every rank alike)."""
    return fit(model, *loaders, config, run.path / FINETUNE_DIR, arch=arch, num_classes=num_classes,
               meta={"run": run.manifest["id"], "stage": "finetune", "data": data_name}, resume=resume,
               on_epoch=on_epoch, on_batch=on_batch, progress=progress, on_finish=on_finish)
