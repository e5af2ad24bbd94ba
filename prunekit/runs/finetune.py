"""Fine-tuning a pruned run: the run's pruned model trained further on its data set, recorded in the run.

>>> run = finetune_run("runs/20261121-091500-resnet20-3f2a1c", finetune_config(epochs=10))
>>> run.manifest["finetune"]["accuracy"]     # test accuracy (%) after fine-tuning; list_runs() shows it too

Files go to ``<run>/finetune/`` (what :func:`prunekit.training.train.fit` writes: ``state.pt``, ``epoch001.safetensors``,
``model.safetensors``, ``metrics.jsonl``); the pruned ``<run>/model.safetensors`` is never overwritten. The
manifest's ``finetune`` entry holds the config, the data (its ``name``: a data set's, or an image folder's path),
the device, ``started`` / ``updated`` / ``finished`` timestamps, one row per finished epoch (``epochs``), and at the
end ``accuracy`` and ``loss`` on the test split and the fine-tuned model's file; under torchrun also ``ddp`` (world
size, backend and, at the end, every rank's weights hash: rank 0 alone writes the manifest and the files).

With ``distill_alpha`` above 0 in the config the pruned model learns from a teacher too (:mod:`prunekit.training.distill`):
by default the unpruned model the run was pruned from, read from the checkpoint file its manifest records and
checked against the manifest's weights hash; a run pruned from weights that are not on disk needs the teacher's
file named (``teacher=``, ``--teacher FILE``). The ``finetune`` entry's ``teacher`` records its file, weights hash,
whether it is the run's unpruned model, alpha and T (None without distillation). Under torchrun every rank loads it.

While fine-tuning, the run's ``status`` is ``running`` and owned by this process (a killed process reads as
``interrupted``); at the end ``done``, or ``failed`` with the error. Calling :func:`finetune_run` again resumes
after the last finished epoch.
"""
from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn

from prunekit import distributed as dist_util
from prunekit.criteria.scores import weights_hash
from prunekit.data import DataRequest, Splits, make_loaders, resolve_splits
from prunekit.defaults import FINETUNE_EPOCHS, FINETUNE_RECIPE
from prunekit.errors import UserError
from prunekit.models.checkpoints import load_checkpoint
from prunekit.models.fits import check_model_data
from prunekit.models.heads import outputs_of, replace_head
from prunekit.models.metrics import best_device
from prunekit.models.zoo import model_info
from prunekit.runs.records import MODEL_FILE, Run, utc_now
from prunekit.training.train import TrainConfig, fit

__all__ = ["FINETUNE_DIR", "finetune", "finetune_config", "finetune_run", "source_on_disk"]

FINETUNE_DIR = "finetune"


def finetune_config(epochs: int = FINETUNE_EPOCHS, **overrides) -> TrainConfig:
    """The fine-tuning recipe (:data:`prunekit.defaults.FINETUNE_RECIPE`, ``epochs``) with any TrainConfig field
    overridden."""
    return TrainConfig(**{**FINETUNE_RECIPE, "epochs": epochs, **overrides})


def finetune_run(
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    data: DataRequest | Splits | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    progress: bool = True,
    on_batch=None,
    teacher: str | os.PathLike | None = None,
    replace_head: bool = False,
) -> Run:
    """Fine-tune the pruned model of the run in ``run_dir``, recorded in the run (the step below :func:`finetune`).

    config: default :func:`finetune_config` (``doconv=True`` trains over-parameterized; files hold plain convs).
    data: a :class:`~prunekit.data.DataRequest` (a data set or an image folder, subsets; its name defaults to the
    data set the run's manifest names), or :class:`~prunekit.data.Splits` already loaded. device: default the best
    available. resume: continue after the last finished epoch in ``<run>/finetune``. Under torchrun (inside
    :func:`prunekit.distributed.distributed`) every rank calls this alike, each on ``cuda:LOCAL_RANK`` on CUDA,
    and rank 0 alone writes the run. on_batch: passed to :func:`prunekit.training.train.fit` (per-step progress; raising
    there stops the fine-tuning). teacher: the file of the model to distil from when ``config.distill_alpha`` is
    above 0 (default: the run's unpruned model, when its file is on disk); UserError, before anything is written,
    when distilling without a teacher on disk or given a teacher without distilling. The model must take the data
    (:func:`prunekit.models.fits.check_model_data`: its input size, its outputs against the classes), else UserError
    before anything is written; ``replace_head``: a model whose outputs differ from the classes gets a fresh head
    with the data's classes instead (the manifest's ``finetune`` entry records it under ``head``; no distillation
    then, the teacher's outputs are the old classes'). A failure marks the run ``failed`` (``interrupted`` for
    Ctrl-C) and re-raises.
    """
    run = Run.open(run_dir)
    model_file = run.path / MODEL_FILE
    if not model_file.is_file():
        raise UserError(f"run {run.manifest['id']} has no pruned model ({MODEL_FILE}; status {run.status})")
    config = config or finetune_config()
    teacher_model, teacher_record = _teacher(run, config, teacher)
    splits = data if isinstance(data, Splits) else _run_splits(run, data or DataRequest(), config.seed)
    model, header = load_checkpoint(model_file)
    arch, num_classes = header["arch"], len(splits.classes)
    head = _fit_head(model, arch, splits, replace_head, distilling=teacher_model is not None)
    if len(splits.train) < config.batch_size:
        raise UserError(f"{len(splits.train)} training images make no batch of {config.batch_size}")
    device = dist_util.rank_device(device or best_device())
    ddp = dist_util.world(device)
    workers = data.workers if isinstance(data, DataRequest) else None
    loaders = make_loaders(splits.train, splits.test, config.batch_size, device=device, seed=config.seed,
                           num_workers=workers)
    fit_args = dict(model=model, loaders=loaders, config=config, run=run, arch=arch, num_classes=num_classes,
                    data_name=splits.name, resume=resume, on_batch=on_batch, teacher=teacher_model)
    if not ddp.is_main:  # the other ranks train alongside and write nothing
        _fit(**fit_args, on_epoch=None, progress=False, on_finish=None)
        return run
    _start_entry(run, config, device, splits, ddp, resume, teacher_record, head)
    with run.failures_recorded():
        rows = _fit(**fit_args, on_epoch=lambda row: _record_epoch(run, row), progress=progress,
                    on_finish=lambda meta: _record_ddp(run, meta))
    run.update(finetune={**run.manifest["finetune"], "epochs": rows, "accuracy": rows[-1]["test_accuracy"],
                         "loss": rows[-1]["test_loss"], "model": str(Path(FINETUNE_DIR) / "model.safetensors"),
                         "updated": utc_now(), "finished": utc_now()})
    run.finish("done")
    return run


def _run_splits(run: Run, request: DataRequest, seed: int) -> Splits:
    """The request's splits; without a data set or folder named, the data set of the run's manifest."""
    if not request.name and not request.folder:
        name = (run.manifest.get("data") or {}).get("name")
        if not name:
            raise UserError(f"run {run.manifest['id']} records no data set (pruned without test images); name one "
                            "(or an image folder)")
        request = replace(request, name=name)
    return resolve_splits(request, seed=seed)


def _fit_head(model: nn.Module, arch: str, splits: Splits, replace: bool, *, distilling: bool) -> dict | None:
    """Check the run's model against the data (input size, outputs = classes); with ``replace``, a model whose
    outputs differ gets a fresh head -> what the manifest records of it (None: the head is the model's own)."""

    if not replace:
        check_model_data(model, arch, splits, labels=True)
        return None
    check_model_data(model, arch, splits, labels=False)
    size, classes = model_info(arch).input_size, len(splits.classes)
    before = outputs_of(model, size)
    if before == classes:
        return None
    if distilling:
        raise UserError(f"a replaced head ({before} -> {classes} classes) cannot learn from the unpruned model's "
                        f"{before} outputs: fine-tune without distillation (--distill-alpha 0)")
    layer = replace_head(model, classes, size)
    return {"replaced": layer, "outputs_before": before, "classes": classes, "data": splits.name}


def _start_entry(run: Run, config: TrainConfig, device, splits: Splits, ddp, resume: bool,
                 teacher: dict | None, head: dict | None = None) -> None:
    """Mark the run running and write its ``finetune`` entry (keeping the finished epochs when resuming)."""
    previous = (run.manifest.get("finetune") or {}) if resume else {}
    run.start()
    entry = {"dir": FINETUNE_DIR, "config": asdict(config), "device": str(device), "data": splits.record(),
             "started": previous.get("started") or utc_now(), "updated": utc_now(), "finished": None,
             "epochs": previous.get("epochs") or [], "accuracy": None, "loss": None, "model": None,
             "teacher": teacher, "head": head}
    if ddp.enabled:
        entry["ddp"] = {"world_size": ddp.world_size, "backend": ddp.backend}
    run.update(finetune=entry)


def _record_epoch(run: Run, row: dict) -> None:
    """A finished epoch's row into the manifest (replacing any later rows of an earlier attempt)."""
    done = [r for r in run.manifest["finetune"]["epochs"] if r["epoch"] < row["epoch"]]
    run.update(finetune={**run.manifest["finetune"], "epochs": [*done, row], "updated": utc_now()})


def _record_ddp(run: Run, meta: dict) -> None:
    """The ranks' weights hashes, before fit raises for ranks that disagree, so that the manifest says so."""
    if "ddp" in meta:
        run.update(finetune={**run.manifest["finetune"], "ddp": meta["ddp"]})


def _fit(*, model, loaders, config, run, arch, num_classes, data_name, resume, on_epoch, on_batch, progress,
         on_finish, teacher) -> list[dict]:
    """:func:`prunekit.training.train.fit` of the pruned ``model`` on the (train, test) ``loaders`` into ``<run>/finetune``
    (on every rank alike), distilling from ``teacher`` when it is not None."""
    return fit(model, *loaders, config, run.path / FINETUNE_DIR, arch=arch, num_classes=num_classes,
               meta={"run": run.manifest["id"], "stage": "finetune", "data": data_name}, resume=resume,
               on_epoch=on_epoch, on_batch=on_batch, progress=progress, on_finish=on_finish, teacher=teacher)


def source_on_disk(manifest: dict) -> Path | None:
    """The checkpoint file a run's ``manifest`` was pruned from (its default teacher) when it is on disk, else None.
    A relative path is read from the current directory, as it was given to prune."""
    recorded = (manifest.get("model") or {}).get("checkpoint")
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def _teacher(run: Run, config: TrainConfig, file: str | os.PathLike | None) -> tuple[nn.Module | None, dict | None]:
    """-> (the teacher model in eval mode on the CPU, its record for the manifest), or (None, None) without
    distillation. The default teacher is the run's unpruned model: the checkpoint its manifest records, whose
    weights must hash to the manifest's ``weights``. UserError when there is none on disk, the file holds other
    weights, ``file`` is given without distilling, or the teacher's classes differ from the run's."""
    source = run.manifest.get("model") or {}
    if not config.distill_alpha:
        if file is not None:
            raise UserError(f"a teacher ({file}) is only used when distilling: set distill_alpha above 0 "
                            "(--distill-alpha), or give no teacher")
        return None, None
    recorded = source.get("checkpoint")
    if file is None and source_on_disk(run.manifest) is None:
        where = (f"its source checkpoint {recorded} is not on disk" if recorded else
                 "it records no source checkpoint (it was pruned from weights that were never saved in a file)")
        raise UserError(f"run {run.manifest['id']} cannot distil from its unpruned model: {where}. Give the unpruned "
                        "model's file with --teacher FILE (teacher= in Python and in jobs), or fine-tune without "
                        "distillation (--distill-alpha 0)")
    path = Path(file if file is not None else recorded)
    model, _ = load_checkpoint(path, arch=None if file is not None else source.get("arch"),
                               num_classes=None if file is not None else source.get("num_classes"))
    digest = weights_hash(model)
    if file is None and digest != source.get("weights"):
        raise UserError(f"{path} no longer holds the weights run {run.manifest['id']} was pruned from (weights hash "
                        f"{digest[:12]}, the manifest's {str(source.get('weights'))[:12]}): give the unpruned model's "
                        "file with --teacher FILE, or fine-tune without distillation (--distill-alpha 0)")
    classes = next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)).out_features
    if source.get("num_classes") is not None and classes != int(source["num_classes"]):
        raise UserError(f"the teacher {path} has {classes} classes, the run's model {source['num_classes']}: give a "
                        "teacher trained on the run's classes")
    return model, {"path": str(path), "weights": digest, "unpruned": digest == source.get("weights"),
                   "alpha": config.distill_alpha, "temperature": config.distill_temperature}


def finetune(run: Run | str | os.PathLike, epochs: int = FINETUNE_EPOCHS, *, data: DataRequest | Splits | None = None,
             device: str | torch.device | None = None, teacher: str | os.PathLike | None = None,
             **config: object) -> Run:
    """Fine-tune a pruned run's model on its data set (the run's manifest names it) and record it in the run: the
    entry point. :func:`finetune_run` is the same with a whole :class:`~prunekit.training.train.TrainConfig` and
    per-batch callbacks (what the command line and the jobs call).

    Args:
        run: a :class:`~prunekit.runs.records.Run` (what :func:`prunekit.prune` returns) or its directory.
        epochs: passes over the training images (default :data:`prunekit.defaults.FINETUNE_EPOCHS`); a call again
            resumes after the last finished epoch.
        data: another data set or a subset (:class:`~prunekit.data.DataRequest`, e.g. ``DataRequest(subset=5000)``),
            or :class:`~prunekit.data.Splits` already loaded; images uint8 (N, C, H, W) of the model's input size.
        device: default the best available. teacher: the file of the model to distil from (default: the run's
            unpruned model when its file is on disk; ``distill_alpha=0`` turns distillation off).
        config: :func:`finetune_config` overrides, any TrainConfig field (``lr=``, ``batch_size=``, ``doconv=``).

    Returns: the run; ``run.manifest["finetune"]["accuracy"]`` is the test accuracy (%) after fine-tuning.

    >>> run = finetune(prune(model, plan(model, "resnet20", value=0.5)), epochs=3, distill_alpha=0)
    >>> run.manifest["finetune"]["accuracy"]
    """
    return finetune_run(getattr(run, "path", run), finetune_config(epochs, **config), data=data, device=device,
                        teacher=teacher)
