"""Plotly figures that pages draw, built from package results (no computation here beyond layout)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["sensitivity_figure", "mark_ratios", "filters_figure", "agreement_bars"]


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
        traces += [go.Scatter(x=[0, 0.95], y=[base, base], mode="lines", line=dict(color="#868e96", dash="dot"),
                              hovertemplate=f"unpruned: {base:.1f}%<extra></extra>"),
                   go.Scatter(x=curve["ratio"], y=curve["accuracy"], mode="lines+markers", marker_size=7,
                              line=dict(color="#2f6fed", width=2.5),
                              hovertemplate="ratio %{x:.2f}: %{y:.1f}%<extra></extra>"),
                   go.Scatter(x=[0, 0], y=[0, 100], mode="lines", name=root, line=dict(color="#d62728", width=2),
                              hoverinfo="skip")]
        where += [(i // 2 + 1, i % 2 + 1)] * 3
    fig.add_traces(traces, rows=[w[0] for w in where], cols=[w[1] for w in where])
    fig.update_xaxes(range=[-0.03, 0.95], tickformat=".1f", tickfont_size=12)
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
    :func:`prunekit.views.rank_agreement` table (layer, spearman, overlap); the legend above the plot."""
    fig = go.Figure()
    fig.add_bar(x=table["layer"], y=table["spearman"], name=rho_name, marker_color="#2f6fed")
    fig.add_bar(x=table["layer"], y=table["overlap"], name=overlap_name, marker_color="#f2a541")
    fig.update_layout(barmode="group", height=height, margin=dict(l=10, r=10, t=50, b=10), yaxis_range=[-1, 1.05],
                      yaxis_title=y_title, legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0),
                      xaxis=dict(tickangle=-45, tickfont=dict(size=10)))
    return fig
