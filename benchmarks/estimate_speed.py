"""Benchmark: time of one instant estimate of a plan (prunekit.pruning.structure.estimate), which the dashboard runs on every
slider move. Target: at most 50 ms for ResNet-56 and torchvision ResNet-50.

For each model: the one-off trace (:func:`prunekit.structure.structure`), then ``--repeat`` estimates of random plans
(a fresh ratio for every group each time), median and worst time.

    python benchmarks/estimate_speed.py [--out benchmarks/results/estimate_speed.json]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import RESULTS, write_result

from prunekit.models.zoo import build_model, model_info
from prunekit.pruning.structure import estimate, structure

TARGET_MS = 50.0
MODELS = ("resnet56", "resnet50")


def run(repeat: int) -> dict:
    rows = {}
    g = torch.Generator().manual_seed(0)
    for name in MODELS:
        model = build_model(name).eval()
        size = model_info(name).input_size
        t0 = time.perf_counter()
        struct = structure(model, size)
        trace_s = time.perf_counter() - t0
        plans = [{grp.root: round(float(torch.rand(1, generator=g)) * 0.9, 3) for grp in struct.groups}
                 for _ in range(repeat)]
        times = []
        for ratios in plans:
            t0 = time.perf_counter()
            estimate(struct, ratios)
            times.append(1000 * (time.perf_counter() - t0))
        rows[name] = {"input_size": list(size), "groups": len(struct.groups), "layers": len(struct.layers),
                      "trace_s": round(trace_s, 3), "median_ms": round(statistics.median(times), 3),
                      "max_ms": round(max(times), 3), "meets_target": statistics.median(times) <= TARGET_MS}
        print(f"{name}: {rows[name]['median_ms']} ms per estimate (max {rows[name]['max_ms']}), trace "
              f"{rows[name]['trace_s']} s, {len(struct.groups)} groups (target <= {TARGET_MS} ms)")
    return {
        "benchmark": "estimate_speed",
        "target_ms": TARGET_MS,
        "repeat": repeat,
        "results": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS / "estimate_speed.json"))
    args = parser.parse_args()
    write_result(run(args.repeat), args.out)


if __name__ == "__main__":
    main()
