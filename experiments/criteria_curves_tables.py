"""The criteria across budgets: the sweep's points (prunekit.runs.records.list_runs of SWEEP_RUNS, default experiments/runs_sweep) as
criterion x target tables of the recalibrated and the plain pruned accuracy (and the fine-tuned one where a point
was fine-tuned, best_criteria_finetuned.py) -> out/e1_curves.json, out/e1_curves.md; the curves as out/e1_curves.png when plotly and
kaleido are installed, else an HTML chart (plotly from its CDN) when plotly is, else nothing."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from prunekit.runs.records import list_runs  # noqa: E402

OUT = ROOT / "experiments" / "out"
SWEEP_RUNS = ROOT / os.environ.get("SWEEP_RUNS", "experiments/runs_sweep")


def main() -> None:
    df = list_runs(SWEEP_RUNS)
    df = df[df.sweep.notna() & df.accuracy_recalibrated.notna()].copy()
    df = df.sort_values("created").drop_duplicates(["criterion", "target"], keep="last")
    df["flops_removed"] = 1 - df.flops / df.flops_before
    targets = sorted(df.target.unique())
    order = (df[df.target == 0.5].sort_values("accuracy_recalibrated", ascending=False).criterion.tolist()
             if (df.target == 0.5).any() else sorted(df.criterion.unique()))
    order += sorted(set(df.criterion) - set(order))
    table = {}
    for c in order:
        sub = df[df.criterion == c].set_index("target")
        table[c] = {f"{t:g}": {"recalibrated": _f(sub, t, "accuracy_recalibrated"),
                               "pruned": _f(sub, t, "accuracy_pruned"),
                               "finetuned": _f(sub, t, "accuracy_finetuned"),
                               "flops_removed": _f(sub, t, "flops_removed"),
                               "run": str(Path(sub.loc[t, "path"]).relative_to(ROOT)) if t in sub.index else None}
                    for t in targets}
    before = df.accuracy_before.dropna()
    res = {"what": "uniform preset, every point pruned from the bundled ResNet-20 and evaluated on 2000 held-out "
                   "test images right after pruning (pruned) and after BatchNorm recalibration on 1024 training "
                   "images (recalibrated); finetuned: best_criteria_finetuned.py, where run",
           "accuracy_before": float(before.iloc[0]) if len(before) else None,
           "targets": [float(t) for t in targets], "criteria_by_recalibrated_at_0.5": order, "table": table}
    (OUT / "e1_curves.json").write_text(json.dumps(res, indent=2))

    pct = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"Accuracy (%) on 2000 held-out test images; before pruning: {pct(res['accuracy_before'])}. "
             "Each cell: recalibrated / plain pruned. Rows by recalibrated accuracy at -50% FLOPs.", "",
             "| criterion | " + " | ".join(f"-{t:.0%} FLOPs" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for c in order:
        lines.append(f"| {c} | " + " | ".join(f"{pct(table[c][f'{t:g}']['recalibrated'])} / "
                                              f"{pct(table[c][f'{t:g}']['pruned'])}" for t in targets) + " |")
    ft = {c: table[c].get("0.5", {}).get("finetuned") for c in order}
    if any(v is not None for v in ft.values()):
        lines += ["", "best_criteria_finetuned.py: -50% FLOPs, fine-tuned once (1 epoch x 5000 images, seed 0; 2000 test images):", "",
                  "| criterion | recalibrated | fine-tuned |", "|---|---|---|"]
        lines += [f"| {c} | {pct(table[c]['0.5']['recalibrated'])} | {pct(v)} |" for c, v in ft.items()
                  if v is not None]
    (OUT / "e1_curves.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _chart(table, targets, order)


def _f(sub, t, col):
    if t not in sub.index:
        return None
    v = sub.loc[t, col]
    return None if v is None or v != v else float(v)


def _chart(table, targets, order) -> None:
    try:
        import plotly.graph_objects as go
    except ImportError:
        print("plotly not installed: no chart")
        return
    fig = go.Figure()
    for c in order:
        pts = [(table[c][f"{t:g}"]["flops_removed"], table[c][f"{t:g}"]["recalibrated"]) for t in targets
               if table[c][f"{t:g}"]["recalibrated"] is not None]
        fig.add_trace(go.Scatter(x=[100 * x for x, _ in pts], y=[y for _, y in pts], mode="lines+markers",
                                 name=c))
    fig.update_layout(title="ResNet-20 / CIFAR-10, uniform preset: recalibrated accuracy vs FLOPs removed",
                      xaxis_title="FLOPs removed (%)", yaxis_title="accuracy after BN recalibration (%)",
                      width=900, height=600)
    try:
        import kaleido  # noqa: F401
        fig.write_image(str(OUT / "e1_curves.png"))
        print("wrote e1_curves.png")
    except ImportError:
        fig.write_html(str(OUT / "e1_curves.html"), include_plotlyjs="cdn")
        print("kaleido not installed: no PNG; wrote e1_curves.html (plotly.js from its CDN)")


if __name__ == "__main__":
    main()
