"""Plotly figures that pages draw, built from package results (no computation here beyond layout)."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from prunekit.analysis.views import feature_map_grid
from prunekit.defaults import MAX_RATIO

__all__ = ["legible", "sensitivity_figure", "mark_ratios", "filters_figure", "agreement_bars", "grid_figure", "cost_figure",
           "training_curves", "epoch_axis", "CRITERION_COLORS", "criterion_color"]

REMOVED_COLOR = "#d62728"  # the frame of a filter a plan removes
TEXT_PX, TICK_PX, TITLE_PX = 14, 13, 14  # projector sizes: body text, tick labels, axis and subplot titles
GRID_PX = 700  # px: the width a tile grid is laid out for (the main column at 1280 px, less its colour bar)


def legible(fig: go.Figure) -> go.Figure:
    """``fig`` made readable on a projector, in place (and returned); every figure the pages draw goes through it.
    Text 14 px, tick labels, legends, colour bars and cell text 13 px, axis titles and subplot titles at least
    14 px; margins of 10 px that grow to fit tick labels and axis titles (automargin), plus room above for a title,
    subplot titles and a legend laid out above the plot, and below for the title of a grid of panels
    (make_subplots' x_title), so that nothing is cut at 1280 px."""
    below = any(a.yref == "paper" and a.y is not None and a.y <= 0 and a.yanchor == "top"
                for a in fig.layout.annotations)  # make_subplots' x_title: one axis title under a grid of panels
    fig.update_layout(font_size=TEXT_PX, legend_font_size=TICK_PX, legend_title_font_size=TICK_PX,
                      hoverlabel_font_size=TICK_PX, margin=dict(l=10, r=10, b=60 if below else 10, t=_top_margin(fig)))
    if fig.layout.title.text:  # over the plot's left edge, in the top margin
        fig.update_layout(title=dict(font_size=TITLE_PX, x=0, xref="paper", xanchor="left"))
    for update in (fig.update_xaxes, fig.update_yaxes):
        update(tickfont_size=TICK_PX, title_font_size=TITLE_PX, automargin=True)
    for note in fig.layout.annotations:  # make_subplots' titles (paper, anchored below) at TITLE_PX, others >= TICK_PX
        subplot_title = note.xref == note.yref == "paper" and note.yanchor == "bottom" and note.showarrow is False
        note.font.size = TITLE_PX if subplot_title else max(note.font.size or 0, TICK_PX)
    bar = dict(tickfont_size=TICK_PX, title_font_size=TICK_PX)
    fig.update_coloraxes(colorbar=bar)
    for trace in fig.data:
        if trace.type in ("heatmap", "contour", "histogram2d"):
            trace.update(colorbar=bar, textfont_size=TICK_PX)
        elif "marker" in trace and "colorscale" in trace.marker and trace.marker.colorscale is not None:
            trace.marker.update(colorbar=bar)
    return fig


def _top_margin(fig: go.Figure) -> int:
    """px above the plot: 10, plus a line for a layout title, one per line of the highest subplot title (an
    annotation above the plot area) and one for a horizontal legend above the plot."""
    top = 10 + (34 if fig.layout.title.text else 0)
    titles = [a for a in fig.layout.annotations if a.yref == "paper" and a.y is not None and a.y >= 0.98]
    top += max((22 * (1 + str(a.text).count("<br>")) for a in titles), default=0)
    legend = fig.layout.legend
    if legend.orientation == "h" and (legend.y or 0) > 1 and fig.layout.showlegend is not False:
        top += 28
    return top


def sensitivity_figure(table: pd.DataFrame, struct, labels: dict[str, str] | None = None) -> go.Figure:
    """One accuracy-vs-ratio panel per group, two per row, titled by the group's full name (``labels``: root ->
    name; default the root), with the unpruned accuracy (the ratio-0 row) as a dotted grey line and a red vertical
    line named after the group for :func:`mark_ratios` to move. Sized to be read on a projector."""
    roots = [g.root for g in struct.groups if g.root in set(table["group"])]
    rows = (len(roots) + 1) // 2
    titles = [_wrap((labels or {}).get(r, r)) for r in roots]
    fig = make_subplots(rows=rows, cols=2, subplot_titles=titles, shared_xaxes=True, vertical_spacing=0.55 / rows,
                        horizontal_spacing=0.1)
    traces, where = [], []
    for i, root in enumerate(roots):
        curve = table[table["group"] == root].sort_values("ratio")
        base = float(curve["accuracy"].iloc[0])  # ratio 0: the unpruned model
        traces += [go.Scatter(x=[0, MAX_RATIO], y=[base, base], mode="lines", line=dict(color="#868e96", dash="dot"),
                              hovertemplate=f"unpruned: {base:.1f}%<extra></extra>"),
                   go.Scatter(x=curve["ratio"], y=curve["accuracy"], mode="lines+markers", marker_size=7,
                              line=dict(color="#2f6fed", width=2.5), customdata=curve[["kept"]],
                              hovertemplate="ratio %{x:.2f} (%{customdata[0]} filters kept): %{y:.1f}%<extra></extra>"),
                   go.Scatter(x=[0, 0], y=[0, 100], mode="lines", name=root, line=dict(color="#d62728", width=2),
                              hoverinfo="skip")]
        where += [(i // 2 + 1, i % 2 + 1)] * 3
    fig.add_traces(traces, rows=[w[0] for w in where], cols=[w[1] for w in where])
    fig.update_xaxes(range=[-0.03, MAX_RATIO], tickformat=".1f")
    fig.update_xaxes(title_text="ratio of filters removed", row=rows)
    fig.update_yaxes(title_text="accuracy (%)", range=[0, 100], dtick=25)
    fig.update_layout(height=230 * rows + 60, showlegend=False)
    return legible(fig)


def _wrap(label: str, width: int = 48) -> str:
    """A long group name (``a + b + c (…)``) broken into lines of about ``width`` characters for a panel title."""
    lines, line = [], ""
    for word in label.split(" "):
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def mark_ratios(fig: go.Figure, ratios: dict) -> go.Figure:
    """Move each group's red line to its current ratio (in place: the figure is this session's own)."""
    for trace in fig.data:
        if trace.name:
            r = ratios.get(trace.name, 0.0)
            trace.x = (r, r)
    return fig


def filters_figure(est) -> go.Figure:
    layers = list(est.channels)
    fig = go.Figure()
    fig.add_bar(x=layers, y=[est.channels[n][0] for n in layers], name="before", marker_color="#c9d3e6")
    fig.add_bar(x=layers, y=[est.channels[n][1] for n in layers], name="after", marker_color="#2f6fed")
    fig.update_layout(barmode="overlay", height=340, yaxis_title="filters", xaxis_title="conv layer (forward order)",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0), xaxis_tickangle=-45)
    return legible(fig)


def agreement_bars(table: pd.DataFrame, rho_name: str, overlap_name: str, y_title: str, height: int) -> go.Figure:
    """Per layer, two rankings' Spearman (blue) and bottom-k overlap (orange) side by side, from a
    :func:`prunekit.analysis.views.rank_agreement` table (layer, spearman, overlap); the legend above the plot."""
    fig = go.Figure()
    fig.add_bar(x=table["layer"], y=table["spearman"], name=rho_name, marker_color="#2f6fed")
    fig.add_bar(x=table["layer"], y=table["overlap"], name=overlap_name, marker_color="#f2a541")
    fig.update_layout(barmode="group", height=height, yaxis_range=[-1, 1.05], yaxis_title=y_title,
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
                      xaxis=dict(tickangle=-45, title="conv layer (forward order)"))
    return legible(fig)


def grid_figure(maps: torch.Tensor, order: list[int], labels: list[str], marked: set[int]) -> go.Figure:
    """maps (C, h, w) tiled in ``order``, 8 per row (12 above 32 maps); tile k labelled labels[k] in a band of its
    own above the tile, never over the map (split onto two lines at its first space when 12 tiles share a row);
    tiles whose position is in ``marked`` get a red outline, a grey veil and a red label. Sized for a grid
    :data:`GRID_PX` wide."""
    c, h, w = maps.shape
    ncols = min(len(order), 8 if len(order) <= 32 else 12)
    labels = [label.replace(" ", "<br>", 1) for label in labels] if ncols > 8 else labels
    pad, rows = max(1, h // 8), -(-len(order) // ncols)
    unit = GRID_PX / (ncols * (w + pad))  # px per map pixel
    band = math.ceil((17 * (1 + max((s.count("<br>") for s in labels), default=0)) + 4) / unit)  # label rows
    tiles = feature_map_grid(maps, ncols=ncols, pad=pad, order=order).numpy()
    z = np.vstack([part for r in range(rows) for part in (np.full((band, tiles.shape[1]), np.nan),
                                                            tiles[r * (h + pad):(r + 1) * (h + pad)])])
    fig = go.Figure(go.Heatmap(z=z, colorscale="Viridis", zmin=0, zmax=1, hoverinfo="skip", colorbar=dict(
        title=dict(text="response", side="right"), tickvals=[0, 1], ticktext=["its min", "its max"], thickness=14)))
    for k, label in enumerate(labels):
        r, q = divmod(k, ncols)
        x0, y0 = q * (w + pad) - 0.5, r * (h + pad + band) + band - 0.5
        fig.add_annotation(x=x0, y=y0, text=label, showarrow=False, xanchor="left", yanchor="bottom", align="left",
                           font=dict(color=REMOVED_COLOR if k in marked else "#212529"), borderpad=1)
        if k in marked:
            fig.add_shape(type="rect", x0=x0, y0=y0, x1=x0 + w, y1=y0 + h, fillcolor="rgba(255,255,255,0.55)",
                          line=dict(color=REMOVED_COLOR, width=3))
    fig.update_layout(height=max(160, min(int(unit * len(z)) + 20, 3000)), plot_bgcolor="white",
                      xaxis=dict(visible=False, constrain="domain"),
                      yaxis=dict(visible=False, autorange="reversed", scaleanchor="x", constrain="domain"))
    return legible(fig)


def cost_figure(table: pd.DataFrame) -> go.Figure:
    """Per conv / linear layer (:func:`prunekit.models.metrics.layer_table`'s rows, forward order): its MACs per image
    (top) and its parameters (bottom)."""
    titles = ("compute: multiply-adds per image (millions)", "weights: parameters (thousands)")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=titles)
    fig.add_bar(x=table["layer"], y=table["macs"] / 1e6, name="MACs (M)", marker_color="#2f6fed", row=1, col=1)
    fig.add_bar(x=table["layer"], y=table["params"] / 1e3, name="params (k)", marker_color="#f2a541", row=2, col=1)
    fig.update_layout(height=480, showlegend=False)
    fig.update_xaxes(tickangle=-45, title_text="layer (forward order)", row=2, col=1)
    fig.update_yaxes(title_text="M MACs", row=1, col=1)
    fig.update_yaxes(title_text="k params", row=2, col=1)
    fig.update_annotations(x=0, xanchor="left")
    return legible(fig)


def epoch_axis(epochs: int) -> dict:
    """An epoch axis' ticks for a chart of ``epochs`` epochs: whole epochs only, from 0, every epoch up to 12 epochs,
    then every 2, 5, 10, 20, 50... (at most 12 ticks); plotly's own choice gives half-epoch ticks rounded (1 2 2 3)."""
    step = next((s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if epochs <= 12 * s), 1000)
    return {"tickmode": "linear", "tick0": 0, "dtick": step, "tickformat": "d"}


def training_curves(rows: list[dict], start: dict | None = None) -> go.Figure:
    """Train loss and test accuracy per epoch, side by side; ``start`` (the epoch-0 row: the model before its
    first epoch, e.g. just pruned) puts the accuracy curve's first point at epoch 0."""
    df = pd.DataFrame(rows)
    test = pd.concat([pd.DataFrame([start]), df]) if start else df
    fig = make_subplots(rows=1, cols=2, subplot_titles=("train loss (cross-entropy)", "test accuracy (%)"))
    fig.add_scatter(x=df["epoch"], y=df["train_loss"], mode="lines+markers", name="train loss", row=1, col=1,
                    line_color="#d1495b")
    fig.add_scatter(x=test["epoch"], y=test["test_accuracy"], mode="lines+markers", name="test accuracy", row=1,
                    col=2, line_color="#2f6fed")
    if start:
        fig.add_annotation(x=0, y=start["test_accuracy"], text="before training", showarrow=True, ax=40, ay=-25,
                           row=1, col=2)
    fig.update_xaxes(title_text="epoch", **epoch_axis(int(df["epoch"].max()) if len(df) else 1))
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=2)
    fig.update_layout(height=300, showlegend=False)
    return legible(fig)


# One fixed colour per criterion, the same in every chart that colours by criterion (the Compare page's points and
# sweep curves, the tour's curves): a criterion keeps its colour whichever others are drawn beside it.
CRITERION_COLORS = {
    "l1": "#2E91E5", "fpgm": "#EB663B", "l2": "#1CA71C", "random": "#222A2A", "bn_scale": "#B68100",
    "taylor": "#DA16FF", "grad_x_activation": "#750D86", "sfm_entropy": "#E15F99", "hrank": "#00A08B",
    "chip": "#511CFB", "mapex": "#AF0038", "capacity": "#6C7C32", "independence": "#778AAE",
    "information": "#862A16", "linear_ensembles": "#A777F1", "afie": "#B2828D",
}
EXTRA_COLORS = ("#FB0D0D", "#FB00D1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#FC0080")
NO_CRITERION_COLOR = "#868e96"  # a run that records no criterion


def criterion_color(name) -> str:
    """The colour of criterion ``name`` in every chart: :data:`CRITERION_COLORS`'s, for a criterion registered
    outside the package one of :data:`EXTRA_COLORS` picked by its name (stable across sessions), grey for none."""
    if name in CRITERION_COLORS:
        return CRITERION_COLORS[name]
    if not isinstance(name, str) or not name:
        return NO_CRITERION_COLOR
    return EXTRA_COLORS[zlib.crc32(name.encode()) % len(EXTRA_COLORS)]
