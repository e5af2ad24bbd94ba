"""Distillation from the unpruned model while fine-tuning, CPU scale: does it help at E1's budget?

The bundled ResNet-20 (85.58%) pruned by E1's uniform plans at -50% FLOPs (``out/plan_uniform_<criterion>.json``
with ``out/scores_final_<criterion>.csv``; l1, fpgm, random), once per setting into a runs root of its own (the
pruning is deterministic: every setting starts from the same pruned model, checked by the pruned weights' hash),
then fine-tuned with E1's budget (2 epochs x 5,000 training images, the seed-0 subset; the whole 10,000-image
test split after each epoch; lr 0.01 cosine, seed 0: the ``finetune`` defaults) without distillation (alpha 0) and
with the unpruned model as teacher (alpha 0.9 and 0.5, T 4). Everything goes through the command line.

Writes ``out/distillation.json`` after every fine-tuning (per criterion and setting: the test accuracy after each
epoch, the wall time, the run) and prints a markdown table. Re-runnable: a setting already in the JSON is skipped.

    nice -n 10 env OMP_NUM_THREADS=2 .venv/bin/python experiments/distillation.py [--settings 0 0.9 0.5]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = "assets/resnet20_cifar10.safetensors"  # relative to ROOT: the path the runs record for the teacher
RUNS = "experiments/runs_distill"
OUT = ROOT / "experiments" / "out" / "distillation.json"
CRITERIA = ("l1", "fpgm", "random")
BUDGET = {"epochs": 2, "subset": 5000, "test_subset": 10000, "lr": 0.01, "seed": 0}
TEMPERATURE = 4.0
MACHINE = "2-core CPU, shared"


def prunekit(*args: str) -> tuple[dict, float]:
    """``python -m prunekit ARGS`` from the repository root -> (its JSON result line, wall seconds)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "prunekit", *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"prunekit {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def prune(criterion: str, threads: str) -> dict:
    """A new run of the bundled model pruned by E1's uniform plan and scores of ``criterion`` -> prune's result."""
    out = "experiments/out"
    result, _ = prunekit("prune", "--checkpoint", CHECKPOINT, "--plan", f"{out}/plan_uniform_{criterion}.json",
                         "--scores", f"{out}/scores_final_{criterion}.csv", "--n", "10000", "--runs", RUNS,
                         "--no-latency", "--device", "cpu", "--threads", threads)
    return result


def finetune(run: str, alpha: float, threads: str) -> dict:
    """Fine-tune ``run`` with the budget, distilling with weight ``alpha`` (0: not) -> the row of the JSON."""
    b = BUDGET
    _, wall = prunekit("finetune", "--run", run, "--epochs", str(b["epochs"]), "--subset", str(b["subset"]),
                       "--test-subset", str(b["test_subset"]), "--lr", str(b["lr"]), "--seed", str(b["seed"]),
                       "--distill-alpha", str(alpha), "--distill-temperature", str(TEMPERATURE),
                       "--device", "cpu", "--threads", threads)
    m = json.loads((ROOT / run / "manifest.json").read_text())
    ft = m["finetune"]
    acc = m["accuracy"]
    return {"run": run, "alpha": alpha, "temperature": TEMPERATURE if alpha else None,
            "accuracy_before": acc["before"]["accuracy"], "accuracy_pruned": acc["pruned"]["accuracy"],
            "test_accuracy_per_epoch": [r["test_accuracy"] for r in ft["epochs"]], "accuracy": ft["accuracy"],
            "train_seconds": round(sum(r["seconds"] for r in ft["epochs"]), 1), "wall_s": round(wall, 1),
            "teacher": ft["teacher"]}


def pruned_weights(run: str) -> str:
    """The weights hash of ``run``'s pruned model (its file also holds the run's id, so the file's SHA-256 differs)."""
    from prunekit.models.checkpoints import load_checkpoint
    from prunekit.criteria.scores import weights_hash

    return weights_hash(load_checkpoint(ROOT / run / "model.safetensors")[0])


def table(rows: dict) -> str:
    """A markdown table: per criterion, the accuracy after fine-tuning per setting and each gain over alpha 0."""
    settings = sorted({r["alpha"] for r in rows.values()})
    head = ["criterion", "pruned"] + [f"alpha {a:g}" for a in settings] + [f"gain {a:g}" for a in settings if a]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in CRITERIA:
        got = {r["alpha"]: r for r in rows.values() if r["criterion"] == c}
        if not got:
            continue
        pruned = next(iter(got.values()))["accuracy_pruned"]
        cells = [c, f"{pruned:.2f}"] + [f"{got[a]['accuracy']:.2f}" if a in got else "-" for a in settings]
        base = got.get(0.0)
        cells += [f"{got[a]['accuracy'] - base['accuracy']:+.2f}" if a in got and base else "-"
                  for a in settings if a]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", type=float, nargs="+", default=[0.0, 0.9, 0.5], help="distill_alpha values")
    ap.add_argument("--threads", default=os.environ.get("OMP_NUM_THREADS", "2"))
    args = ap.parse_args()
    doc = json.loads(OUT.read_text()) if OUT.is_file() else {}
    rows = doc.get("rows", {})
    for alpha in args.settings:  # setting by setting: an early stop leaves whole settings
        for c in CRITERIA:
            key = f"{c}_alpha{alpha:g}"
            if key in rows:
                continue
            run = os.path.relpath(prune(c, args.threads)["run"], ROOT)
            rows[key] = {"criterion": c, **finetune(run, alpha, args.threads)}
            doc = {"what": __doc__.split("\n\n")[0], "machine": MACHINE, "threads": int(args.threads),
                   "checkpoint": CHECKPOINT, "budget": BUDGET, "temperature": TEMPERATURE, "rows": rows}
            OUT.write_text(json.dumps(doc, indent=2))
            print(key, rows[key]["test_accuracy_per_epoch"], f"{rows[key]['wall_s']} s", flush=True)
    for row in rows.values():  # every setting of a criterion fine-tuned the same pruned model
        row["pruned_weights"] = pruned_weights(row["run"])
    doc["same_pruned_model"] = {c: len({r["pruned_weights"] for r in rows.values() if r["criterion"] == c}) == 1
                                for c in CRITERIA}
    OUT.write_text(json.dumps(doc, indent=2))
    print(table(rows), "\nsame pruned model per criterion:", doc["same_pruned_model"])


if __name__ == "__main__":
    main()
