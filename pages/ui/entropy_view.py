"""The Saliency page's "What is a filter's entropy?" view: for one layer, the distributions of the feature-map
values of its lowest- and highest-entropy filters side by side, each with its entropy (what SFM scores). The
package computes the histograms (:func:`prunekit.analysis.views.value_histograms`); this module draws them."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages.ui.cached import probe
from pages.ui.figures import legible
from prunekit.analysis.views import value_histograms

SHOWN = 3  # filters per side


@st.cache_data(show_spinner="Reading the layer's feature maps over the probe images...", max_entries=16)
def _histograms(_model, key: str, layer: str, dataset: str, n: int, _images) -> pd.DataFrame:
    return value_histograms(_model, layer, _images)


def entropy_figure(hist: pd.DataFrame, k: int = SHOWN) -> go.Figure:
    """Two rows of ``k`` panels: the value histograms of the ``k`` lowest-entropy filters (top, red) and the ``k``
    highest (bottom, blue) of one layer, from :func:`prunekit.analysis.views.value_histograms`'s table; each titled with
    the filter and its entropy in nats."""
    ent = hist.groupby("filter")["entropy"].first().sort_values(kind="stable")
    low, high = ent.index[:k].tolist(), ent.index[-k:][::-1].tolist()
    titles = [f"filter #{f}: H = {ent[f]:.2f} nats" for f in (*low, *high)]
    fig = make_subplots(rows=2, cols=k, subplot_titles=titles, vertical_spacing=0.25, horizontal_spacing=0.07)
    for row, (filters, color) in enumerate(((low, "#d62728"), (high, "#2f6fed")), start=1):
        for col, f in enumerate(filters, start=1):
            h = hist[hist["filter"] == f]
            share = h["count"] / max(int(h["count"].sum()), 1)
            fig.add_bar(x=(h["left"] + h["right"]) / 2, y=share, width=h["right"] - h["left"], marker_color=color,
                        row=row, col=col, hovertemplate="value %{x:.3g}: %{y:.1%} of the values<extra></extra>")
    fig.update_yaxes(tickformat=".0%", nticks=4)
    fig.update_yaxes(title_text="share of values", col=1)
    fig.update_xaxes(nticks=4, tickformat=".3~g", title_text="feature-map value")
    fig.update_layout(height=540, showlegend=False, bargap=0.02)
    return legible(fig)


def entropy_ui(sel, layers: list[str]) -> None:
    """The layer picker, the figure and what it shows (says so when there are no probe images)."""
    layer = st.selectbox("Layer", layers, key="sal_entropy_layer",
                         help="Any conv of the model; its filters' responses are read over the probe images.")
    images = probe(sel.dataset, sel.probe_n) if sel.data_path is not None else None
    if images is None:
        st.info("This view reads the feature maps of the probe images, and there are none here: the Model & data "
                "page says how to get the data set.", icon=":material/folder_off:")
        return
    hist = _histograms(sel.model, sel.key, layer, sel.dataset, sel.probe_n, images)
    st.plotly_chart(entropy_figure(hist), width="stretch", key="sal_entropy")
    st.caption(f"Every value of a filter's feature map over the {sel.probe_n} probe images ({sel.dataset} training "
               "images), binned into 32 bins between its smallest and largest value. The **entropy** H = -Σ p log p "
               "of that histogram is large when the values spread over many bins (the filter answers differently "
               "to different images and places: it carries information) and small when they pile up in a few "
               "(top row, red: nearly always the same answer, e.g. 0 after a ReLU). SFM scores a filter by this "
               "entropy and prunes the lowest first; the histogram estimator is prunekit's reconstruction "
               "(sfm_entropy's defaults: pooled values, read after a residual add where there is one).")
