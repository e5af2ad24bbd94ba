"""Benchmark: CPU training / fine-tuning throughput of the trainer's own step under different settings.

Every variant runs :func:`prunekit.training.train.train_step` (the step :func:`prunekit.training.train.fit` runs: the batch in a
memory format, the loss, backward, the SGD step with its schedule, built by the trainer's own optimizer code) on
batches of :class:`prunekit.data.DeviceLoader` (CIFAR-10 training images, crops and flips), with the fine-tuning
recipe (:func:`prunekit.runs.finetune.finetune_config`, without distillation unless the variant says ``teacher``).
Variants differ in one or more of:

- ``threads``: ``torch.set_num_threads`` while the variant runs (2: torch's default on this machine);
- ``channels_last``: model and batches in channels_last (the trainer's setting since this benchmark; NCHW before);
- ``compile``: the model through ``torch.compile`` (inductor on the CPU); its compile seconds (the first step, a
  cold compile: inductor's cache is a fresh folder) are reported apart, the images/s are after compiling, and
  ``break_even_images`` is how many training images the faster steps need to win the compile time back (None:
  they never do);
- ``batch``: images per step (a recipe change: the learning rate would scale with it);
- ``bf16``: bf16 autocast on the CPU (a numerics change);
- ``teacher``: the fine-tuning default, distilling from an unpruned ResNet-20 (its forward in every step).

Each round times every variant once on the same number of images (``--images-per-round``), in turn (a, b, c, a,
b, c, ...), so that a change of the machine's load hits all alike; the figure is the median over rounds, the ratio
is to the ``baseline`` variant (today's trainer on the CPU). The load average is recorded before and after and
for every round. The inter-op thread pool is left as it is (eager training does not use it).

    python benchmarks/cpu_training_speed.py [--rounds 8] [--images-per-round 512] [--models resnet20]
        [--variants baseline channels_last ...]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))  # a cold compile is timed
import torch  # noqa: E402
from common import RESULTS, write_result

from prunekit.data import DataNotFoundError, DeviceLoader, load_arrays
from prunekit.defaults import TRAIN_BATCH
from prunekit.runs.finetune import finetune_config
from prunekit.models.zoo import build_model
from prunekit.training.train import _optimizer, train_step

TARGET = 1.5  # target: ResNet-20 fine-tuning at least 1.5x today's images/s on the CPU
BASE = {"threads": 2, "channels_last": False, "compile": False, "batch": TRAIN_BATCH, "bf16": False, "teacher": False}
VARIANTS = {
    "baseline": {},
    "channels_last": {"channels_last": True},
    "threads_1": {"threads": 1},
    "threads_1_channels_last": {"threads": 1, "channels_last": True},
    "batch_64": {"batch": 64},
    "batch_256": {"batch": 256},
    "batch_256_channels_last": {"batch": 256, "channels_last": True},
    "bf16_channels_last": {"bf16": True, "channels_last": True},
    "compile": {"compile": True},
    "compile_channels_last": {"compile": True, "channels_last": True},
    "teacher": {"teacher": True},
    "teacher_channels_last": {"teacher": True, "channels_last": True},
}


def _stepper(name: str, data, settings: dict):
    """-> (step(): one training step of ``name`` with ``settings`` on the next batch, compile seconds or None)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    model = build_model(name, num_classes=len(data.classes)).to(memory_format=fmt).train()
    config = finetune_config(batch_size=settings["batch"], distill_alpha=0.9 if settings["teacher"] else 0.0)
    loader = DeviceLoader(data, settings["batch"], train=True, seed=0)
    opt, sched = _optimizer(model, config, len(loader), settings["batch"])
    teacher = None
    if settings["teacher"]:
        teacher = build_model(name, num_classes=len(data.classes)).to(memory_format=fmt).eval().requires_grad_(False)
    net = torch.compile(model) if settings["compile"] else model
    batches = itertools.cycle(list(loader))

    def step() -> None:
        torch.set_num_threads(settings["threads"])
        x, y = next(batches)
        _, loss = train_step(net, teacher, opt, sched, x, y, config, fmt=fmt, bf16=settings["bf16"])
        loss.item()  # as fit does: the step has finished

    t0 = time.perf_counter()
    step()  # warm-up: kernels, allocator, and the compile when compiling
    return step, (round(time.perf_counter() - t0, 1) if settings["compile"] else None)


def measure(name: str, data, variants: list[str], rounds: int, per_round: int) -> dict:
    """Every variant of ``variants`` on model ``name``, interleaved for ``rounds`` rounds -> its result rows."""
    steppers, rows = {}, {}
    for key in variants:
        settings = {**BASE, **VARIANTS[key]}
        steppers[key], compile_s = _stepper(name, data, settings)
        rows[key] = {"settings": settings, "rounds_images_per_s": []}
        if compile_s is not None:
            rows[key]["compile_seconds"] = compile_s
        print(f"{name} {key}: ready" + (f" (compiled in {compile_s} s)" if compile_s is not None else ""), flush=True)
    loads = []
    for _ in range(rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for key, step in steppers.items():
            steps = max(1, per_round // rows[key]["settings"]["batch"])
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            rows[key]["rounds_images_per_s"].append(round(steps * rows[key]["settings"]["batch"] /
                                                          (time.perf_counter() - t0), 1))
    base = statistics.median(rows["baseline"]["rounds_images_per_s"]) if "baseline" in rows else None
    for key, row in rows.items():
        row["images_per_s"] = statistics.median(row["rounds_images_per_s"])
        row["ratio"] = round(row["images_per_s"] / base, 3) if base else None
        if "compile_seconds" in row and base:
            row["break_even_images"] = _break_even(row["compile_seconds"], base, row["images_per_s"])
        print(f"{name} {key}: {row['images_per_s']:.0f} img/s, {row['ratio']}x the baseline", flush=True)
    return {"variants": rows, "loadavg_1min_per_round": loads}


def _break_even(compile_s: float, base: float, compiled: float) -> int | None:
    """Training images after which a compile of ``compile_s`` seconds has paid off (None: never)."""
    saved_per_image = 1 / base - 1 / compiled
    return round(compile_s / saved_per_image) if saved_per_image > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (median taken)")
    parser.add_argument("--images-per-round", type=int, default=512, help="training images per variant and round")
    parser.add_argument("--images", type=int, default=4096, help="CIFAR-10 training images used (a fixed subset)")
    parser.add_argument("--models", nargs="+", default=["resnet20"], choices=("resnet20", "vgg16_bn"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--data-root", default=None, help="data folder (default: $PRUNEKIT_DATA or the cache)")
    parser.add_argument("--out", default=str(RESULTS / "cpu_training_speed.json"))
    args = parser.parse_args()
    try:
        data = load_arrays("cifar10", "train", args.data_root, download=False).subset(args.images, seed=0)
    except DataNotFoundError as exc:
        print(f"skipped: this benchmark needs CIFAR-10 ({exc})", file=sys.stderr)
        sys.exit(0)
    variants = ["baseline", *[v for v in args.variants if v != "baseline"]]
    load_before = os.getloadavg()
    results = {name: measure(name, data, variants, args.rounds, args.images_per_round) for name in args.models}
    load_after = os.getloadavg()
    best = {name: max(r["variants"].items(), key=lambda kv: kv[1]["images_per_s"])[0] for name, r in results.items()}
    write_result({"benchmark": "cpu_training_speed", "device": "cpu", "images": len(data), "rounds": args.rounds,
                  "images_per_round": args.images_per_round, "interop_threads": torch.get_num_interop_threads(),
                  "loadavg_before": [round(v, 2) for v in load_before],
                  "loadavg_after": [round(v, 2) for v in load_after], "target_ratio": TARGET,
                  "best": {n: {"variant": b, "ratio": results[n]["variants"][b]["ratio"]} for n, b in best.items()},
                  "results": results}, args.out)


if __name__ == "__main__":
    main()
