"""HRank and CHIP on the map after the residual add (their published code's) against the BN output (before).

On the bundled ResNet-20 and n CIFAR-10 train images (seed 0, prunekit's default draw), each criterion is scored
reading a residual conv's map after the add and its ReLU (``reads = "post_add"``, what prunekit now does) and
reading its BN output (``"pre_add"``, what it did before); the other convs read the same map either way. Per
layer: Spearman and bottom-30% overlap between the two rankings (prunekit.analysis.views.rank_agreement). Writes
experiments/out/post_add_maps.json and prints a markdown table of the residual convs (and of any other layer
whose rankings differ, which would be a bug). Spearman is NaN where one ranking is constant (every map of the
layer has full rank under the old rule).

    OMP_NUM_THREADS=1 python experiments/post_add_maps.py [--data-root DIR] [--n 128]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prunekit import load_arrays, load_checkpoint
from prunekit.criteria import criterion_class
from prunekit.defaults import PROBE
from prunekit.models.layers import conv_layers
from prunekit.criteria.probe import Probe
from prunekit.criteria.scores import score
from prunekit.analysis.views import rank_agreement

ROOT = Path(__file__).resolve().parent.parent


def compare(model, name: str, probe: Probe):
    """rank_agreement of ``name`` reading the pre-add map (the old rule) and the post-add map (the new)."""
    cls = criterion_class(name)
    old = type(f"{cls.__name__}PreAdd", (cls,), {"reads": "pre_add"})()  # unregistered: scored uncached
    before = score(model, old, probe=probe, cache=False)
    after = score(model, cls(), probe=probe, cache=False)
    return rank_agreement(before, after)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "assets" / "resnet20_cifar10.safetensors"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "out" / "post_add_maps.json"))
    args = ap.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    probe = Probe.from_arrays(load_arrays("cifar10", "train", args.data_root), args.n, seed=PROBE.seed)
    residual = {layer.name for layer in conv_layers(model) if layer.residual}
    result, lines = {"n": args.n, "residual_layers": sorted(residual)}, []
    for name in ("hrank", "chip"):
        table = compare(model, name, probe)
        result[name] = table.to_dict("records")
        for row in table.itertuples():
            if row.layer in residual or row.spearman < 1 - 1e-9:  # NaN: one ranking is constant
                lines.append(f"| {name} | {row.layer} | {row.filters} | {row.spearman:.3f} | {row.overlap:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("| criterion | layer | filters | Spearman old vs new | bottom-30% overlap |\n|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
