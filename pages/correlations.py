"""Correlations: which filters of a layer repeat each other (their weights, or their feature maps over the probe
images); click a cell to set the two filters side by side."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages.ui.cached import probe, split
from pages.ui.figures import legible
from pages.ui.scoring import scores_with_progress
from pages.ui.sidebar import page_with_model
from pages.ui.state import chosen_criterion
from prunekit import conv_layers
from prunekit.analysis.views import correlated_pairs, feature_correlation, feature_maps, filter_kernels, weight_correlation
from prunekit.errors import UserError

WEIGHTS, FEATURES = "weights", "feature maps (probe images)"
CLICKABLE_MAX = 128  # filters: above this the matrix is a plain heatmap (a scatter of C*C squares gets heavy)
CHART_PX = 540


@st.cache_data(show_spinner=False, max_entries=16)
def _layers(_model, key: str) -> dict[str, int]:
    return {layer.name: layer.out_channels for layer in conv_layers(_model)}


@st.cache_data(show_spinner="Correlating the filters' weights...", max_entries=64)
def _weight_corr(_model, key: str, layer: str):
    return weight_correlation(_model, layer)


@st.cache_data(show_spinner="Correlating the feature maps over the probe images...", max_entries=64)
def _feature_corr(_model, key: str, layer: str, dataset: str, n: int):
    return feature_correlation(_model, layer, probe(dataset, n))


@st.cache_data(show_spinner=False, max_entries=64)
def _maps(_model, key: str, layer: str, dataset: str, index: int):
    test = split(dataset, "test")
    return feature_maps(_model, layer, test.normalize(test.images[index:index + 1]))


def correlation(sel, layer: str, source: str):
    """The layer's Correlation, or None (with a message) when feature maps are asked for without data."""
    if source == WEIGHTS:
        return _weight_corr(sel.model, sel.key, layer)
    if sel.data_path is None or probe(sel.dataset, sel.probe_n) is None:
        st.warning(f"Feature-map correlations read the probe images, and there is no {sel.dataset} data (see the "
                   "Model & data page for how to get it). The weights view works without data.",
                   icon=":material/folder_off:")
        return None
    return _feature_corr(sel.model, sel.key, layer, sel.dataset, sel.probe_n)


def matrix_figure(corr) -> go.Figure:
    """The ordered matrix: a scatter of square markers (clickable) or, for wide layers, a heatmap; |r| from 0
    (white) to 1 (dark red)."""
    cells, c = corr.cells(), len(corr.order)
    hover = "filter %{customdata[0]} × filter %{customdata[1]}<br>|r| = %{customdata[2]:.3f}<extra></extra>"
    colors = dict(colorscale="Reds", cmin=0, cmax=1, colorbar=dict(title="|r|", thickness=14))
    if c > CLICKABLE_MAX:
        fig = go.Figure(go.Heatmap(z=corr.ordered(), zmin=0, zmax=1, colorscale="Reds",
                                   customdata=cells[["i", "j", "r"]].to_numpy().reshape(c, c, 3),
                                   hovertemplate=hover, colorbar=colors["colorbar"]))
    else:
        trace = go.Scattergl if c > 64 else go.Scatter
        size = max(2.0, (CHART_PX - 80) / c * 0.92)
        fig = go.Figure(trace(x=cells["col"], y=cells["row"], mode="markers",
                              customdata=cells[["i", "j", "r"]].to_numpy(), hovertemplate=hover,
                              marker=dict(symbol="square", size=size, color=cells["r"], line_width=0, **colors)))
    labels = dict(tickvals=list(range(c)), ticktext=[str(i) for i in corr.order])
    ticks = labels if c <= 32 else dict(showticklabels=False)
    fig.update_xaxes(title="filter (clustering order)", range=[-0.5, c - 0.5], showgrid=False, zeroline=False,
                     constrain="domain", tickangle=-90 if c > 16 else 0, **ticks)
    fig.update_yaxes(title="filter (clustering order)", range=[c - 0.5, -0.5], showgrid=False, zeroline=False,
                     scaleanchor="x", constrain="domain", **ticks)
    fig.update_layout(height=CHART_PX, plot_bgcolor="white", clickmode="event+select", dragmode=False)
    return legible(fig)


def clicked_pair(event, layer: str, source: str) -> None:
    """A new click on a cell sets the pair inputs (drawn after the chart, so their state may still change)."""
    points = event.get("selection", {}).get("points", []) if event else []
    if not points or "customdata" not in points[0]:
        return
    data = points[0]["customdata"]
    i, j = (int(v) for v in (list(data.values()) if isinstance(data, dict) else data)[:2])
    click = (layer, source, i, j)
    if st.session_state.get("corr_click") != click:
        st.session_state["corr_click"] = click
        st.session_state[f"corr_i_{layer}"], st.session_state[f"corr_j_{layer}"] = i, j


def pair_inputs(layer: str, channels: int, top) -> tuple[int, int]:
    """The pair to inspect: two filter numbers (default: the most correlated pair)."""
    default = (int(top.loc[0, "i"]), int(top.loc[0, "j"])) if len(top) else (0, 0)
    a, b = st.columns(2)
    i = a.number_input("Filter i", 0, channels - 1, default[0], key=f"corr_i_{layer}",
                       help=f"0 to {channels - 1}; or click a cell of the matrix")
    j = b.number_input("Filter j", 0, channels - 1, default[1], key=f"corr_j_{layer}",
                       help=f"0 to {channels - 1}; or click a cell of the matrix")
    return int(i), int(j)


def pair_scores(sel, criterion: str):
    """Per-filter scores by the chosen criterion (l1's, with a note, when it cannot run here) and its name."""
    table = scores_with_progress(sel, criterion, allow_slow=False)
    return table, table.attrs["criterion"]


def kernels_figure(filters: list[tuple[int, np.ndarray]]) -> go.Figure:
    """One row per filter (``filters``: (index, :func:`prunekit.analysis.views.filter_kernels`' (1 + m, kh, kw))):
    its mean kernel, then its kernels on the first input channels, all on one colour scale symmetric about 0 (one
    colour bar), so that the two filters' weights compare by colour."""
    cols = len(filters[0][1])
    names = ["mean over inputs", *(f"input channel {k}" for k in range(cols - 1))]
    fig = make_subplots(rows=len(filters), cols=cols, subplot_titles=names, horizontal_spacing=0.04,
                        vertical_spacing=0.08)
    for row, (f, kernels) in enumerate(filters, start=1):
        for k, w in enumerate(kernels):
            fig.add_trace(go.Heatmap(z=w, coloraxis="coloraxis",
                                     hovertemplate=f"filter {f}: weight %{{z:.4f}}<extra></extra>"), row=row, col=k + 1)
        fig.update_yaxes(title_text=f"filter {f}", row=row, col=1)
    top = float(max(np.abs(k).max() for _, k in filters)) or 1.0
    fig.update_xaxes(showticklabels=False, ticks="", constrain="domain")
    fig.update_yaxes(showticklabels=False, ticks="", autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_layout(height=130 * len(filters) + 60, coloraxis=dict(
        colorscale="RdBu", reversescale=True, cmin=-top, cmax=top, colorbar=dict(title="weight", thickness=14)))
    return legible(fig)


def map_figure(fmap, title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=fmap, colorscale="Viridis", colorbar=dict(title="activation", thickness=14),
                               hovertemplate="x %{x}, y %{y}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False, ticks="", constrain="domain")
    fig.update_xaxes(showticklabels=False, ticks="", constrain="domain")
    fig.update_layout(height=280, title=dict(text=title))
    return legible(fig)


def filter_metric(col, table, layer: str, f: int, criterion: str) -> None:
    if table is None:
        return
    row = table[(table["layer"] == layer) & (table["filter"] == f)].iloc[0]
    n = int((table["layer"] == layer).sum())
    col.metric(f"Score of filter {f} ({criterion})", f"{row['score']:.4g}",
               help=f"rank {int(row['rank'])} of {n} in this layer (1 = most important)")


def pair_view(sel, corr, layer: str, i: int, j: int) -> None:
    """The two filters side by side: correlation, scores, kernels and feature maps on one test image."""
    criterion = chosen_criterion()
    table, criterion = pair_scores(sel, criterion)
    st.subheader(f"Filter {i} and filter {j} of {layer}")
    cols = st.columns(3)
    cols[0].metric("|r| between them", f"{corr.matrix[i, j]:.3f}",
                   help="absolute Pearson correlation, 0 = unrelated, 1 = the same up to scale and sign")
    filter_metric(cols[1], table, layer, i, criterion)
    filter_metric(cols[2], table, layer, j, criterion)
    if i == j:
        st.info("That is one filter with itself (the diagonal, always 1): pick two different filters.")
    test = split(sel.dataset, "test") if sel.data_path is not None else None
    image_col, right = st.columns([1, 6])
    index = test_image(image_col, test, sel.dataset)
    with right:
        st.markdown("**Weights (kernels)**, both filters on one colour scale")
        st.plotly_chart(kernels_figure([(f, filter_kernels(sel.model, layer, f)) for f in (i, j)]), width="stretch",
                        key="corr_kernels")
        for side, (col, f) in enumerate(zip(st.columns(2), (i, j))):
            with col:
                st.markdown(f"**Filter {f}**")
                if index is not None:
                    maps = _maps(sel.model, sel.key, layer, sel.dataset, index)
                    st.plotly_chart(map_figure(maps[f].numpy(), f"feature map on test image {index}"),
                                    width="stretch", key=f"corr_map_{side}")
    st.caption("Top: each filter's kernel averaged over its input channels, then its kernels on the first input "
               "channels, both filters on one scale (red positive, blue negative, white 0). Bottom: what each "
               "filter answers on the test image at the left; two highly correlated filters draw nearly the same "
               "(or the inverted) map, so one could go.")


def test_image(col, test, dataset: str) -> int | None:
    """The test image the feature maps are drawn on (its number and thumbnail), None without data."""
    with col:
        if test is None:
            st.info(f"No {dataset} data: the feature maps need images (see the Model & data page).")
            return None
        index = int(st.number_input("Test image", 0, len(test) - 1, 0, key="corr_image",
                                    help=f"which of the {len(test)} test images to pass through the model"))
        st.image(test.images[index].permute(1, 2, 0).numpy(), width="stretch",
                 caption=f"test image {index}: {test.classes[int(test.labels[index])]}")
    return index


def top_pairs_table(top) -> None:
    st.markdown("**Most correlated pairs**")
    st.dataframe(top.rename(columns={"i": "filter i", "j": "filter j", "r": "|r|"}), hide_index=True,
                 width="stretch", height=388,
                 column_config={"|r|": st.column_config.ProgressColumn("|r|", format="%.3f", min_value=0,
                                                                       max_value=1)})
    st.caption("The ten pairs of distinct filters with the highest |r| in this layer. Near 1: the two filters "
               "carry the same information, and pruning one of them loses little.")


sel = page_with_model(
    "Correlations",
    "Which filters of a layer repeat each other: the redundancy that the independence criterion prunes.")

try:
    channels = _layers(sel.model, sel.key)
except UserError as exc:
    st.error(f"Cannot list this model's convolutions: {exc}")
    st.stop()
top_row = st.columns([3, 2])
layer = top_row[0].selectbox("Layer", list(channels), key="corr_layer",
                             format_func=lambda n: f"{n} ({channels[n]} filters)")
source = top_row[1].radio("Correlate the filters'", [WEIGHTS, FEATURES], horizontal=True, key="corr_source",
                          help="weights: |Pearson| of the flattened kernels (no data needed); feature maps: of "
                               "their outputs over the probe images (every image and position).")
corr = correlation(sel, layer, source)
if corr is None:
    st.stop()

top = correlated_pairs(corr, 10)
left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader(f"|r| between the {channels[layer]} filters of {layer}")
    clickable = channels[layer] <= CLICKABLE_MAX
    event = st.plotly_chart(matrix_figure(corr), width="stretch", key=f"corr_matrix_{layer}_{source}",
                            **(dict(on_select="rerun", selection_mode="points") if clickable else {}))
    if clickable:
        clicked_pair(event, layer, source)
    st.caption("Each square is a pair of filters, dark red when their "
               + ("weights" if source == WEIGHTS else "feature maps") + " are strongly correlated (|r| near 1), "
               "white when unrelated; the diagonal is each filter with itself. Rows and columns are in clustering "
               "order, so red blocks are groups of redundant filters" + (": click a square to compare the two."
                                                                          if clickable else "."))
with right:
    st.markdown("**Compare two filters**")
    i, j = pair_inputs(layer, channels[layer], top)
    top_pairs_table(top)

pair_view(sel, corr, layer, i, j)

with st.expander("How to read a correlation matrix, and what it means for pruning"):
    st.markdown(
        "- **|r|** is the absolute Pearson correlation of two filters: of their flattened weights, or of their "
        "feature maps over every probe image and position. A sign flip counts as the same information.\n"
        "- **High |r|** means redundancy: the next layer can get the same signal from either filter, so removing "
        "one costs little accuracy. Low-norm filters are not the only candidates: a strong filter that repeats "
        "another is one too.\n"
        "- The **information independence** criterion (Tang et al., arXiv 2303.03645, seed 002) scores a filter "
        "by its mean 1 - |r| with the others of its layer: a filter that repeats many others scores low. "
        "prunekit reconstructs it from the abstract (weights' |Pearson|; methods.md); `independence` and "
        "`information` (capacity + independence) on the Saliency page use it.\n"
        "- **Clustering order**: average-linkage clustering on the distance 1 - |r| puts correlated filters "
        "side by side, so redundant groups show as red blocks on the diagonal."
    )
