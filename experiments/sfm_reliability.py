"""SFM's default estimator by measurement: how reproducible each estimator's ranking is, and what it costs.

On the bundled ResNet-20 and the CIFAR-10 train split, for each estimator of sfm_entropy (gap, pooled, spatial),
each map of the convs that feed a residual add (reads: pre_add, post_add) and each probe size n, the two
disjoint probes of prunekit.analysis.reliability.split_probes (n images drawn by seed 0, n more by seed 1 from the rest)
are scored and compared layer by layer: median and minimum of the per-layer Spearman, median overlap of the
bottom 30% (k = ceil(0.3 C)), over every conv and over the 9 residual convs alone (the only ones whose map
``reads`` changes). Time: seconds to score one probe (half the time of scoring both), on this machine.
Writes experiments/out/sfm_reliability.json and prints a markdown table.

    OMP_NUM_THREADS=1 python experiments/sfm_reliability.py [--data-root DIR] [--sizes 128 256 640 1280]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from prunekit import load_arrays, load_checkpoint
from prunekit.models.layers import conv_layers
from prunekit.analysis.reliability import reliability, split_probes, summarize

ROOT = Path(__file__).resolve().parent.parent
ESTIMATORS = ("gap", "pooled", "spatial")
READS = ("pre_add", "post_add")


def machine() -> str:
    """The CPU model, its core count and torch's thread count, in words."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()}-core CPU, torch on {torch.get_num_threads()} thread(s)"


def record(model, criterion, a, b, **params) -> dict:
    """The uncached reliability of ``criterion`` between probes ``a`` and ``b``: its summary (every conv, and the
    residual convs alone), layers without a ranking, per-layer rows (NaN as null) and seconds per probe."""
    start = time.perf_counter()
    table = reliability(model, criterion, a, b, cache=False, **params)
    seconds = (time.perf_counter() - start) / 2
    residual = table[table["layer"].isin([layer.name for layer in conv_layers(model) if layer.residual])]
    per_layer = table.astype(object).where(table.notna(), None).to_dict("records")  # NaN -> null in the JSON
    return {**summarize(table), "nan_layers": int(table["spearman"].isna().sum()), "residual": summarize(residual),
            "seconds_per_probe": seconds, "per_layer": per_layer}


def measure(model, data, n: int, estimator: str, reads: str) -> dict:
    """One cell of the table: :func:`record` of sfm_entropy with ``estimator`` and ``reads`` on two disjoint
    probes of ``n`` images."""
    a, b = split_probes(data, n)
    return {"estimator": estimator, "reads": reads, "n": n,
            **record(model, "sfm_entropy", a, b, estimator=estimator, reads=reads)}


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table, one row per (estimator, reads, n)."""
    lines = ["| estimator | reads | probe images | median Spearman | min Spearman | median bottom-30% overlap | "
             "residual convs: median / min Spearman | seconds per probe |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["residual"]
        lines.append(f"| {r['estimator']} | {r['reads']} | {r['n']} | {r['median_spearman']:.3f} | "
                     f"{r['min_spearman']:.3f} | {r['median_overlap']:.3f} | {res['median_spearman']:.3f} / "
                     f"{res['min_spearman']:.3f} | {r['seconds_per_probe']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "assets" / "resnet20_cifar10.safetensors"))
    ap.add_argument("--data-root", default=None, help="prunekit data root holding CIFAR-10 (default: prunekit's)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 640, 1280])
    ap.add_argument("--out", default=str(ROOT / "experiments" / "out" / "sfm_reliability.json"))
    args = ap.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    data = load_arrays("cifar10", "train", args.data_root)
    rows = []
    for estimator in ESTIMATORS:
        for reads in READS:
            for n in args.sizes:
                rows.append(measure(model, data, n, estimator, reads))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    result = {"checkpoint": Path(args.checkpoint).name, "data": "cifar10 train", "seeds": [0, 1],
              "probes": "disjoint (prunekit.analysis.reliability.split_probes)", "machine": machine(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{result['machine']}\n\n{markdown(rows)}")


if __name__ == "__main__":
    main()
