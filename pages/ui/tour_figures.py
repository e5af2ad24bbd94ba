"""One small figure per tour step: the chart of the step's page, drawn on the bundled ResNet-20 with the same
figure builders and package functions the pages use (:mod:`pages.ui.figures`, :mod:`prunekit`). A figure that needs
data the machine lacks (the test images) is None, and the step says so."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.ui.figures import cost_figure, criterion_color, filters_figure, grid_figure, legible, training_curves
from prunekit.analysis.views import feature_maps, weight_correlation
from prunekit.criteria.scores import score_model
from prunekit.data import DataNotFoundError, held_out_set, locate
from prunekit.data.images import normalized
from prunekit.models.checkpoints import ASSETS, DEFAULT_CHECKPOINT, load_checkpoint
from prunekit.models.metrics import count_macs, layer_table
from prunekit.pruning.presets import get_preset
from prunekit.pruning.structure import estimate, structure
from prunekit.runs.compare import pareto_front

CURVES = Path(__file__).resolve().parents[2] / "experiments" / "out" / "e1_curves.json"  # RESULTS.md's E1
BEST_SHOWN = 3  # step 8 draws E1's best criteria at half the FLOPs, then sfm_entropy and random beside them


@st.cache_resource(show_spinner=False)
def _bundled():
    """(the bundled ResNet-20 in eval mode, its structure)."""
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    return model, structure(model, (3, 32, 32))


def _maps(layer: str) -> go.Figure | None:
    """The feature maps of the first held-out CIFAR-10 test image at ``layer``; None without the images."""
    try:
        image = held_out_set("cifar10", 1).images[0]
    except DataNotFoundError:
        return None
    maps = feature_maps(_bundled()[0], layer, normalized(image, "cifar10"))
    return grid_figure(maps, list(range(len(maps))), [f"#{i}" for i in range(len(maps))], set())


def _scores() -> go.Figure:
    """layer1.0.conv1's filters by L1 norm, sorted (the Saliency page's sorted bars)."""
    table = score_model(_bundled()[0], "l1")
    rows = table[table["layer"] == "layer1.0.conv1"].sort_values("score")
    fig = go.Figure(go.Bar(x=[f"#{f}" for f in rows["filter"]], y=rows["score"], marker_color="#2f6fed"))
    fig.update_layout(xaxis=dict(title="filter of layer1.0.conv1, lowest L1 first", type="category"),
                      yaxis_title="L1 norm of the weights", height=340)
    return legible(fig)


def _correlation() -> go.Figure:
    corr = weight_correlation(_bundled()[0], "layer1.0.conv1")
    labels = [str(i) for i in corr.order]
    fig = go.Figure(go.Heatmap(z=corr.ordered(), x=labels, y=labels, colorscale="Reds", zmin=0, zmax=1,
                               colorbar=dict(title="|r|", thickness=14),
                               hovertemplate="filters %{x} and %{y}: |r| = %{z:.2f}<extra></extra>"))
    fig.update_xaxes(title="filter (clustering order)", type="category", constrain="domain")
    fig.update_yaxes(title="filter (clustering order)", type="category", autorange="reversed", scaleanchor="x",
                     constrain="domain")
    fig.update_layout(height=460)
    return legible(fig)


def _plan() -> go.Figure:
    model, struct = _bundled()
    plan = get_preset("uniform").make(struct, "resnet20", value=0.3, model=model)
    return filters_figure(estimate(struct, plan.ratios, plan.round_to))


def _training() -> go.Figure:
    rows = [json.loads(line) for line in (ASSETS / "resnet20_cifar10_metrics.jsonl").read_text().splitlines()]
    return training_curves(rows)


def _compare() -> go.Figure | None:
    """E1 of RESULTS.md as the Compare page draws runs: recalibrated accuracy against FLOPs for E1's best criteria,
    sfm_entropy and random, their Pareto front (dashed) and the unpruned model (dotted, at its accuracy)."""
    if not CURVES.is_file():
        return None
    e1 = json.loads(CURVES.read_text())
    names = list(dict.fromkeys([*e1["criteria_by_recalibrated_at_0.5"][:BEST_SHOWN], "sfm_entropy", "random"]))
    flops = 2 * count_macs(_bundled()[0], (3, 32, 32))  # FLOPs = 2 x MACs, as the runs record them
    points = pd.DataFrame([{"criterion": name, "x": (1 - v["flops_removed"]) * flops, "accuracy": v["recalibrated"]}
                           for name in names if name in e1["table"] for v in e1["table"][name].values()
                           if v.get("recalibrated") is not None])
    points["pareto"] = pareto_front(points, "x", "accuracy")
    front = points[points["pareto"]].sort_values("x")
    fig = go.Figure(go.Scatter(x=front["x"], y=front["accuracy"], mode="lines", name="Pareto front",
                               line=dict(color="#adb5bd", dash="dash", shape="hv"), hoverinfo="skip"))
    for name, group in points.groupby("criterion", sort=False):
        on = group["pareto"]
        fig.add_scatter(x=group["x"], y=group["accuracy"], mode="lines+markers", name=name,
                        line=dict(color=criterion_color(name), width=2),
                        marker=dict(size=on.map({True: 14, False: 9}), color=criterion_color(name),
                                    line=dict(width=on.map({True: 2, False: 0}), color="#212529")),
                        hovertemplate=f"{name}<br>%{{x:.3s}} FLOPs: %{{y:.1f}}%<extra></extra>")
    fig.add_hline(y=e1["accuracy_before"], line=dict(color="#b08900", dash="dot", width=1.5),
                  annotation_text=f"unpruned ResNet-20: {e1['accuracy_before']:.2f}%",
                  annotation_position="bottom left", annotation_font_color="#7a5f00")
    fig.update_xaxes(title="FLOPs per image (after pruning)", tickformat="~s")
    fig.update_yaxes(title="top-1 accuracy (%), BN recalibrated")
    fig.update_layout(height=440, legend=dict(title="criterion"))
    return legible(fig)


FIGURES: dict[str, tuple[Callable[[], go.Figure | None], str]] = {
    "maps": (lambda: _maps("layer1.0.conv1"), "The 16 feature maps of layer1.0.conv1 for one test image."),
    "cost": (lambda: cost_figure(layer_table(_bundled()[0], (3, 32, 32))),
             "MACs and parameters per layer (the Model & data page)."),
    "scores": (_scores, "One layer's filters sorted by their L1 score (the Saliency page)."),
    "deep_maps": (lambda: _maps("layer3.0.conv1"), "Stage 3: 64 maps of 8x8, more abstract patterns."),
    "correlation": (_correlation, "|Pearson| of layer1.0.conv1's filter weights, clustered (the Correlations "
                                  "page): red blocks are redundant filters."),
    "plan": (_plan, "Filters kept per conv by the uniform preset at ratio 0.3 (the Plan & prune page)."),
    "training": (_training, "How the bundled model itself was trained: loss and test accuracy per epoch (the "
                            "Jobs page's curves)."),
    "compare": (_compare, "Accuracy against FLOPs for the three best criteria of RESULTS.md's E1, sfm_entropy and "
                          "random, pruned by the uniform preset and recalibrated (2000 test images): outlined points "
                          "are on the Pareto front, the dotted line is the unpruned model. The Compare page draws "
                          "your own runs this way."),
}


@st.cache_resource(show_spinner=False, max_entries=2 * len(FIGURES))
def _built(name: str, images: str) -> go.Figure | None:
    """The figure ``name`` of :data:`FIGURES`, built once per place the CIFAR-10 images are found (``images``:
    that place, 'None' without them): "Show all steps" draws every step's chart on each step of the tour."""
    return FIGURES[name][0]()


def tour_figure(name: str, key: str) -> None:
    """Draw the figure ``name`` of :data:`FIGURES` (widget key ``key``) with its caption, or say what it needs."""
    caption = FIGURES[name][1]
    fig = _built(name, str(locate("cifar10")))
    if fig is None:
        st.caption(f":material/folder_off: ({caption} It needs the CIFAR-10 images: the Model & data page says how "
                   "to get them.)")
        return
    st.plotly_chart(fig, width="stretch", key=key)
    st.caption(caption)

