"""One small figure per tour step: the chart of the step's page, drawn on the bundled ResNet-20 with the same
figure builders and package functions the pages use (:mod:`pages.ui.figures`, :mod:`prunekit`). A figure that needs
data the machine lacks (the test images) is None, and the step says so."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from pages.ui.figures import cost_figure, filters_figure, grid_figure, training_curves
from prunekit.analysis.views import feature_maps, weight_correlation
from prunekit.criteria.scores import score_model
from prunekit.data import DataNotFoundError, held_out_set
from prunekit.data.images import normalized
from prunekit.models.checkpoints import ASSETS, DEFAULT_CHECKPOINT, load_checkpoint
from prunekit.models.metrics import layer_table
from prunekit.pruning.presets import get_preset
from prunekit.pruning.structure import estimate, structure

HEIGHT = 260  # px: small, beside the step's text
CURVES = Path(__file__).resolve().parents[2] / "experiments" / "out" / "e1_curves.json"  # RESULTS.md's E1


@st.cache_resource(show_spinner=False)
def _bundled():
    """(the bundled ResNet-20 in eval mode, its structure)."""
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    return model, structure(model, (3, 32, 32))


def _small(fig: go.Figure) -> go.Figure:
    fig.update_layout(height=HEIGHT, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def _maps(layer: str) -> go.Figure | None:
    """The feature maps of the first held-out CIFAR-10 test image at ``layer``; None without the images."""
    try:
        image = held_out_set("cifar10", 1).images[0]
    except DataNotFoundError:
        return None
    maps = feature_maps(_bundled()[0], layer, normalized(image, "cifar10"))
    return _small(grid_figure(maps, list(range(len(maps))), [f"#{i}" for i in range(len(maps))], set()))


def _scores() -> go.Figure:
    """layer1.0.conv1's filters by L1 norm, sorted (the Saliency page's sorted bars)."""
    table = score_model(_bundled()[0], "l1")
    rows = table[table["layer"] == "layer1.0.conv1"].sort_values("score")
    fig = go.Figure(go.Bar(x=[f"#{f}" for f in rows["filter"]], y=rows["score"], marker_color="#2f6fed"))
    fig.update_layout(xaxis=dict(title="filter of layer1.0.conv1, lowest L1 first", type="category"),
                      yaxis_title="L1 norm")
    return _small(fig)


def _correlation() -> go.Figure:
    corr = weight_correlation(_bundled()[0], "layer1.0.conv1")
    fig = go.Figure(go.Heatmap(z=corr.ordered(), colorscale="Reds", zmin=0, zmax=1,
                               colorbar=dict(title="|r|", thickness=10)))
    fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False, autorange="reversed", scaleanchor="x"))
    return _small(fig)


def _plan() -> go.Figure:
    model, struct = _bundled()
    plan = get_preset("uniform").make(struct, "resnet20", value=0.3, model=model)
    return _small(filters_figure(estimate(struct, plan.ratios, plan.round_to)))


def _training() -> go.Figure:
    rows = [json.loads(line) for line in (ASSETS / "resnet20_cifar10_metrics.jsonl").read_text().splitlines()]
    return _small(training_curves(rows))


def _compare() -> go.Figure | None:
    """E1 of RESULTS.md: recalibrated accuracy against the FLOPs removed, for five criteria."""
    if not CURVES.is_file():
        return None
    table = json.loads(CURVES.read_text())["table"]
    fig = go.Figure()
    for criterion in list(table)[:5]:
        pts = sorted((v["flops_removed"], v["recalibrated"]) for v in table[criterion].values()
                     if v.get("recalibrated") is not None)
        fig.add_scatter(x=[100 * x for x, _ in pts], y=[y for _, y in pts], mode="lines+markers", name=criterion)
    fig.update_layout(xaxis_title="FLOPs removed (%)", yaxis_title="accuracy (%), recalibrated")
    return _small(fig)


FIGURES: dict[str, tuple[Callable[[], go.Figure | None], str]] = {
    "maps": (lambda: _maps("layer1.0.conv1"), "The 16 feature maps of layer1.0.conv1 for one test image."),
    "cost": (lambda: _small(cost_figure(layer_table(_bundled()[0], (3, 32, 32)))),
             "MACs and parameters per layer (the Model & data page)."),
    "scores": (_scores, "One layer's filters sorted by their L1 score (the Saliency page)."),
    "deep_maps": (lambda: _maps("layer3.0.conv1"), "Stage 3: 64 maps of 8x8, more abstract patterns."),
    "correlation": (_correlation, "|Pearson| of layer1.0.conv1's filter weights, clustered (the Correlations "
                                  "page): red blocks are redundant filters."),
    "plan": (_plan, "Filters kept per conv by the uniform preset at ratio 0.3 (the Plan & prune page)."),
    "training": (_training, "How the bundled model itself was trained: loss and test accuracy per epoch (the "
                            "Jobs page's curves)."),
    "compare": (_compare, "Accuracy against FLOPs removed for five criteria (RESULTS.md's E1; the Compare "
                          "page draws your own runs this way)."),
}


def tour_figure(name: str, key: str) -> None:
    """Draw the figure ``name`` of :data:`FIGURES` (widget key ``key``) with its caption, or say what it needs."""
    build, caption = FIGURES[name]
    fig = build()
    if fig is None:
        st.caption(f":material/folder_off: ({caption} It needs the CIFAR-10 images: the Model & data page says how "
                   "to get them.)")
        return
    st.plotly_chart(fig, width="stretch", key=key)
    st.caption(caption)

