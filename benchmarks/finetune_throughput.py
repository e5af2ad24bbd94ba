"""Benchmark: fine-tuning throughput of prunekit's device-resident pipeline against a plain torchvision one.

Images per second of training steps (forward, backward, SGD step; random crop with 4 reflect-padded pixels and
horizontal flip) on CIFAR-10 training images, batch 128, for ResNet-20 and VGG-16-BN:

- ``device``: :class:`prunekit.data.DeviceLoader`, the images as one uint8 tensor on the device, crops and flips
  as batched tensor ops there;
- ``dataloader``: the usual recipe, a Dataset of PIL images with ``transforms.RandomCrop(32, padding=4,
  padding_mode="reflect")``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` in a
  ``torch.utils.data.DataLoader`` (``--workers`` processes, ``pin_memory`` on CUDA, batches copied to the device).

Both feed the same model and the trainer's own step (:func:`prunekit.training.train.train_step`: channels_last, bf16
autocast on CUDA), timed in alternating rounds (device, dataloader, device, ...) after one untimed warm-up step
each; each pipeline keeps one iterator over all rounds, so the DataLoader's worker start-up is not counted (its
steady state is). The figure is the median over rounds. CPU always, CUDA too when available. Target (CUDA): the
device pipeline at least 2x the DataLoader's throughput; on the CPU, where the model's arithmetic dominates and the
DataLoader's workers share the cores with it, the ratio is only reported.

    python benchmarks/finetune_throughput.py [--steps N] [--rounds 3] [--images 4096] [--workers 2]
        [--device all|cpu|cuda] [--models resnet20 vgg16_bn]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

import torch
from common import RESULTS, write_result

from prunekit.data import ArraySet, DataNotFoundError, DeviceLoader, load_arrays
from prunekit.defaults import TRAIN_BATCH
from prunekit.runs.finetune import finetune_config
from prunekit.models.zoo import build_model
from prunekit.training.train import MEMORY_FORMAT, _optimizer, train_step

TARGET_CUDA = 2.0
BATCH = TRAIN_BATCH
MODELS = ("resnet20", "vgg16_bn")
CPU_STEPS = {"resnet20": 4, "vgg16_bn": 1}  # timed steps per round on the CPU: a full run in ~5 min on 2 cores
CUDA_STEPS = 50


class PILImages(torch.utils.data.Dataset):
    """An :class:`ArraySet`'s uint8 (N, 3, 32, 32) images as PIL images through ``transform`` -> (x, label)."""

    def __init__(self, data: ArraySet, transform):
        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3), as PIL wants
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def torchvision_loader(data: ArraySet, workers: int, cuda: bool) -> torch.utils.data.DataLoader:
    """The plain pipeline: PIL images, torchvision transforms, a shuffling DataLoader of batch :data:`BATCH`."""
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(data.mean, data.std)])
    return torch.utils.data.DataLoader(PILImages(data, tf), batch_size=BATCH, shuffle=True, drop_last=True,
                                       num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)


def _forever(loader):
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader


def _trainer(model: torch.nn.Module, device: torch.device):
    """-> step(x, y): one training step of ``model`` on the batch x (B, 3, 32, 32) float, y (B,) int64 (moved to
    ``device`` when elsewhere): :func:`prunekit.training.train.train_step` with the fine-tuning recipe (no teacher), as
    :func:`prunekit.training.train.fit` takes it."""
    model.to(device, memory_format=MEMORY_FORMAT).train()
    config = finetune_config(distill_alpha=0.0)
    opt, sched = _optimizer(model, config, 1000, BATCH)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        train_step(model, None, opt, sched, x, y, config, fmt=MEMORY_FORMAT, bf16=device.type == "cuda")

    return step


def _timed(batches, step, steps: int, device: torch.device) -> float:
    """Images per second of ``steps`` training steps on the next ``steps`` batches."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for x, y in itertools.islice(batches, steps):
        step(x, y)
    sync()
    return steps * BATCH / (time.perf_counter() - t0)


def measure(data: ArraySet, device: torch.device, steps: int, rounds: int, workers: int,
            models: tuple[str, ...] = MODELS) -> dict:
    """Both pipelines on every model of ``models`` on ``device`` (``steps`` timed steps per round, 0: the
    defaults :data:`CPU_STEPS` / :data:`CUDA_STEPS`); the result's rows."""
    out = {}
    for name in models:
        n_steps = steps or (CUDA_STEPS if device.type == "cuda" else CPU_STEPS[name])
        torch.manual_seed(0)
        step = _trainer(build_model(name, num_classes=len(data.classes)), device)
        pipelines = {"device": _forever(DeviceLoader(data, BATCH, train=True, device=device, seed=0)),
                     "dataloader": _forever(torchvision_loader(data, workers, device.type == "cuda"))}
        for batches in pipelines.values():  # warm-up: first batch (worker start-up), kernels, allocator
            _timed(batches, step, 1, device)
        speeds = {k: [] for k in pipelines}
        for _ in range(rounds):  # alternating, so a change of load hits both alike
            for key, batches in pipelines.items():
                speeds[key].append(round(_timed(batches, step, n_steps, device), 1))
        dev, dl = statistics.median(speeds["device"]), statistics.median(speeds["dataloader"])
        row = {"steps_per_round": n_steps, "device_images_per_s": dev, "dataloader_images_per_s": dl,
               "ratio": round(dev / dl, 3), "rounds_images_per_s": speeds}
        if device.type == "cuda":
            row["meets_target"] = row["ratio"] >= TARGET_CUDA
        out[name] = row
        print(f"{device.type} {name}: device pipeline {dev:.0f} img/s, DataLoader ({workers} workers) {dl:.0f} "
              f"img/s, ratio {row['ratio']}x", flush=True)
        del pipelines  # stops the DataLoader's workers
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps per round (default: on CPU 4 for ResNet-20 and 1 for VGG-16-BN; 50 on CUDA)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per pipeline (median taken)")
    parser.add_argument("--images", type=int, default=4096, help="CIFAR-10 training images used (a fixed subset)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--device", default="all", choices=("all", "cpu", "cuda"),
                        help="all: the CPU, and CUDA too when available (default); cpu or cuda: that one only")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="models to time")
    parser.add_argument("--data-root", default=None, help="data folder (default: $PRUNEKIT_DATA or the cache)")
    parser.add_argument("--out", default=str(RESULTS / "finetune_throughput.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = load_arrays("cifar10", "train", args.data_root, download=False).subset(args.images, seed=0)
    except DataNotFoundError as exc:
        print(f"skipped: this benchmark needs CIFAR-10 ({exc})", file=sys.stderr)
        sys.exit(0)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False on this machine")
    devices = [torch.device(args.device)] if args.device != "all" else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    results = {}
    for device in devices:
        results[device.type] = measure(data, device, args.steps, args.rounds, args.workers, tuple(args.models))
    write_result({"benchmark": "finetune_throughput", "batch_size": BATCH, "images": len(data),
                  "rounds": args.rounds, "dataloader_workers": args.workers, "target_ratio_cuda": TARGET_CUDA,
                  "results": results}, args.out)


if __name__ == "__main__":
    main()
