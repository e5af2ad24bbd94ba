"""The GPU check's records (benchmarks/gpu.sh): ``env`` (the machine), ``junit`` (every CUDA test ran and passed)
and ``summary`` (train.json and summary.json from the steps' files, and the one-screen summary).

    python benchmarks/gpu_report.py env OUT/env.json --dry 0
    python benchmarks/gpu_report.py junit OUT/cuda-tests.xml        # exit 1 when a test was skipped or failed
    python benchmarks/gpu_report.py summary OUT --dry 0 --device cuda --total-seconds 512.3   # exit 1: a step failed
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from common import environment

TARGET_ACCURACY = 91.0  # % on the CIFAR-10 copy's 10,000 test images (the GPU check's target)
BUDGET_SECONDS = 540  # the whole check, on one GPU
PROMOTED = {"model.safetensors": "resnet20_cifar10.safetensors",
            "epoch001.safetensors": "resnet20_cifar10_epoch001.safetensors",
            "metrics.jsonl": "resnet20_cifar10_metrics.jsonl"}  # run file -> the bundled default's file in assets/


def _command(*cmd: str) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def env(out: Path, dry: bool) -> dict:
    """The machine: ``nvidia_smi`` (``nvidia-smi -L``, or "none"), torch's CUDA and cuDNN, the git commit."""
    import torch

    cuda = torch.cuda.is_available()
    record = {"dry": dry, "nvidia_smi": _command("nvidia-smi", "-L") or "none", **environment(),
              "cuda": {"available": cuda, "version": torch.version.cuda, "devices": torch.cuda.device_count(),
                       "cudnn": torch.backends.cudnn.version() if cuda else None,
                       "capability": list(torch.cuda.get_device_capability(0)) if cuda else None},
              "commit": _command("git", "rev-parse", "HEAD")}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return record


def junit_counts(path: Path) -> dict | None:
    """{tests, passed, skipped, failed} of a pytest junit XML (None when it is missing or unreadable)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "skipped", "failures", "errors")}
    failed = total["failures"] + total["errors"]
    return {"tests": total["tests"], "passed": total["tests"] - total["skipped"] - failed,
            "skipped": total["skipped"], "failed": failed}


def check_junit(path: Path) -> int:
    """0 when the file records at least one test and every one passed (a skip is a failure here), else 1."""
    counts = junit_counts(path)
    print(f"{path}: {counts}")
    if counts is None or counts["tests"] == 0 or counts["passed"] != counts["tests"]:
        print("the CUDA tests must all run and pass on a GPU machine (none skipped)", file=sys.stderr)
        return 1
    return 0


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(out: Path) -> dict:
    steps = {}
    for line in (out / "steps.tsv").read_text().splitlines():
        name, ok, seconds, rc = line.split("\t")
        steps[name] = {"ok": ok == "true", "seconds": float(seconds), "exit": int(rc)}
    return steps


def train_record(out: Path, steps: dict) -> dict:
    """train.json: the run's recipe (its checkpoint header), accuracy, epochs; ``wall_seconds``: the whole step
    (the process's start and the data's loading included), ``epochs_seconds``: the epochs' training alone."""
    metrics = out / "train" / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    step = steps.get("train", {})
    record = {"ok": step.get("ok", False), "wall_seconds": step.get("seconds"), "epochs": len(rows),
              "accuracy": rows[-1]["test_accuracy"] if rows else None, "target_accuracy": TARGET_ACCURACY,
              "epochs_seconds": round(sum(r["seconds"] for r in rows), 1) if rows else None,
              "epoch_seconds_median": round(statistics.median(r["seconds"] for r in rows), 3) if rows else None,
              "images_per_s_median": round(statistics.median(r["images_per_s"] for r in rows)) if rows else None}
    record["target_met"] = record["accuracy"] is not None and record["accuracy"] >= TARGET_ACCURACY
    model = out / "train" / "model.safetensors"
    if model.is_file():
        from prunekit.models.checkpoints import read_checkpoint

        meta = read_checkpoint(model)[1].get("meta", {})
        record.update(recipe=meta.get("train_config"), command=meta.get("command"), device=meta.get("device"),
                      data=meta.get("data"))
    (out / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _throughput(out: Path, device: str) -> dict | None:
    result = _read_json(out / "finetune_throughput.json")
    rows = (result or {}).get("results", {}).get(device)
    if not rows:
        return None
    return {name: {k: row[k] for k in ("ratio", "device_images_per_s", "dataloader_images_per_s", "meets_target")
                   if k in row} for name, row in rows.items()}


def _latency(out: Path) -> dict | None:
    result = _read_json(out / "latency_speedup.json")
    if not result:
        return None
    return {name: {"mac_reduction_factor": row["mac_reduction_factor"], "meets_target": row["meets_target"],
                   **{f"batch{b}_{k}": row[f"batch{b}"][k] for b in (1, 64)
                      for k in ("original_ms", "pruned_ms", "speedup", "speedup_over_mac_reduction")}}
            for name, row in result["results"].items()}


def summary(out: Path, dry: bool, device: str, total: float) -> dict:
    """summary.json (and train.json) from the steps' files."""
    steps = _steps(out)
    train = train_record(out, steps)
    throughput = _throughput(out, device)
    record = {"device": device, "gpu": ((_read_json(out / "env.json") or {}).get("hardware") or {}).get("gpu"),
              "dry": dry, "out": str(out), "steps": steps,
              "all_ok": all(v["ok"] for v in steps.values()), "cuda_tests": junit_counts(out / "cuda-tests.xml"),
              "accuracy": train["accuracy"], "epochs": train["epochs"], "train_seconds": train["wall_seconds"],
              "target_accuracy": TARGET_ACCURACY, "target_91_met": train["target_met"],
              "throughput_ratio": {k: v["ratio"] for k, v in throughput.items()} if throughput else None,
              "throughput": throughput, "latency": _latency(out), "total_seconds": total,
              "budget_seconds": BUDGET_SECONDS, "within_budget": total <= BUDGET_SECONDS}
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _line(name: str, s: dict, what: str) -> str:
    state = "ok" if s["ok"] else "FAILED"
    what = what if s["ok"] else f"exit {s['exit']}; see its log. {what}"
    return f"  {name:<11} {state:<6} {s['seconds']:>7.1f} s  {what}"


def _notes(r: dict) -> dict:
    tests = r["cuda_tests"]
    notes = {"cuda_tests": f"{tests['passed']} passed, {tests['skipped']} skipped, {tests['failed']} failed"
             if tests else "no junit file"}
    if r["accuracy"] is not None:
        met = "met" if r["target_91_met"] else "MISSED"
        notes["train"] = (f"test accuracy {r['accuracy']:.2f}% after {r['epochs']} epochs "
                          f"(target {r['target_accuracy']:g}%: {met})")
    if r["throughput"]:
        notes["throughput"] = "; ".join(f"{k} {v['ratio']}x the DataLoader" for k, v in r["throughput"].items())
    if r["latency"]:
        notes["latency"] = "; ".join(f"{k} batch 64 {v['batch64_speedup']}x for {v['mac_reduction_factor']}x "
                                     "fewer MACs" for k, v in r["latency"].items())
    return notes


def print_summary(r: dict) -> None:
    mode = f"DRY run on {r['device']}" if r["dry"] else f"{r['device']} ({r['gpu']})"
    budget = "" if r["dry"] or r["within_budget"] else f": OVER the {r['budget_seconds']} s budget"
    print(f"\nGPU check, {mode}: {r['out']}\n  total {r['total_seconds']:.0f} s{budget}")
    notes = _notes(r)
    for name, s in r["steps"].items():
        print(_line(name, s, notes.get(name, "")))
    if not r["dry"] and r["steps"].get("copy_model", {}).get("ok"):
        run = Path(r["out"]) / "train"
        cmd = " && ".join(f"cp {run / src} assets/{dst}" for src, dst in PROMOTED.items())
        verdict = "meets" if r["target_91_met"] else "does NOT meet"
        print(f"\nThe trained model ({verdict} the {r['target_accuracy']:g}% target) is in "
              f"assets/resnet20_cifar10_gpu.safetensors. To make it the bundled default (assets/README.md):\n  {cmd}")
    print("\nall steps ok" if r["all_ok"] else "\nFAILED: " + ", ".join(k for k, v in r["steps"].items()
                                                                        if not v["ok"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    e = sub.add_parser("env")
    e.add_argument("out", type=Path)
    e.add_argument("--dry", type=int, default=0)
    j = sub.add_parser("junit")
    j.add_argument("xml", type=Path)
    s = sub.add_parser("summary")
    s.add_argument("out", type=Path)
    s.add_argument("--dry", type=int, default=0)
    s.add_argument("--device", required=True)
    s.add_argument("--total-seconds", type=float, required=True)
    args = parser.parse_args()
    if args.what == "env":
        env(args.out, bool(args.dry))
        return 0
    if args.what == "junit":
        return check_junit(args.xml)
    record = summary(args.out, bool(args.dry), args.device, args.total_seconds)
    print_summary(record)
    return 0 if record["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
