"""Ranking reliability of the data-driven criteria of RESULTS.md: how well each layer's filter ranking
agrees between two disjoint probes of the CIFAR-10 train split, on the bundled ResNet-20.

For each criterion (hrank, chip, taylor in both forms, sfm_entropy with its default, grad_x_activation) and, for
comparison, the rule each changed criterion followed before its revision (hrank and chip reading a residual block's
last conv at its BN output, sfm_entropy estimator=gap on the BN output), the two probes of
prunekit.analysis.reliability.split_probes (n images drawn by seed 0, n more by seed 1 from the rest) are scored uncached
and compared layer by layer (prunekit.reliability.reliability): median and minimum per-layer Spearman, median
bottom-30% overlap (prunekit.analysis.reliability.summarize), over every conv and over the 9 residual convs alone (the only
ones whose map changed), the number of layers whose Spearman is undefined (a constant ranking), and the seconds
to score one probe on this machine. Writes experiments/out/criteria_reliability.json and prints a markdown table.

    OMP_NUM_THREADS=2 python experiments/criteria_reliability.py [--data-root DIR] [--n 640]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sfm_reliability import machine, record  # this folder: the CPU in words, one reliability record

from prunekit import load_arrays, load_checkpoint
from prunekit.criteria import criterion_class, get_criterion
from prunekit.defaults import PROBE
from prunekit.analysis.reliability import split_probes

ROOT = Path(__file__).resolve().parent.parent
# (label, criterion, parameters, rule): "now" = prunekit's current default, "before" = the rule before the revision
CASES = [
    ("hrank", "hrank", {}, "now"),
    ("hrank, BN output (before the revision)", "hrank", {"reads": "pre_add"}, "before"),
    ("chip", "chip", {}, "now"),
    ("chip, BN output (before the revision)", "chip", {"reads": "pre_add"}, "before"),
    ("taylor form=cvpr2019 (default)", "taylor", {"form": "cvpr2019"}, "now"),
    ("taylor form=iclr2017", "taylor", {"form": "iclr2017"}, "now"),
    ("sfm_entropy (default: pooled, post_add)", "sfm_entropy", {}, "now"),
    ("sfm_entropy gap, pre_add (before the revision)", "sfm_entropy", {"estimator": "gap", "reads": "pre_add"}, "before"),
    ("grad_x_activation", "grad_x_activation", {}, "now"),
]


def build(name: str, params: dict):
    """The criterion; ``reads`` for hrank / chip is a class attribute, not a parameter: an unregistered subclass
    (as experiments/post_add_maps.py does) gives the old rule."""
    params = dict(params)
    reads = params.pop("reads", None) if name in ("hrank", "chip") else None
    if reads is None:
        return get_criterion(name, **params)
    cls = criterion_class(name)
    return type(f"{cls.__name__}PreAdd", (cls,), {"reads": reads})(**params)


def measure(model, a, b, label: str, name: str, params: dict, rule: str) -> dict:
    crit = build(name, params)
    return {"label": label, "criterion": name, "params": params, "config": crit.config, "rule": rule,
            **record(model, crit, a, b)}


def markdown(rows: list[dict], n: int) -> str:
    lines = [f"| criterion | median Spearman | min Spearman | median bottom-30% overlap | residual convs: median / "
             f"min Spearman | layers without a ranking | seconds per probe ({n} images) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["residual"]
        lines.append(f"| {r['label']} | {r['median_spearman']:.3f} | {r['min_spearman']:.3f} | "
                     f"{r['median_overlap']:.2f} | {res['median_spearman']:.3f} / {res['min_spearman']:.3f} | "
                     f"{r['nan_layers']} | {r['seconds_per_probe']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "assets" / "resnet20_cifar10.safetensors"))
    ap.add_argument("--data-root", default=None, help="prunekit data root holding CIFAR-10 (default: prunekit's)")
    ap.add_argument("--n", type=int, default=PROBE.n, help=f"images per probe (default {PROBE.n}, prunekit's probe)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "out" / "criteria_reliability.json"))
    args = ap.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    a, b = split_probes(load_arrays("cifar10", "train", args.data_root), args.n)
    rows = []
    for case in CASES:
        rows.append(measure(model, a, b, *case))
        print(markdown(rows[-1:], args.n).splitlines()[-1], flush=True)
    result = {"checkpoint": Path(args.checkpoint).name, "data": "cifar10 train", "n": args.n, "seeds": [0, 1],
              "probes": "disjoint (prunekit.analysis.reliability.split_probes)", "machine": machine(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{result['machine']}\n\n{markdown(rows, args.n)}")


if __name__ == "__main__":
    main()
