"""Benchmark: the latency model's predictions (prunekit.pruning.latency, measured by prunekit.runs.latency_model)
against the measured latency of random plans of the bundled ResNet-20, in PyTorch eager and ONNX Runtime at batch 1.

For each runtime the latency model is measured afresh (not read from the cache; its time and measurements are
recorded), then --plans random plans (seed 0: each group pruned with probability 0.8 at a ratio drawn from [0, 0.9])
are pruned for real (Torch-Pruning) and timed: eager as the least of --rounds medians of --repeat forwards, ONNX
Runtime the exported model (checked equal to the module) the least of --rounds medians of --repeat runs. The relative
error is |predicted - measured| / measured. Target: median <= 10%. The machine and its load before and after go
with the result.

    python benchmarks/latency_model.py [--plans 20] [--repeat 50] [--rounds 3] [--round-to 1] [--threads 0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from common import RESULTS, load_average, write_result

from prunekit.criteria.scores import score, to_tensors
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint
from prunekit.models.metrics import latency_ms
from prunekit.pruning.prune import prune_model
from prunekit.pruning.ratios import max_ratio
from prunekit.pruning.structure import estimate, structure
from prunekit.runs.latency_model import latency_model
from prunekit.runs.runtime_onnx import checked_session, ort_latency_ms

SIZE = (3, 32, 32)
TARGET = 0.10
RUNTIMES = ("eager", "onnxruntime")


def random_plans(struct, n: int, seed: int = 0) -> list[dict[str, float]]:
    """``n`` plans: each group pruned with probability 0.8, at a ratio drawn uniformly from [0, 0.9] (capped)."""
    rng = np.random.default_rng(seed)
    plans = []
    for _ in range(n):
        plans.append({g.root: min(float(rng.uniform(0, 0.9)), max_ratio(g.channels)) for g in struct.groups
                      if rng.random() < 0.8})
    return plans


def measured_ms(model, runtime: str, repeat: int, rounds: int) -> float:
    """The least of ``rounds`` medians of ``repeat`` batch-1 runs of ``model`` in ``runtime``."""
    if runtime == "eager":
        return min(latency_ms(model, SIZE, 1, repeat=repeat) for _ in range(rounds))
    session, record = checked_session(model, SIZE)
    if session is None:
        raise RuntimeError(record["error"])
    return min(ort_latency_ms(session, SIZE, 1, repeat=repeat) for _ in range(rounds))


def one_runtime(model, struct, scores, plans, runtime: str, args) -> dict:
    t0 = time.perf_counter()
    lm = latency_model(model, SIZE, runtime=runtime, batch=1, round_to=args.round_to, struct=struct, cache=False)
    build = time.perf_counter() - t0
    rows = []
    for i, ratios in enumerate(plans):
        pruned, _ = prune_model(model, ratios, scores, SIZE, round_to=args.round_to)
        got, want = measured_ms(pruned, runtime, args.repeat, args.rounds), lm.predict(struct, ratios)
        rows.append({"plan": i, "flops_reduction": round(estimate(struct, ratios, args.round_to).macs_reduction, 4),
                     "predicted_ms": round(want, 4), "measured_ms": round(got, 4),
                     "relative_error": round(abs(want - got) / got, 4)})
        print(f"{runtime} plan {i}: predicted {want:.3f} ms, measured {got:.3f} ms", flush=True)
    errors = [r["relative_error"] for r in rows]
    unpruned = measured_ms(model, runtime, args.repeat, args.rounds)
    return {"model_seconds": round(build, 1), "measurements": lm.meta["measurements"],
            "before_ms_model": round(lm.before_ms, 4), "before_ms_measured_now": round(unpruned, 4),
            "median_relative_error": round(statistics.median(errors), 4), "worst_relative_error": max(errors),
            "mean_relative_error": round(statistics.fmean(errors), 4), "meets_target": statistics.median(errors)
            <= TARGET, "plans": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plans", type=int, default=20)
    p.add_argument("--repeat", type=int, default=50, help="timed runs per median")
    p.add_argument("--rounds", type=int, default=3, help="medians per measured plan (the least is kept)")
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    p.add_argument("--threads", type=int, default=0, help="torch's (and ONNX Runtime's) threads; 0: torch's choice "
                   "(1 is steadier when other processes hold the cores)")
    p.add_argument("--out", default=str(RESULTS / "latency_model.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    model = model.eval()
    struct = structure(model, SIZE)
    scores = to_tensors(score(model, "l1"))
    plans = random_plans(struct, args.plans)
    results = {rt: one_runtime(model, struct, scores, plans, rt, args) for rt in args.runtimes}
    write_result({"what": "latency model predictions against measured latency, ResNet-20, batch 1, random plans",
                  "target_median_relative_error": TARGET, "plans": args.plans, "repeat": args.repeat,
                  "rounds": args.rounds, "round_to": args.round_to, "threads": torch.get_num_threads(),
                  "results": results, "load_average": load_average(load0)}, args.out)


if __name__ == "__main__":
    main()
