"""Plotly figures that pages draw, built from package results (no computation here beyond layout)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from prunekit.analysis.views import feature_map_grid
from prunekit.defaults import MAX_RATIO

__all__ = ["sensitivity_figure", "mark_ratios", "filters_figure", "agreement_bars", "grid_figure", "cost_figure",
           "training_curves"]

REMOVED_COLOR = "#d62728"  # the frame of a filter a plan removes


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
    fig.update_xaxes(range=[-0.03, MAX_RATIO], tickformat=".1f", tickfont_size=12)
    fig.update_xaxes(title_text="ratio removed", title_font_size=13, row=rows)
    fig.update_yaxes(title_text="acc. %", title_font_size=12, tickfont_size=12, range=[0, 100], dtick=25)
    fig.update_annotations(font_size=12)
    fig.update_layout(height=230 * rows + 60, margin=dict(l=10, r=10, t=50, b=10), showlegend=False)
    return fig


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
    fig.update_layout(barmode="overlay", height=300, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="filters",
                      legend=dict(orientation="h", y=1.08, x=0))
    fig.update_xaxes(tickangle=-45, tickfont=dict(size=10))
    return fig


def agreement_bars(table: pd.DataFrame, rho_name: str, overlap_name: str, y_title: str, height: int) -> go.Figure:
    """Per layer, two rankings' Spearman (blue) and bottom-k overlap (orange) side by side, from a
    :func:`prunekit.analysis.views.rank_agreement` table (layer, spearman, overlap); the legend above the plot."""
    fig = go.Figure()
    fig.add_bar(x=table["layer"], y=table["spearman"], name=rho_name, marker_color="#2f6fed")
    fig.add_bar(x=table["layer"], y=table["overlap"], name=overlap_name, marker_color="#f2a541")
    fig.update_layout(barmode="group", height=height, margin=dict(l=10, r=10, t=50, b=10), yaxis_range=[-1, 1.05],
                      yaxis_title=y_title, legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
                      xaxis=dict(tickangle=-45, tickfont=dict(size=10)))
    return fig


def grid_figure(maps: torch.Tensor, order: list[int], labels: list[str], marked: set[int]) -> go.Figure:
    """maps (C, h, w) tiled in ``order``; tile k labelled labels[k]; tiles whose position is in ``marked`` get a
    red outline and a grey veil."""
    c, h, w = maps.shape
    ncols = min(len(order), 8 if len(order) <= 32 else 12)
    pad = max(1, h // 8)
    grid = feature_map_grid(maps, ncols=ncols, pad=pad, order=order).numpy()
    fig = go.Figure(go.Heatmap(z=grid, colorscale="Viridis", zmin=0, zmax=1, hoverinfo="skip", colorbar=dict(
        title=dict(text="response", side="right"), tickvals=[0, 1], ticktext=["its min", "its max"], thickness=14,
        tickfont=dict(size=13))))
    for k, label in enumerate(labels):
        r, q = divmod(k, ncols)
        x0, y0 = q * (w + pad) - 0.5, r * (h + pad) - 0.5
        fig.add_annotation(x=x0, y=y0, text=label, showarrow=False, xanchor="left", yanchor="top",
                           font=dict(size=13, color="white"), bgcolor="rgba(0,0,0,0.65)", borderpad=2)
        if k in marked:
            fig.add_shape(type="rect", x0=x0, y0=y0, x1=x0 + w, y1=y0 + h, fillcolor="rgba(255,255,255,0.55)",
                          line=dict(color=REMOVED_COLOR, width=3))
    rows = -(-len(order) // ncols)
    height = int(1000 * rows * (h + pad) / (ncols * (w + pad))) + 20
    fig.update_layout(height=max(160, min(height, 1100)), margin=dict(l=0, r=0, t=10, b=10),
                      xaxis=dict(visible=False, constrain="domain"),
                      yaxis=dict(visible=False, autorange="reversed", scaleanchor="x"))
    return fig


def cost_figure(table: pd.DataFrame) -> go.Figure:
    """Per conv / linear layer (:func:`prunekit.models.metrics.layer_table`'s rows, forward order): its MACs per image
    (top) and its parameters (bottom)."""
    titles = ("compute: multiply-adds per image (millions)", "weights: parameters (thousands)")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=titles)
    fig.add_bar(x=table["layer"], y=table["macs"] / 1e6, name="MACs (M)", marker_color="#2f6fed", row=1, col=1)
    fig.add_bar(x=table["layer"], y=table["params"] / 1e3, name="params (k)", marker_color="#f2a541", row=2, col=1)
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    fig.update_xaxes(tickangle=-45, tickfont=dict(size=10), row=2, col=1)
    fig.update_annotations(font_size=13, x=0, xanchor="left")
    return fig


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
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    fig.update_annotations(font_size=13)
    return fig
