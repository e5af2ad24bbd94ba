"""Benchmark: the Plan page's live predicted accuracy, from the last change of a plan to its number, for the
bundled ResNet-20 (target: at most 5 s on the 2-core CPU).

What the page does after a change: hand the plan to its latest-wins background worker
(:class:`prunekit.runs.latest.LatestWins`), which prunes a copy, recalibrates its BatchNorm statistics on
RECALIBRATION.n training images and evaluates it on PREDICTION.n held-out images
(:func:`prunekit.pruning.predict.predict_accuracy`). Timed here: ``--plans`` random plans (a fresh ratio in [0, 0.8] for
every group), each from ``ask`` to the result, with the scores already in memory (as on the page, where they are
computed once per criterion); median and worst.

    python benchmarks/predicted_accuracy.py [--plans 12] [--out benchmarks/results/predicted_accuracy.json]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import RESULTS, write_result

from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint
from prunekit.data import held_out_set, load_arrays
from prunekit.defaults import PREDICTION, RECALIBRATION
from prunekit.runs.latest import LatestWins
from prunekit.pruning.predict import predict_accuracy
from prunekit.criteria.scores import score_model, to_tensors
from prunekit.pruning.structure import structure

TARGET_S = 5.0


def run(plans: int, criterion: str) -> dict:
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    model.eval()
    struct = structure(model, (3, 32, 32))
    scores = to_tensors(score_model(model, criterion))
    train, held_out = load_arrays("cifar10", "train"), held_out_set("cifar10", PREDICTION.n)
    g = torch.Generator().manual_seed(0)
    worker, times, accuracy = LatestWins(), [], []
    for i in range(plans + 1):
        ratios = {grp.root: round(float(torch.rand(1, generator=g)) * 0.8, 3) for grp in struct.groups}
        t0 = time.perf_counter()
        worker.ask(i, lambda r=ratios: predict_accuracy(model, r, scores, (3, 32, 32), train=train,
                                                        held_out=held_out))
        outcome = worker.wait(i, 600)
        if outcome is None or outcome.error is not None:
            raise RuntimeError(f"plan {i} gave no prediction: {outcome and outcome.error}")
        if i:  # the first one warms the caches up
            times.append(time.perf_counter() - t0)
            accuracy.append(outcome.value["accuracy"])
    return {"benchmark": "predicted_accuracy", "model": "resnet20 (bundled)", "criterion": criterion,
            "plans": plans, "recalibration_images": RECALIBRATION.n, "held_out_images": PREDICTION.n,
            "seconds_median": statistics.median(times), "seconds_max": max(times), "target_s": TARGET_S,
            "meets_target": max(times) <= TARGET_S, "accuracy_range": [min(accuracy), max(accuracy)],
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=12)
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--out", default=str(RESULTS / "predicted_accuracy.json"))
    args = parser.parse_args()
    result = run(args.plans, args.criterion)
    print(f"median {result['seconds_median']:.2f} s, worst {result['seconds_max']:.2f} s (target {TARGET_S} s)")
    write_result(result, args.out)


if __name__ == "__main__":
    main()
