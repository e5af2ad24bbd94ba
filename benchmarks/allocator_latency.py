"""Benchmark: eager latency that does not depend on what the process ran before (glibc malloc's thresholds).

ResNet-56 and its uniform-0.5 pruning (widths 8/16/32, about 4x fewer MACs) timed at batch 64 in PyTorch eager on
the CPU, each time in a new process, either straight away (``fresh``) or after one VGG-16-BN forward at batch 64
(``after_vgg``), under glibc's default dynamic mmap threshold (``default``) or under the fixed thresholds
:func:`prunekit.models.metrics.latency_ms` sets first (``fixed``: :func:`prunekit.models.metrics.steady_allocator`). The four
processes run round-robin, --rounds times, and each times the two models interleaved, so load hits all alike.
Target: with the fix, the speedup in a fresh process and after VGG agree (``fixed.agreement`` near 1).

    python benchmarks/allocator_latency.py [--rounds 3] [--repeat 10] [--threads 0]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch
from common import RESULTS, cpu_name, load_average, write_result

from prunekit.defaults import LATENCY_REPEAT

ARMS, HISTORIES = ("default", "fixed"), ("fresh", "after_vgg")
BATCH, SIZE = 64, (3, 32, 32)


def child(arm: str, history: str, repeat: int, inner: int) -> dict:
    """In this (new) process: prune ResNet-56, maybe run VGG-16 once, time both models interleaved."""
    from prunekit.models import metrics
    from prunekit.criteria import get_criterion
    from prunekit.models.zoo import build_model
    from prunekit.pruning.presets import get_preset
    from prunekit.pruning.prune import prune_model
    from prunekit.pruning.structure import structure

    if arm == "default":  # the control arm: steady_allocator counts as done, glibc keeps its dynamic threshold
        metrics._allocator = "glibc default (this benchmark's control arm)"
    torch.manual_seed(0)
    model = build_model("resnet56").eval()
    plan = get_preset("uniform").make(structure(model, SIZE), "resnet56", value=0.5)
    pruned, _ = prune_model(model, plan.ratios, get_criterion("l1").score(model), SIZE)
    if history == "after_vgg":
        with torch.no_grad():
            build_model("vgg16_bn").eval()(torch.randn(BATCH, *SIZE))
    times: dict = {"original": [], "pruned": []}
    for _ in range(inner):
        for which, m in (("original", model), ("pruned", pruned.eval())):
            times[which].append(metrics.latency_ms(m, SIZE, BATCH, repeat=repeat))
    t0, t1 = statistics.median(times["original"]), statistics.median(times["pruned"])
    return {"original_ms": round(t0, 3), "pruned_ms": round(t1, 3), "speedup": round(t0 / t1, 3),
            "allocator": metrics.steady_allocator()}


def run(rounds: int, repeat: int, inner: int) -> dict:
    load_before = os.getloadavg()
    seen: dict = {(a, h): [] for a in ARMS for h in HISTORIES}
    for _ in range(rounds):
        for arm in ARMS:
            for history in HISTORIES:
                out = subprocess.run([sys.executable, __file__, "--child", arm, history, "--repeat", str(repeat),
                                      "--inner", str(inner), "--threads", str(torch.get_num_threads())],
                                     capture_output=True, text=True, check=True)
                seen[arm, history].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(arm, history, seen[arm, history][-1], flush=True)
    results = {}
    for arm in ARMS:
        row = {h: {"speedup": statistics.median(r["speedup"] for r in seen[arm, h]),
                   "speedups": [r["speedup"] for r in seen[arm, h]],
                   "original_ms": statistics.median(r["original_ms"] for r in seen[arm, h]),
                   "pruned_ms": statistics.median(r["pruned_ms"] for r in seen[arm, h]),
                   "allocator": seen[arm, h][0]["allocator"]} for h in HISTORIES}
        row["agreement"] = round(row["after_vgg"]["speedup"] / row["fresh"]["speedup"], 3)  # 1: no dependence
        results[arm] = row
    return {"benchmark": "allocator_latency", "model": "resnet56, uniform ratio 0.5 (l1)", "batch": BATCH,
            "rounds": rounds, "repeat": repeat, "inner_rounds": inner,
            "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads()},
            "load_average": load_average(load_before), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds of the four processes")
    parser.add_argument("--repeat", type=int, default=LATENCY_REPEAT, help="timed forwards per latency measurement")
    parser.add_argument("--inner", type=int, default=3, help="interleaved measurements per model and process")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--child", nargs=2, metavar=("ARM", "HISTORY"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "allocator_latency.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(*args.child, args.repeat, args.inner)))
        return
    write_result(run(args.rounds, args.repeat, args.inner), args.out)


if __name__ == "__main__":
    main()
