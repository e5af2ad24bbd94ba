"""The trainer: SGD with momentum, a per-step cosine / step / one-cycle schedule with linear warm-up,
optional label smoothing, mixed precision and channels_last on CUDA, a resumable state every epoch and
per-epoch metrics appended to ``metrics.jsonl``.

Files in ``out_dir``: ``state.pt`` (weights, optimizer, schedule, RNG: what resume needs),
``epoch001.safetensors`` (the epoch-1 weights, for early scoring), ``model.safetensors`` (the final weights)
and ``metrics.jsonl`` (one JSON object per epoch).

With ``TrainConfig(doconv=True)`` the model trains over-parameterized (:mod:`prunekit.doconv`): its k x k convs
become DO-Convs for training, every saved ``.safetensors`` holds the folded plain convs (a copy is folded, the
training goes on), and the model handed to :func:`fit` ends folded. ``state.pt`` alone holds the
over-parameterized weights (W, D and their momenta), since resuming needs them; it resumes only with the same
``doconv`` setting.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoints import save_checkpoint
from .data import DeviceLoader
from .doconv import DOConv2d, fold, overparameterize
from .metrics import evaluate

__all__ = ["TrainConfig", "fit", "lr_factor"]

SCHEDULES = ("cosine", "step", "onecycle")


@dataclass
class TrainConfig:
    """Hyper-parameters; defaults are the usual CIFAR recipe (He et al. 2016 with a cosine schedule)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    doconv: bool = False

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not (self.lr > 0) or not (0 <= self.label_smoothing < 1) or self.weight_decay < 0:
            raise ValueError("need lr > 0, 0 <= label_smoothing < 1 and weight_decay >= 0")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` of ``total``.

    Linear warm-up from ~0 over ``warmup`` steps, then: ``cosine`` decays to 0; ``step`` multiplies by 0.1
    at 50% and 75% of training; ``onecycle`` decays linearly to 0.
    """
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "step":
        return 0.1 ** ((t >= 0.5) + (t >= 0.75))
    return max(0.0, 1 - t)


def fit(
    model: nn.Module,
    train_loader: DeviceLoader,
    test_loader,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    arch: str,
    num_classes: int,
    meta: dict | None = None,
    resume: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place on ``train_loader`` and test after every epoch; returns the metrics rows.

    With ``resume=True`` and a ``state.pt`` in ``out_dir``, training continues after its last finished epoch
    (same weights, optimizer, schedule and data order as an uninterrupted run). With ``config.doconv`` the
    model's k x k convs are over-parameterized for training and folded back at the end (in place).

    on_epoch(row): after each epoch, with its metrics row. on_batch(info): after each optimizer step, with
    ``epoch``, ``epochs``, ``batch``, ``batches``, ``loss`` and ``accuracy`` (the epoch's running train means);
    an exception it raises (e.g. a cancelled job) stops training, and resume continues after the last
    finished epoch.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = train_loader.device
    cuda = device.type == "cuda"
    torch.manual_seed(config.seed)
    if config.doconv:
        overparameterize(model)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training data make no batch of {train_loader.batch_size} (a partial one is dropped)")
    total, warmup = config.epochs * steps_per_epoch, int(config.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, config.schedule))
    rows: list[dict] = []
    start_epoch = 0
    state_path, metrics_path = out / "state.pt", out / "metrics.jsonl"
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("doconv", False) != config.doconv:
            raise ValueError(f"{state_path} was saved with doconv={state.get('doconv', False)}; resume it with "
                             "the same setting, or start over (resume=False / --no-resume)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        train_loader.generator.set_state(state["loader_rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = state["epoch"]
        if metrics_path.exists():
            rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()][:start_epoch]
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif metrics_path.exists():
        metrics_path.unlink()
    header = {"train_config": asdict(config), **(meta or {})}
    for epoch in range(start_epoch, config.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for batch, (x, y) in enumerate(bar, 1):
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
            if on_batch is not None:
                on_batch({"epoch": epoch + 1, "epochs": config.epochs, "batch": batch, "batches": steps_per_epoch,
                          "loss": loss_sum / seen, "accuracy": 100.0 * correct / seen})
        seconds = time.perf_counter() - t0
        test = evaluate(model, test_loader)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_accuracy": 100.0 * correct / seen,
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "lr": opt.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_s": seen / seconds,
        }
        rows.append(row)
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        epoch_meta = {**header, "epoch": epoch + 1, "test_accuracy": test["accuracy"]}
        if epoch == 0:
            save_checkpoint(_plain(model), out / "epoch001.safetensors", arch=arch, num_classes=num_classes,
                            meta=epoch_meta)
        tmp = out / "state.pt.tmp"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "loader_rng": train_loader.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch + 1,
                "doconv": config.doconv,
            },
            tmp,
        )
        tmp.replace(state_path)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: train loss {row['train_loss']:.3f}, test accuracy {row['test_accuracy']:.2f}%, "
                f"{row['images_per_s']:.0f} img/s"
            )
        if on_epoch is not None:
            on_epoch(row)
    final_meta = {**header, "epochs": config.epochs, "test_accuracy": rows[-1]["test_accuracy"] if rows else None}
    save_checkpoint(fold(model).float(), out / "model.safetensors", arch=arch, num_classes=num_classes, meta=final_meta)
    return rows


def _plain(model: nn.Module) -> nn.Module:
    """``model`` itself when it holds no DO-Conv, else a folded copy (the training model is left as it is)."""
    if not any(isinstance(m, DOConv2d) for m in model.modules()):
        return model
    return fold(copy.deepcopy(model))
