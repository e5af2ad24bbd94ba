"""Benchmark: which exploration the search preset should default to (prunekit.pruning.search's ``method``): each
method searches the bundled ResNet-20's allocation at -50% FLOPs (filters by l1) with the same candidate budget and
seeds; each best plan is then also judged on PREDICTION.n test images (recalibrated, as the Plan page predicts), which
the search never saw. Recorded per method and seed: the best judged accuracy (on the search's training images), its
test accuracy, the starts' best, the candidate at which the best was found, and the seconds.

    python benchmarks/search_methods.py [--candidates 30] [--seeds 0 1] [--target 0.5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from common import RESULTS, load_average, write_result

from prunekit.criteria.scores import score, to_tensors
from prunekit.data import held_out_set, load_arrays
from prunekit.defaults import PREDICTION, SEARCH
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint
from prunekit.pruning.predict import predict_accuracy
from prunekit.pruning.presets import plan

SIZE = (3, 32, 32)


def one(model, scores, train, test, method: str, seed: int, args) -> dict:
    t0 = time.perf_counter()
    made = plan(model, "resnet20", preset="search", target=args.target, scores=scores, criterion="l1", train=train,
                method=method, seed=seed, candidates=args.candidates, seconds=1e6)
    seconds = time.perf_counter() - t0
    found = made.preset["search"]
    rows = found["table"]["rows"]
    starts = [r[1] for r in rows if r[0] not in SEARCH.methods]
    test_acc = predict_accuracy(model, made.ratios, scores, SIZE, train=train, held_out=test)["accuracy"]
    print(f"{method} seed {seed}: best {found['accuracy']:.2f} (starts {max(starts):.2f}), test {test_acc:.2f}, "
          f"{seconds:.0f} s", flush=True)
    return {"method": method, "seed": seed, "best_judged": found["accuracy"], "best_starts": max(starts),
            "best_at": found["best"], "test_accuracy": test_acc, "judged": found["judged"],
            "seconds": round(seconds, 1)}


def starts_on_test(model, scores, train, test, target: float) -> dict[str, float]:
    """The presets' plans at ``target`` (the search's starts) judged on the same test images."""
    out = {}
    for name in ("uniform", "afie", "threshold"):
        made = plan(model, "resnet20", preset=name, target=target, scores=scores, criterion="l1")
        out[name] = predict_accuracy(model, made.ratios, scores, SIZE, train=train, held_out=test)["accuracy"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--out", default=str(RESULTS / "search_methods.json"))
    args = p.parse_args()
    load0 = os.getloadavg()
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    model = model.eval()
    scores = to_tensors(score(model, "l1"))
    train, test = load_arrays("cifar10", "train"), held_out_set("cifar10", PREDICTION.n)
    rows = [one(model, scores, train, test, m, s, args) for m in SEARCH.methods for s in args.seeds]
    summary = {m: {k: round(statistics.fmean(r[k] for r in rows if r["method"] == m), 3)
                   for k in ("best_judged", "test_accuracy", "best_at", "seconds")} for m in SEARCH.methods}
    write_result({"what": "search methods on ResNet-20 at -50% FLOPs (l1): best judged accuracy (training images) "
                          "and its test accuracy", "candidates": args.candidates, "seeds": args.seeds,
                  "target": args.target, "summary": summary, "runs": rows,
                  "starts_test_accuracy": starts_on_test(model, scores, train, test, args.target),
                  "load_average": load_average(load0)}, args.out)


if __name__ == "__main__":
    main()
