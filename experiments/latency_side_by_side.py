"""Time several models side by side in one process, so that they are compared under the same conditions: each a
checkpoint (the unpruned one, pruned runs' model.safetensors), each timed in ONNX Runtime (prunekit's session, its
outputs checked against the module's) in ROUNDS rounds, the models in a new random order every round, each round a
median of REPEAT runs; a model's latency is the median of its rounds. A load that comes and goes then moves every
model's figure alike instead of one model's; the spread of the rounds is reported beside each median.

    python experiments/latency_side_by_side.py --batch 1 --out OUT.json NAME=CHECKPOINT [NAME=CHECKPOINT ...]

Writes {"batch", "rounds", "repeat", "threads", "load_average", "models": {NAME: {"ms", "q25_ms", "q75_ms",
"checkpoint"}}}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import load_average  # noqa: E402
from prunekit.models.checkpoints import load_checkpoint  # noqa: E402
from prunekit.runs.runtime_onnx import checked_session, ort_latency_ms  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=CHECKPOINT")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--input-size", type=int, nargs=3, default=(3, 32, 32))
    parser.add_argument("--seed", type=int, default=0, help="the rounds' order")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    before = os.getloadavg()
    sessions = {}
    for spec in args.models:
        name, path = spec.split("=", 1)
        model, _ = load_checkpoint(path)
        session, record = checked_session(model, tuple(args.input_size))
        if session is None:
            sys.exit(f"{path}: {record['error']}")
        sessions[name] = (session, path)
    order, rng = list(sessions), random.Random(args.seed)
    times: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            times[name].append(ort_latency_ms(sessions[name][0], tuple(args.input_size), args.batch,
                                              repeat=args.repeat))
    models = {}
    for name, t in times.items():
        q = statistics.quantiles(t, n=4)
        models[name] = {"ms": round(statistics.median(t), 4), "q25_ms": round(q[0], 4), "q75_ms": round(q[2], 4),
                        "checkpoint": sessions[name][1]}
    result = {"batch": args.batch, "rounds": args.rounds, "repeat": args.repeat, "threads": torch.get_num_threads(),
              "load_average": load_average(before), "models": models}
    args.out.write_text(json.dumps(result, indent=1))
    for name, m in models.items():
        print(f"{name}\t{m['ms']} ms (rounds' quartiles {m['q25_ms']}-{m['q75_ms']})")


if __name__ == "__main__":
    main()
