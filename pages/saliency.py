"""Saliency: score every filter with a criterion of the registry, see each layer's score distribution,
preview a threshold, and check how far criteria (and checkpoints) agree on which filters matter least."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages.ui.agreement import agreement_ui, compute, reliability_chart, reliability_ui, stability_ui
from pages.ui.entropy_view import entropy_ui
from pages.ui.figures import legible
from pages.ui.scoring import has_scores
from pages.ui.sidebar import page_with_model
from pages.ui.state import CRITERION, chosen_criterion
from prunekit.analysis.views import score_histogram
from prunekit.criteria import criterion_class, get_criterion, list_criteria
from prunekit.data import DataNotFoundError
from prunekit.defaults import BOTTOM_FRACTION as BOTTOM
from prunekit.errors import UserError

NCOLS = 5  # small multiples per row: about 150 px each in the main column at 1280 px
PANEL_PX, GAP_PX = 120, 64  # a small multiple's height, and the gap under it (tick labels, the next row's titles)
WEIGHT_ONLY = ", ".join(n for n in list_criteria() if not criterion_class(n).needs_data)


def units(name: str) -> str:
    """The axis title of a criterion's score."""
    return f"{name}: {criterion_class(name).unit}"


def family(name: str) -> str:
    """'from the papers (seed 00n)' or 'baseline', for the criterion menu."""
    seed = criterion_class(name).seed_doc
    return "baseline" if seed is None else f"from the papers (seed {seed:03d})"


def menu_label(name: str) -> str:
    """'sfm_entropy · paper 000' or 'l1 · baseline': short enough for the menu's box at 1280 px."""
    seed = criterion_class(name).seed_doc
    return f"{name} · " + ("baseline" if seed is None else f"paper {seed:03d}")


# ----------------------------------------------------------------------------------------------
# The criterion and its parameters


def param_widget(name: str, p) -> object:
    """One widget for a criterion parameter (type, range and choices from its Param)."""
    key, help_ = f"sal_param_{name}_{p.name}", f"{p.doc}. Allowed: {p.allowed()}; default {p.default!r}."
    if p.choices is not None:
        return st.selectbox(p.name, p.choices, index=p.choices.index(p.default), key=key, help=help_)
    if isinstance(p.default, bool):
        return st.toggle(p.name, value=p.default, key=key, help=help_)
    if isinstance(p.default, int):
        return st.number_input(p.name, value=p.default, step=1, key=key, help=help_,
                               min_value=None if p.low is None else int(p.low),
                               max_value=None if p.high is None else int(p.high))
    if isinstance(p.default, float):
        return st.number_input(p.name, value=p.default, key=key, help=help_, format="%g",
                               min_value=None if p.low is None else float(p.low),
                               max_value=None if p.high is None else float(p.high))
    return st.text_input(p.name, value=p.default, key=key, help=help_)


def needs_line(cls) -> str:
    """What a criterion reads, in words."""
    if not cls.needs_data:
        return ":material/scale: **weight-only**: no images needed"
    what = "box-labelled images (objects pasted on 64x64 canvases)" if cls.needs_boxes else "probe images"
    return f":material/image: **reads {what}**" + (" and their labels" if cls.needs_labels else "")


def criterion_ui() -> tuple[str, dict]:
    """The criterion menu, its help and parameter widgets -> (name, the parameters that differ from their
    defaults). The name is kept in st.session_state[CRITERION] for the other pages."""
    names = list_criteria()
    current = chosen_criterion()
    left, right = st.columns([2, 3], gap="large")
    with left:
        name = st.selectbox("Criterion", names, index=names.index(current) if current in names else 0,
                            format_func=menu_label, key="sal_criterion",
                            help="'paper 00n': a criterion from the papers, reconstructed from seed document n; "
                                 "'baseline': a standard method they are compared with.")
        st.session_state[CRITERION] = name
        cls = criterion_class(name)
        st.markdown(needs_line(cls))
        values = {p.name: param_widget(name, p) for p in cls.params}
    with right:
        st.markdown(f"**{name}** · {family(name)}")
        text = cls.description
        for word in ("Established:", "Reconstructed:", "established,", "Reconstructed (methods.md):"):
            text = text.replace(word, f"**{word}**")
        st.markdown(text)
        if cls.seed_doc is not None:
            st.caption(":material/construction: Parts marked **Reconstructed** are prunekit's reading of a paper "
                       "known only from its abstract: the choices are documented, not the authors' code.")
    return name, {k: v for k, v in values.items() if v != next(p.default for p in cls.params if p.name == k)}


def no_data_message(name: str, sel) -> None:
    st.warning(f"**{name} reads images, and there is no {sel.dataset} data.** The sidebar says where prunekit "
               f"looked; the Model & data page says how to get it. Weight-based criteria still work without "
               f"data: {WEIGHT_ONLY}.", icon=":material/folder_off:")


def score_ui(sel, name: str, params: dict) -> pd.DataFrame | None:
    """The scores of the chosen criterion: at once when in memory or weight-only, else after 'Score'."""
    try:
        crit = get_criterion(name, **params)
    except UserError as exc:
        st.error(f"{exc}. Change the parameter and the scores follow.", icon=":material/error:")
        return None
    if crit.caveat:
        st.warning(crit.caveat, icon=":material/warning:")
    if crit.needs_data and sel.data_path is None:
        no_data_message(name, sel)
        return None
    if not has_scores(sel, name, params, fallback=False) and crit.needs_data:
        if crit.slow:
            budget = crit.config.get("budget_s", 600.0)
            st.warning(f"{name} is slow: it evaluates the probe set once per random mask, thousands of times; "
                       f"expect up to **{budget / 60:.0f} minutes** (its time budget, `budget_s`) on this machine, "
                       "during which this page waits. Lower `budget_s` or `samples` for a quicker, rougher "
                       "fit.", icon=":material/hourglass_top:")
        if not st.button(f"Score every filter with {name}", type="primary", icon=":material/play_arrow:"):
            st.info(f"{name} reads {sel.probe_n} probe images (sidebar). Press the button to score; the result "
                    "stays in memory for every page.", icon=":material/info:")
            return None
    try:
        return compute(sel, name, params, f"Scoring with {name}")
    except DataNotFoundError:
        no_data_message(name, sel)
    except (UserError, RuntimeError) as exc:
        st.error(f"{name} could not score this model: {exc}", icon=":material/error:")
    return None


# ----------------------------------------------------------------------------------------------
# Distributions


def small_multiples(df: pd.DataFrame, name: str) -> None:
    st.plotly_chart(_small_multiples_figure(df.attrs.get("key", ""), name, df), width="stretch",
                    key="sal_small_multiples")
    st.caption(f"One histogram per conv layer, in forward order: x is the filter's score ({units(name)}), y how "
               "many filters have it, each layer on its own x range. A long left tail means a few filters stand "
               "out as weak; a narrow spike means the criterion barely tells the filters apart there.")


@st.cache_data(show_spinner=False, max_entries=32)
def _small_multiples_figure(key: str, name: str, _df: pd.DataFrame) -> go.Figure:
    """The figure of every layer's histogram, built once per score table (``key``: the table's cache key)."""
    df = _df
    hist = score_histogram(df, bins=12)
    layers = list(dict.fromkeys(df["layer"]))
    rows = -(-len(layers) // NCOLS)
    plot_px = rows * PANEL_PX + (rows - 1) * GAP_PX
    fig = make_subplots(rows=rows, cols=NCOLS, subplot_titles=layers, horizontal_spacing=0.05,
                        vertical_spacing=GAP_PX / plot_px,
                        x_title=f"score ({units(name)}), each panel on its own range")
    for i, layer in enumerate(layers):
        h = hist[hist["layer"] == layer]
        fig.add_bar(x=(h["left"] + h["right"]) / 2, y=h["count"], width=h["right"] - h["left"],
                    marker_color="#2f6fed", name=layer, row=i // NCOLS + 1, col=i % NCOLS + 1,
                    hovertemplate=f"{layer}<br>score %{{x:.3g}}<br>%{{y}} filters<extra></extra>")
    fig.update_layout(height=plot_px + 90, showlegend=False, bargap=0.05)
    fig.update_xaxes(nticks=4, tickformat=".3~g")
    fig.update_yaxes(nticks=3)
    fig.update_yaxes(title_text="filters", col=1)  # each row's; the score's title is the grid's (x_title)
    return legible(fig)


@st.fragment
def threshold_ui(df: pd.DataFrame, name: str) -> None:
    """One layer large: its histogram and its filters sorted by score, split by a threshold."""
    layers = list(dict.fromkeys(df["layer"]))
    left, right = st.columns([1, 2])
    layer = left.selectbox("Layer", layers, key="sal_layer", help="Any conv of the model, in forward order.")
    rows = df[df["layer"] == layer].sort_values(["score", "filter"])
    lo, hi = float(rows["score"].min()), float(rows["score"].max())
    if lo == hi:
        st.info(f"Every filter of {layer} scores {lo:.4g}: a threshold cannot split them.", icon=":material/info:")
        return
    threshold = right.slider(f"Threshold ({units(name)})", lo, hi, float(rows["score"].quantile(BOTTOM)),
                             step=(hi - lo) / 200, format="%.4g", key=f"sal_thr_{name}_{layer}",
                             help="Filters scoring below it are the ones a threshold pruner would remove.")
    below = rows["score"] < threshold
    st.markdown(f"**{int(below.sum())} of {len(rows)} filters below the threshold would be pruned** in `{layer}`.")
    colors = ["#d62728" if b else "#2f6fed" for b in below]
    a, b = st.columns([1, 2])
    with a:
        fig = go.Figure()
        for mask, label, color in ((below, "below: pruned", "#d62728"), (~below, "kept", "#2f6fed")):
            fig.add_histogram(x=rows["score"][mask], name=label, marker_color=color,
                              xbins=dict(start=lo, end=hi + (hi - lo) / 40, size=(hi - lo) / 20))
        fig.add_vline(x=threshold, line_dash="dash", line_color="#333")
        fig.update_layout(barmode="stack", height=340, xaxis_title=units(name), yaxis_title="filters",
                          legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
        st.plotly_chart(legible(fig), width="stretch", key="sal_layer_hist")
        st.caption("The layer's score distribution; the dashed line is the threshold. Red filters fall below "
                   "it and would go, blue ones stay.")
    with b:
        fig = go.Figure(go.Bar(x=[f"#{f}" for f in rows["filter"]], y=rows["score"], marker_color=colors,
                               hovertemplate="filter %{x}<br>score %{y:.4g}<extra></extra>"))
        fig.add_hline(y=threshold, line_dash="dash", line_color="#333")
        fig.update_layout(height=340, yaxis_title=units(name),
                          xaxis=dict(title="filter, lowest score first", type="category"))
        st.plotly_chart(legible(fig), width="stretch", key="sal_sorted")
        st.caption("Every filter of the layer as one bar, sorted from the lowest score (pruned first) to the "
                   "highest. A smooth ramp means no natural cut; a step means the criterion sees two kinds of "
                   "filters.")


def ranking_table(df: pd.DataFrame) -> None:
    layers = list(dict.fromkeys(df["layer"]))
    pick = st.selectbox("Show", ["all layers", *layers], key="sal_table_layer")
    view = df if pick == "all layers" else df[df["layer"] == pick]
    st.dataframe(view[["layer", "filter", "score", "rank"]], hide_index=True, width="stretch", height=280,
                 column_config={"score": st.column_config.NumberColumn(format="%.5g"),
                                "rank": st.column_config.NumberColumn(help="1 = the layer's most important")})
    st.caption(f"{len(view)} filters. rank is the place within the layer, 1 = the highest score; sort a column by "
               "clicking its header.")


# ----------------------------------------------------------------------------------------------

sel = page_with_model(
    "Saliency",
    "Score every filter with one criterion, see which filters it calls weak, and whether other criteria "
    "(and an earlier checkpoint) agree.")

st.subheader("Criterion")
criterion, criterion_params = criterion_ui()
df = score_ui(sel, criterion, criterion_params)
if df is None:
    st.stop()
floor = reliability_ui(sel, criterion, criterion_params)

# one section at a time (a lecture shows one idea per screen); every tab is drawn on each run, so switching is
# instant; the key keeps the open tab when a run adds or drops an element above the tabs (a button, a warning)
(distributions, one_layer, entropy, ranking, reliable, agree, stable) = st.tabs(
    [":material/bar_chart: Distributions", ":material/tune: One layer", ":material/equalizer: Entropy",
     ":material/format_list_numbered: Ranking", ":material/verified: Reliability",
     ":material/compare_arrows: Criteria agree?", ":material/history: Stability"], key="sal_section")
with distributions:
    st.subheader(f"Score distribution of every layer ({len(df)} filters, {df['layer'].nunique()} conv layers)")
    small_multiples(df, criterion)
with one_layer:
    st.subheader("One layer, with a threshold")
    threshold_ui(df, criterion)
with entropy:
    st.subheader("What is a filter's entropy?")
    entropy_ui(sel, list(dict.fromkeys(df["layer"])))
with ranking:
    st.subheader("Ranking")
    ranking_table(df)
with reliable:
    st.subheader("Reliability: the ranking on two samples of probe images")
    reliability_chart(criterion, floor)
with agree:
    st.subheader("Do criteria agree?")
    agreement_ui(sel, criterion, criterion_params, df)
with stable:
    st.subheader("Rank stability: epoch 1 vs final weights")
    stability_ui(sel, criterion, criterion_params, df, floor)
