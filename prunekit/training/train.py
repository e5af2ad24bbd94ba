"""The trainer: SGD with momentum, a per-step cosine / step / one-cycle schedule with linear warm-up,
optional label smoothing, channels_last on every device (:data:`MEMORY_FORMAT`), mixed precision on CUDA, a
resumable state every epoch and per-epoch metrics in ``metrics.jsonl``.

Files in ``out_dir``: ``state.pt`` (weights, optimizer, schedule, RNG: what resume needs),
``epoch001.safetensors`` (the epoch-1 weights, for early scoring), ``model.safetensors`` (the final weights),
``metrics.jsonl`` (one JSON object per epoch, rewritten whole and atomically after each) and ``start.json``
(epoch 0: the test loss and accuracy of the model as it started, e.g. a pruned model before fine-tuning; the
point a training curve starts from).

With ``TrainConfig(doconv=True)`` the model trains over-parameterized (:mod:`prunekit.models.doconv`): its k x k convs
become DO-Convs for training, every saved ``.safetensors`` holds the folded plain convs (a copy is folded, the
training goes on), and the model handed to :func:`fit` ends folded. ``state.pt`` alone holds the
over-parameterized weights (W, D and their momenta), since resuming needs them; it resumes only with the same
``doconv`` setting.

With ``TrainConfig(distill_alpha=a)`` above 0 and a ``teacher`` module, the loss is
:func:`prunekit.training.distill.distillation_loss` against the teacher's logits on the same augmented batch (computed
without gradients, the teacher in eval mode on the same device, under the same autocast). The teacher is
deterministic, so a resumed distilled training continues as an uninterrupted one would.

Under ``torchrun`` (a process group joined by :func:`prunekit.distributed.distributed`), :func:`fit` trains with
DistributedDataParallel: each rank takes its share of every epoch (``train_loader.shard``; the batch size is
per process), the gradients are averaged, BatchNorm's running statistics are averaged at the end of each epoch,
every rank evaluates the same model on the whole test set, and rank 0 alone writes the files. A teacher runs on
every rank, outside DistributedDataParallel (which wraps the student only). At the end the
ranks' weights hashes are gathered into the final checkpoint's meta (``ddp``); they must be equal.
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

from prunekit import distributed as dist_util
from prunekit.criteria.scores import weights_hash
from prunekit.data import TrainLoader, make_loaders
from prunekit.defaults import DISTILL_TEMPERATURE, FINETUNE_EPOCHS, TRAIN_BATCH
from prunekit.errors import UserError
from prunekit.files import write_text_atomic
from prunekit.models.checkpoints import save_checkpoint
from prunekit.models.doconv import DOConv2d, fold, overparameterize
from prunekit.models.fits import check_model_data
from prunekit.models.metrics import evaluate
from prunekit.models.zoo import create_model
from prunekit.training.distill import check_distill, distillation_loss

__all__ = ["LR_MAX", "MEMORY_FORMAT", "PRECISIONS", "START_FILE", "TrainConfig", "TrainingDivergedError", "fit",
           "lr_factor", "read_metrics", "start_point", "train_new", "train_step", "uses_bf16", "write_metrics"]

SCHEDULES = ("cosine", "step", "onecycle")
PRECISIONS = ("auto", "bf16", "fp32")  # TrainConfig.precision: when the loss runs under bf16 autocast
START_FILE = "start.json"  # epoch 0: the model's test loss and accuracy before training
# The memory format models and batches train in, on every device. channels_last: on the CPU too, where ResNet-20's
# training steps run about 1.25x as many images/s as in NCHW (benchmarks/cpu_training_speed.py).
MEMORY_FORMAT = torch.channels_last


@dataclass
class TrainConfig:
    """Hyper-parameters; defaults are the usual CIFAR recipe (He et al. 2016 with a cosine schedule).

    distill_alpha: the weight of the teacher's term in [0, 1] (0: no distillation; above 0, :func:`fit` needs a
    teacher); distill_temperature: the temperature T > 0 softening both models' outputs (:mod:`prunekit.training.distill`).
    precision: "auto" (bf16 autocast on CUDA, float32 elsewhere), "bf16" (bf16 autocast on any device: on a CPU with
    bf16 units, ~1.8x the training images/s, ``benchmarks/cpu_training_speed.py``; slower on one without) or
    "fp32" (float32 everywhere).
    """

    epochs: int = FINETUNE_EPOCHS
    batch_size: int = TRAIN_BATCH
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    doconv: bool = False
    distill_alpha: float = 0.0
    distill_temperature: float = DISTILL_TEMPERATURE
    precision: str = "auto"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.epochs = _whole("epochs", self.epochs, "the passes over the training images")
        self.batch_size = _whole("batch_size", self.batch_size, "images per step")
        self.seed = _whole("seed", self.seed, "the random seed", low=0)
        self.lr = _number("lr", self.lr, 0, LR_MAX, "the base learning rate", low_open=True,
                          hint=" (0.1 trains CIFAR models from scratch, 0.01 fine-tunes)")
        self.momentum = _number("momentum", self.momentum, 0, 1, "SGD's momentum", high_open=True,
                                hint=" (0.9 is usual)")
        self.weight_decay = _number("weight_decay", self.weight_decay, 0, 1, "the L2 penalty", high_open=True,
                                    hint=" (5e-4 is usual)")
        self.warmup_epochs = _number("warmup_epochs", self.warmup_epochs, 0, math.inf, "the linear warm-up")
        self.label_smoothing = _number("label_smoothing", self.label_smoothing, 0, 1, "label smoothing",
                                       high_open=True)
        if self.nesterov and self.momentum == 0:
            raise UserError("nesterov=True needs a momentum above 0, got momentum 0: set a momentum (0.9 is usual) "
                            "or nesterov=False")
        check_distill(self.distill_alpha, self.distill_temperature)


LR_MAX = 10.0  # an SGD learning rate above this diverges on any model here: a typo, refused before training


def _number(name: str, value, low: float, high: float, what: str, *, low_open: bool = False,
            high_open: bool = False, hint: str = "") -> float:
    """``value`` as a float, or UserError naming ``name``, its value and the range (finite, in [low, high] with the
    ends open as asked)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and \
        (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserError(f"{name} ({what}) must be a finite number in {interval}, got {value!r}{hint}")
    return float(value)


def _whole(name: str, value, what: str, *, low: int = 1) -> int:
    """``value`` as an int (a whole float such as a JSON 3.0 too), or UserError naming ``name`` and its value."""
    whole = not isinstance(value, bool) and (isinstance(value, int) or
                                             (isinstance(value, float) and value.is_integer()))
    if not whole or value < low:
        raise UserError(f"{name} ({what}) must be a whole number >= {low}, got {value!r}")
    return int(value)


class TrainingDivergedError(UserError):
    """Training stopped because its loss or its weights stopped being finite (NaN or infinite); the message says
    where, why (most often a learning rate too high) and what is kept."""


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
    train_loader: TrainLoader,
    test_loader,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    arch: str, num_classes: int,
    meta: dict | None = None,
    resume: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[dict], None] | None = None,
    progress: bool = True,
    on_finish: Callable[[dict], None] | None = None,
    teacher: nn.Module | None = None,
) -> list[dict]:
    """Train ``model`` in place on ``train_loader`` and test after every epoch; returns the metrics rows.

    train_loader: a :class:`prunekit.data.TrainLoader` (:class:`~prunekit.data.DeviceLoader` for 32x32 arrays on
    the device, :class:`~prunekit.data.FolderLoader` for an image folder); the model trains on its ``device``.
    test_loader: any iterable of (x, y) batches on that device, e.g. either loader with ``train=False``.

    With ``resume=True`` and a ``state.pt`` in ``out_dir``, training continues after its last finished epoch (same
    weights, optimizer, schedule, data order as an uninterrupted run); else it starts by testing the model (epoch 0,
    ``start.json``). ``config.doconv`` over-parameterizes the k x k convs for training, folds them back at the end.

    on_epoch(row): after each epoch, with its metrics row. on_batch(info): after each optimizer step, with
    ``epoch``, ``epochs``, ``batch``, ``batches``, ``loss`` and ``accuracy`` (the epoch's running train means);
    an exception it raises (e.g. a cancelled job) stops training, and resume continues after the last finished
    epoch. on_finish(meta): at the end, with the final checkpoint's meta (``ddp`` in it under torchrun). Under
    torchrun the callbacks run on every rank (rows hold the metrics over all ranks); ``state.pt`` is read by rank
    0 and sent to the others. teacher: the model (K outputs) to distil from when ``config.distill_alpha`` > 0.
    A loss or weights no longer finite raise :class:`TrainingDivergedError`; nothing of that epoch is saved."""
    out = Path(out_dir)
    ddp = dist_util.world(train_loader.device)
    if ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)
    device, teacher = _place(model, teacher, train_loader, config, ddp)
    opt, sched = _optimizer(model, config, len(train_loader), train_loader.batch_size)
    start_epoch, rows = _resume(model, opt, sched, train_loader, config, out, ddp, resume)
    _start_point(model, test_loader, out, ddp, start_epoch)
    header = {"train_config": asdict(config), **(meta or {})}
    net = _wrapped(model, device) if ddp.enabled else model  # what trains (DistributedDataParallel under torchrun)
    for epoch in range(start_epoch, config.epochs):
        try:
            row = _epoch(model, net, teacher, opt, sched, train_loader, test_loader, config, epoch, ddp,
                         on_batch, progress and ddp.is_main)
        except _NonFinite as exc:
            raise _diverged(str(exc), config, out, epoch) from None
        rows.append(row)
        rng = {"loader_rng": train_loader.generator.get_state(), "torch_rng": torch.get_rng_state()}
        per_rank = dist_util.all_gather_object(rng) if ddp.enabled else None
        if ddp.is_main:
            _save_epoch(model, opt, sched, rng, per_rank, rows, epoch, config, out, arch, num_classes, header)
        if progress and ddp.is_main:
            tqdm.write(_summary(row))
        if on_epoch is not None:
            on_epoch(row)
    _finish(model, rows, config, out, arch, num_classes, header, ddp, on_finish)
    return rows


def _start_point(model: nn.Module, test_loader, out: Path, ddp, start_epoch: int) -> None:
    """Before the first epoch of a run started afresh: the model's test loss and accuracy as it starts, written
    to ``start.json`` by rank 0 (:func:`start_point` reads it). A resumed run keeps the one it has."""
    if start_epoch > 0:
        return
    test = evaluate(model, test_loader)  # every rank alike, as after an epoch
    if ddp.is_main:
        write_text_atomic(out / START_FILE, json.dumps({"epoch": 0, "test_loss": test["loss"],
                                                        "test_accuracy": test["accuracy"]}) + "\n")


def start_point(out_dir: str | Path) -> dict | None:
    """The epoch-0 row of a training in ``out_dir`` ({epoch: 0, test_loss, test_accuracy}), or None when it has
    none (an older run, or one still evaluating its start)."""
    file = Path(out_dir) / START_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def read_metrics(file: str | Path) -> list[dict]:
    """The per-epoch rows of a ``metrics.jsonl`` (one JSON object per line)."""
    return [json.loads(line) for line in Path(file).read_text().splitlines() if line.strip()]


def write_metrics(file: str | Path, rows: list[dict]) -> None:
    """``rows`` as ``metrics.jsonl``, one JSON object per line, replacing the file whole (atomically)."""
    write_text_atomic(file, "".join(json.dumps(r) + "\n" for r in rows))


def _summary(row: dict) -> str:
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.3f}, test accuracy {row['test_accuracy']:.2f}%, "
            f"{row['images_per_s']:.0f} img/s")


def _wrapped(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (on its CUDA device, or the CPU)."""
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _place(model: nn.Module, teacher: nn.Module | None, train_loader, config: TrainConfig, ddp):
    """Shard the loader under torchrun, seed, over-parameterize (DO-Conv) and move the model to the loader's
    device in :data:`MEMORY_FORMAT`; -> (that device, the teacher there when distilling (:func:`_teacher_on`))."""
    if ddp.enabled and train_loader.sampler is None:
        train_loader.shard(ddp.world_size, ddp.rank)
    device = train_loader.device
    torch.manual_seed(config.seed)
    if config.doconv:
        overparameterize(model)
    model.to(device, memory_format=MEMORY_FORMAT)
    return device, _teacher_on(teacher, device, config)


def _teacher_on(teacher: nn.Module | None, device: torch.device, config: TrainConfig) -> nn.Module | None:
    """The teacher frozen in eval mode on ``device`` (in :data:`MEMORY_FORMAT`) when distilling, else None; UserError
    when distilling without one."""
    if not config.distill_alpha:
        return None
    if teacher is None:
        raise UserError(f"distill_alpha={config.distill_alpha} distils from a teacher, and none was given: pass "
                        "teacher=, or set distill_alpha to 0")
    teacher.to(device, memory_format=MEMORY_FORMAT).eval().requires_grad_(False)
    return teacher


def _loss(net, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor, config: TrainConfig):
    """-> (the student's logits (B, K), the batch's loss): the cross-entropy, or with a teacher the distillation
    loss against its logits on the same batch ``x`` (B, C, H, W), computed without gradients."""
    logits = net(x)
    if teacher is None:
        return logits, F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
    with torch.no_grad():
        soft_targets = teacher(x)
    return logits, distillation_loss(logits, soft_targets, y, alpha=config.distill_alpha,
                                     temperature=config.distill_temperature, label_smoothing=config.label_smoothing)


def uses_bf16(config: TrainConfig, device: torch.device) -> bool:
    """Whether :func:`fit` runs the loss under bf16 autocast on ``device`` (``config.precision``)."""
    return config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")


def train_step(net, teacher: nn.Module | None, opt, sched, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
               *, fmt: torch.memory_format, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of :func:`fit` on the batch x (B, C, H, W) float, y (B,) int64 (on the model's device):
    the batch in memory format ``fmt`` (:data:`MEMORY_FORMAT` in fit), the loss (:func:`_loss`, under bf16
    autocast when ``bf16``: fit's choice on CUDA), backward, the SGD step and the schedule's step -> (logits (B, K),
    the loss)."""
    x = x.contiguous(memory_format=fmt)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits, loss = _loss(net, teacher, x, y, config)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return logits, loss


def _optimizer(model: nn.Module, config: TrainConfig, steps_per_epoch: int, batch_size: int):
    """SGD (no weight decay on biases and norms) and its per-step schedule."""
    if steps_per_epoch == 0:
        raise UserError(f"the training data make no batch of {batch_size} (a partial one is dropped)")
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
    )
    total, warmup = config.epochs * steps_per_epoch, int(config.warmup_epochs * steps_per_epoch)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, config.schedule))


def _resume(model, opt, sched, train_loader, config: TrainConfig, out: Path, ddp, resume: bool):
    """-> (first epoch to run, the finished epochs' rows). With ``resume`` and a ``state.pt``, rank 0 reads it and
    sends it to the others; the weights, optimizer, schedule and random streams continue where they stopped."""
    state_path, metrics_path = out / "state.pt", out / "metrics.jsonl"
    state, rows = None, []
    if ddp.is_main and resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    state = dist_util.broadcast_object(state)  # rank 0's file (the others may not see it, on another machine)
    if state is None:
        if ddp.is_main and metrics_path.exists():
            metrics_path.unlink()
        return 0, dist_util.broadcast_object(rows)
    if state.get("doconv", False) != config.doconv:
        raise UserError(f"{state_path} was saved with doconv={state.get('doconv', False)}; resume it with "
                        "the same setting, or start over (resume=False / --no-resume)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    loader_rng, torch_rng = state["loader_rng"], state["torch_rng"]
    per_rank = state.get("rng_per_rank") or []
    if ddp.enabled and len(per_rank) == ddp.world_size:  # saved by as many ranks: each takes its own
        loader_rng, torch_rng = per_rank[ddp.rank]["loader_rng"], per_rank[ddp.rank]["torch_rng"]
    elif ddp.enabled and ddp.rank > 0:  # saved by another number of processes: fresh streams of our own
        loader_rng, torch_rng = train_loader.generator.get_state(), torch.get_rng_state()
    train_loader.generator.set_state(loader_rng)
    torch.set_rng_state(torch_rng)
    if ddp.is_main and metrics_path.exists():
        rows = read_metrics(metrics_path)[:state["epoch"]]
        write_metrics(metrics_path, rows)
    return state["epoch"], dist_util.broadcast_object(rows)  # the finished epochs' rows, which rank 0 read


def _epoch(model, net, teacher, opt, sched, train_loader, test_loader, config: TrainConfig, epoch: int, ddp,
           on_batch, show: bool) -> dict:
    """One epoch of training (distilling from ``teacher`` when it is not None), then the test: -> the epoch's
    metrics row (means over every rank under torchrun). _NonFinite when a loss or the weights stop being finite."""
    device = train_loader.device
    model.train()
    train_loader.set_epoch(epoch)
    t0 = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show, leave=False)
    for batch, (x, y) in enumerate(bar, 1):
        logits, loss = train_step(net, teacher, opt, sched, x, y, config, fmt=MEMORY_FORMAT,
                                  bf16=uses_bf16(config, device))
        value = loss.item()
        _check_loss(value, epoch, batch, len(train_loader), opt, ddp, device)
        loss_sum += value * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        if on_batch is not None:
            on_batch({"epoch": epoch + 1, "epochs": config.epochs, "batch": batch, "batches": len(train_loader),
                      "loss": loss_sum / seen, "accuracy": 100.0 * correct / seen})
    if ddp.enabled:  # the epoch's means over all ranks, and one model on all ranks
        loss_sum, correct, seen = dist_util.all_reduce_sum([loss_sum, correct, seen], device)
        dist_util.average_buffers(model)
    _check_weights(model, epoch)  # before the test, and before anything of the epoch is saved
    seconds = time.perf_counter() - t0
    test = evaluate(model, test_loader)  # the unwrapped model: no collective, the same result on every rank
    return {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": 100.0 * correct / seen,
            "test_loss": test["loss"], "test_accuracy": test["accuracy"], "lr": opt.param_groups[0]["lr"],
            "seconds": seconds, "images_per_s": seen / seconds}


class _NonFinite(Exception):
    """Inside :func:`fit`: a loss or the weights stopped being finite (the message says where); fit raises
    :class:`TrainingDivergedError` from it, saying what is kept."""


def _check_loss(value: float, epoch: int, batch: int, batches: int, opt, ddp, device) -> None:
    """_NonFinite when the step's loss ``value`` is NaN or infinite. Under torchrun the ranks' losses are summed
    first, so that every rank stops at the same step (one rank going on alone would wait for the others forever)."""
    total = dist_util.all_reduce_sum([value], device)[0] if ddp.enabled else value
    if not math.isfinite(total):
        what = f"the loss is {value}" if not math.isfinite(value) else "the loss is not finite on another rank"
        raise _NonFinite(f"in epoch {epoch + 1} at step {batch} of {batches}: {what} (learning rate "
                         f"{opt.param_groups[0]['lr']:.4g} at that step)")


def _check_weights(model: nn.Module, epoch: int) -> None:
    """_NonFinite when a weight or a buffer of ``model`` holds NaN or infinity after epoch ``epoch`` (0-based)'s
    last step, though its losses were finite; checked before anything of the epoch is saved."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise _NonFinite(f"in epoch {epoch + 1}: the weights are no longer finite after its last step (NaN or "
                         f"infinity in {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")


def _diverged(where: str, config: TrainConfig, out: Path, epoch: int) -> TrainingDivergedError:
    """The error for a training that diverged ``where`` in epoch ``epoch`` (0-based): what is kept, the likely
    cause, the fix."""
    kept = (f"The last good state is kept: {out / 'state.pt'} holds epoch {epoch} and nothing of epoch "
            f"{epoch + 1} was written" if epoch else "No epoch had finished, so nothing was saved")
    return TrainingDivergedError(
        f"training diverged {where}. {kept}. The usual cause is a learning rate too high for this model: lower the "
        f"learning rate (lr {config.lr:g} now; try {config.lr / 10:g} with --lr, or lr= in Python and jobs) and start "
        "over with --no-resume (resume=False): a resumed training keeps its old learning rate")


def _finish(model, rows, config, out: Path, arch, num_classes, header, ddp, on_finish) -> None:
    """Fold DO-Convs, check that every rank holds the same weights (torchrun), save ``model.safetensors``."""
    final_meta = {**header, "epochs": config.epochs, "test_accuracy": rows[-1]["test_accuracy"] if rows else None}
    fold(model).float()
    if ddp.enabled:

        hashes = dist_util.all_gather_object(weights_hash(model))
        final_meta["ddp"] = {"world_size": ddp.world_size, "backend": ddp.backend, "weights_hash_per_rank": hashes,
                             "consistent": len(set(hashes)) == 1}
    if ddp.is_main:
        save_checkpoint(model, out / "model.safetensors", arch=arch, num_classes=num_classes, meta=final_meta)
    if on_finish is not None:
        on_finish(final_meta)
    if ddp.enabled and not final_meta["ddp"]["consistent"]:
        raise RuntimeError(f"the {ddp.world_size} ranks ended with different weights (hashes {hashes}); "
                           "the processes did not train one model")


def _save_epoch(model, opt, sched, rng, per_rank, rows, epoch, config, out, arch, num_classes, header) -> None:
    """Rank 0's files after an epoch: ``metrics.jsonl`` rewritten with every finished epoch's row (atomically: a
    reader never sees half a line), ``epoch001.safetensors`` after the first epoch, then ``state.pt`` (replaced
    atomically; ``rng_per_rank``: each rank's random streams under torchrun)."""
    write_metrics(out / "metrics.jsonl", rows)
    if epoch == 0:
        save_checkpoint(_plain(model), out / "epoch001.safetensors", arch=arch, num_classes=num_classes,
                        meta={**header, "epoch": epoch + 1, "test_accuracy": rows[-1]["test_accuracy"]})
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             **rng, "epoch": epoch + 1, "doconv": config.doconv}
    if per_rank is not None:
        state["rng_per_rank"] = per_rank
    tmp = out / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "state.pt")


def _plain(model: nn.Module) -> nn.Module:
    """``model`` itself when it holds no DO-Conv, else a folded copy (the training model is left as it is)."""
    if not any(isinstance(m, DOConv2d) for m in model.modules()):
        return model
    return fold(copy.deepcopy(model))


def train_new(arch: str, splits, config: TrainConfig, out_dir: str | Path, *, device: str | torch.device,
              workers: int | None = None, meta: dict | None = None, resume: bool = True,
              on_batch: Callable[[dict], None] | None = None, progress: bool = True,
              pretrained: bool = False) -> list[dict]:
    """Train a fresh ``arch`` (any model name, :mod:`prunekit.models.zoo`) on :class:`~prunekit.data.Splits` into
    ``out_dir`` with :func:`fit`: the command line's ``train`` and the ``train`` job both call this. ``pretrained``:
    start from the source's downloaded weights (random, and said so, when they cannot be downloaded). UserError
    first when ``arch``'s input size is not the images' (:func:`prunekit.models.fits.check_input_size`). The checkpoint's
    meta records the data (its name), how the weights started (``weights``) and ``meta``."""

    check_model_data(None, arch, splits, labels=False)
    built = create_model(arch, num_classes=len(splits.classes), pretrained=pretrained)
    if progress and pretrained:
        tqdm.write(f"{arch}: {built.weights}")
    loaders = make_loaders(splits.train, splits.test, config.batch_size, device=device, seed=config.seed,
                           num_workers=workers)
    return fit(built.model, *loaders, config, out_dir, arch=arch, num_classes=len(splits.classes),
               meta={"data": splits.name, "weights": built.weights, **(meta or {})}, resume=resume,
               on_batch=on_batch, progress=progress)
