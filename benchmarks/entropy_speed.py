"""Benchmark: SFM entropy (gap estimator) over all conv layers, as a ratio to a plain forward pass.

For ResNet-56 and VGG-16-BN, over 640 probe images (5 x 128; the CIFAR-10 copy when it is found, else random
images, which time the same), in one run: a plain forward pass, prunekit's streamed SFM entropy, and a naive
reference (every feature map kept, per-channel numpy histograms). Each is timed ``--repeat`` times, round-robin,
and the median taken. Target (issue 3): streamed entropy at most 1.3x the forward pass.

    python benchmarks/entropy_speed.py [--out benchmarks/results/entropy_speed.json]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from common import RESULTS, write_result

from prunekit.criteria import get_criterion
from prunekit.data import ArraySet, DataNotFoundError, load_arrays, normalization
from prunekit.hooks import capture
from prunekit.layers import conv_layers
from prunekit.metrics import best_device
from prunekit.models import build_model
from prunekit.probe import Probe

TARGET = 1.3


def _probe_data(n: int) -> tuple[ArraySet, str]:
    try:
        return load_arrays("cifar10", "train", download=False), "cifar10 (JPEG copy)"
    except DataNotFoundError:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        mean, std = normalization("cifar10")
        return ArraySet("random", images, torch.zeros(n, dtype=torch.long), ["0"], mean, std), "random images"


def _interleaved_medians(fns: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (a, b, c, a, b, c, ...) so that a change in the
    machine's load during the run affects every one of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _naive_entropy(model, layers, probe, device, bins=32):
    """Keep every layer's per-image spatial means, then one numpy histogram per channel."""
    kept = {layer.name: [] for layer in layers}

    def keep(layer, fmap):
        kept[layer.name].append(fmap.mean((2, 3)).cpu().numpy())

    with torch.no_grad(), capture(model, layers, keep):
        for batch in probe.batches(device):
            model(batch.x)
    result = {}
    for name, parts in kept.items():
        v = np.concatenate(parts)  # (N, C)
        h = []
        for c in range(v.shape[1]):
            counts, _ = np.histogram(v[:, c], bins=bins)
            p = counts[counts > 0] / counts.sum()
            h.append(float(-(p * np.log(p)).sum()))
        result[name] = h
    return result


def run(n: int, repeat: int) -> dict:
    device = best_device()
    data, source = _probe_data(n)
    probe = Probe.from_arrays(data, n, batch_size=128, seed=0)
    crit = get_criterion("sfm_entropy", estimator="gap")
    rows = {}
    for name in ("resnet56", "vgg16_bn"):
        model = build_model(name).to(device).eval()
        layers = conv_layers(model)

        def forward(model=model):
            with torch.no_grad():
                for batch in probe.batches(device):
                    model(batch.x)

        forward()  # warm-up
        t = _interleaved_medians({
            "forward": forward,
            "streamed": lambda m=model: crit.score(m, probe=probe),
            "naive": lambda m=model, ls=layers: _naive_entropy(m, ls, probe, device),
        }, repeat)
        t_forward, t_streamed, t_naive = t["forward"], t["streamed"], t["naive"]
        rows[name] = {
            "layers": len(layers),
            "forward_s": round(t_forward, 4),
            "streamed_s": round(t_streamed, 4),
            "naive_s": round(t_naive, 4),
            "streamed_over_forward": round(t_streamed / t_forward, 3),
            "naive_over_forward": round(t_naive / t_forward, 3),
            "meets_target": t_streamed / t_forward <= TARGET,
        }
        print(f"{name}: streamed {rows[name]['streamed_over_forward']}x forward, naive "
              f"{rows[name]['naive_over_forward']}x (target <= {TARGET}x)")
    return {
        "benchmark": "entropy_speed",
        "target_streamed_over_forward": TARGET,
        "probe_images": n,
        "probe_source": source,
        "device": str(device),
        "repeat": repeat,
        "results": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=640)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "entropy_speed.json"))
    args = parser.parse_args()
    write_result(run(args.n, args.repeat), args.out)


if __name__ == "__main__":
    main()
