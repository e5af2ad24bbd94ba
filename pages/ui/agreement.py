"""How far a ranking can be trusted, for the Saliency page: is it reproducible on another sample of probe images
(reliability), do other criteria agree, and does an early checkpoint already rank the filters as the final one."""
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.ui.figures import agreement_bars, legible
from pages.ui.scoring import has_scores, progress_bar, reliability_of, scores
from pages.ui.sidebar import DEFAULT_SOURCE
from prunekit import load_checkpoint
from prunekit.analysis.reliability import summarize
from prunekit.analysis.views import rank_agreement
from prunekit.criteria import criterion_class, list_criteria
from prunekit.criteria.scores import weights_hash
from prunekit.data import DataNotFoundError
from prunekit.defaults import BOTTOM_FRACTION as BOTTOM
from prunekit.errors import UserError
from prunekit.models.checkpoints import EARLY_CHECKPOINT

__all__ = ["reliability_ui", "reliability_chart", "agreement_ui", "stability_ui"]


def compute(sel, name: str, params: dict, label: str) -> pd.DataFrame:
    """scores() with a progress bar that disappears when done."""
    bar, update = progress_bar(label)
    try:
        return scores(sel, name, params, progress=update, fallback=False)
    finally:
        bar.empty()


def reliability(sel, name: str, params: dict) -> pd.DataFrame | None:
    """The ranking's reliability between two disjoint probe samples (computed alongside the scores), or None for a
    weight-only criterion or when it cannot be computed (said on the page)."""
    if not criterion_class(name).needs_data:
        return None
    bar, update = progress_bar(f"Scoring {name} again on a second sample of probe images")
    try:
        return reliability_of(sel, name, params, progress=update)
    except (DataNotFoundError, UserError, RuntimeError) as exc:
        st.warning(f"The reliability of {name}'s ranking could not be measured: {exc}", icon=":material/warning:")
        return None
    finally:
        bar.empty()


def weight_only_note(name: str) -> None:
    st.caption(f":material/verified: {name} reads the weights only: its ranking is the same on any probe images "
               "(reliability 1 by construction).")


def reliability_ui(sel, name: str, params: dict) -> pd.DataFrame | None:
    """Beside the criterion: how reproducible each layer's ranking is, summed up (per layer:
    :func:`reliability_chart`); returns the per-layer table, None when there is none."""
    table = reliability(sel, name, params)
    if table is None:
        if not criterion_class(name).needs_data:
            weight_only_note(name)
        return None
    s = summarize(table)
    cols = st.columns(3)
    cols[0].metric("Reliability (median Spearman)", f"{s['median_spearman']:.2f}",
                   help="per layer, the Spearman correlation of the two rankings; the median over layers")
    cols[1].metric("Worst layer", f"{s['min_spearman']:.2f}")
    cols[2].metric(f"Bottom-{BOTTOM:.0%} overlap (median)", f"{s['median_overlap']:.2f}")
    return table


def reliability_chart(name: str, table: pd.DataFrame | None) -> None:
    """Per layer, the agreement of the rankings on two probe samples (``table``: :func:`reliability_ui`'s), or
    why there is none."""
    if table is None:
        if criterion_class(name).needs_data:
            st.info(f"No reliability for {name} here: it could not be measured (said above).", icon=":material/info:")
        else:
            weight_only_note(name)
        return
    a = table.attrs
    fig = agreement_bars(table, "Spearman", f"bottom-{BOTTOM:.0%} overlap", "agreement of two samples", 360)
    st.plotly_chart(fig, width="stretch", key="sal_reliability")
    st.caption(f"How reproducible {name}'s ranking is: the same model scored on two disjoint samples of {a['n']} "
               f"probe images (seeds {a['seeds'][0]} and {a['seeds'][1]}), each layer's two rankings compared. "
               "Near 1, the ranking is a property of the filters; near 0, it is sampling noise, and pruning by it "
               "in that layer is a coin toss.")


def agreement_tables(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """rank_agreement of every pair, one tidy frame with a 'pair' column (cached by the tables' cache keys)."""
    return _agreement_tables(tuple((n, t.attrs.get("key", "")) for n, t in tables.items()), tables)


@st.cache_data(show_spinner=False, max_entries=32)
def _agreement_tables(keys: tuple, _tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    tables = _tables
    names = list(tables)
    frames = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            frames.append(rank_agreement(tables[a], tables[b], bottom=BOTTOM).assign(pair=f"{a} vs {b}"))
    return pd.concat(frames, ignore_index=True)


def heatmap(agree: pd.DataFrame, column: str, zmin: float, title: str, key: str) -> None:
    z = agree.pivot(index="layer", columns="pair", values=column).reindex(
        index=list(dict.fromkeys(agree["layer"])), columns=list(dict.fromkeys(agree["pair"])))
    fig = go.Figure(go.Heatmap(z=z.to_numpy(), x=list(z.columns), y=list(z.index), zmin=zmin, zmax=1,
                               colorscale="RdBu" if zmin < 0 else "Blues", texttemplate="%{z:.2f}",
                               colorbar=dict(title=title, thickness=12),
                               hovertemplate="%{y}<br>%{x}<br>" + title + " %{z:.3f}<extra></extra>"))
    fig.update_layout(height=max(320, 24 * len(z) + 110), yaxis=dict(autorange="reversed", title="conv layer"),
                      xaxis=dict(side="top", title="criteria compared"))
    st.plotly_chart(legible(fig), width="stretch", key=key)


def agreement_ui(sel, name: str, params: dict, current: pd.DataFrame) -> None:
    names = list_criteria()
    default = list(dict.fromkeys([name, "l1", "fpgm"]))
    chosen = st.multiselect("Criteria to compare", names, default=default, key="sal_agree",
                            help="Weight-only criteria are scored at once; data-driven ones take seconds (minutes "
                                 "for linear_ensembles, which is compared only once scored above).")
    tables, skipped = {name: current} if name in chosen else {}, []
    for other in chosen:
        if other in tables:
            continue
        cls = criterion_class(other)
        if (cls.needs_data and sel.data_path is None) or (cls.slow and not has_scores(sel, other, fallback=False)):
            skipped.append(other)
            continue
        try:
            tables[other] = compute(sel, other, {}, f"Scoring with {other}")
        except (DataNotFoundError, UserError, RuntimeError):
            skipped.append(other)
    if skipped:
        st.info(f"Left out: {', '.join(skipped)} (no data, or slow and not scored yet: score it above first).",
                icon=":material/info:")
    if len(tables) < 2:
        st.info("Choose at least two criteria that can be scored.", icon=":material/info:")
        return
    agree = agreement_tables(tables)
    a, b = st.columns(2)
    with a:
        st.markdown("**Spearman rank correlation** per layer")
        heatmap(agree, "spearman", -1.0, "Spearman", "sal_agree_rho")
        st.caption("Each cell compares the two criteria's rankings of one layer's filters: 1 = the same order, "
                   "0 = unrelated, -1 = reversed. Blank cells are layers where one criterion scores every filter "
                   "alike.")
    with b:
        st.markdown(f"**Bottom-{BOTTOM:.0%} overlap** per layer")
        heatmap(agree, "overlap", 0.0, "overlap", "sal_agree_overlap")
        st.caption(f"The fraction of the {BOTTOM:.0%} lowest-scored filters (the first to go) that both criteria "
                   f"pick. About {BOTTOM:.0%} is what two random rankings share; 1 means they would prune the very "
                   "same filters.")


@st.cache_resource(show_spinner="Loading the epoch-1 checkpoint...")
def _early_model():
    """The bundled default's epoch-1 weights and their hash (the scores' cache key)."""
    model, _ = load_checkpoint(EARLY_CHECKPOINT)
    return model, weights_hash(model)


def stability_ui(sel, name: str, params: dict, final: pd.DataFrame, floor: pd.DataFrame | None) -> None:
    """Epoch 1 vs final, with the ranking's sampling noise (``floor``: the reliability table, None for a
    weight-only criterion) beside it."""
    if st.session_state.get("model_source", DEFAULT_SOURCE) != DEFAULT_SOURCE:
        st.info("Rank stability compares a model with its own epoch-1 checkpoint: only the bundled default ships "
                "one. For another model, save its weights after the first epoch and compare them in a notebook "
                "with `prunekit.analysis.views.rank_stability`.", icon=":material/info:")
        return
    if not EARLY_CHECKPOINT.exists():
        st.warning(f"The epoch-1 checkpoint {EARLY_CHECKPOINT.name} is missing from assets/.",
                   icon=":material/warning:")
        return
    early_model, key = _early_model()
    early = replace(sel, model=early_model, key=key)
    cls = criterion_class(name)
    if cls.needs_data and not has_scores(early, name, params, fallback=False):
        if not st.button(f"Score the epoch-1 checkpoint with {name}", key="sal_early_button"):
            st.caption("Press the button to score the epoch-1 weights with the same probe images.")
            return
    try:
        table = compute(early, name, params, f"Scoring epoch 1 with {name}")
    except (DataNotFoundError, UserError, RuntimeError) as exc:
        st.warning(f"The epoch-1 checkpoint could not be scored: {exc}", icon=":material/warning:")
        return
    agree = rank_agreement(table, final, bottom=BOTTOM)
    fig = agreement_bars(agree, "Spearman rank correlation", f"bottom-{BOTTOM:.0%} overlap",
                         "agreement, epoch 1 vs final", 380)
    if floor is not None:
        fig.add_scatter(x=floor["layer"], y=floor["spearman"], mode="markers", name="noise floor: two probe samples",
                        marker=dict(symbol="line-ew-open", size=18, color="#222", line=dict(width=3, color="#222")))
    st.plotly_chart(fig, width="stretch", key="sal_stability")
    st.caption(f"For each layer, how much the {name} ranking after one epoch of training predicts the ranking of "
               "the final weights (blue: rank correlation, orange: shared bottom filters). High bars mean the "
               "weak filters are already known early, the premise of pruning early in training (seed 000).")
    if floor is not None:
        st.caption("The black dashes are the final model's Spearman between two samples of probe images: the most "
                   "any comparison can show. A blue bar far below its dash is training changing the ranking; a bar "
                   "near a low dash is sampling noise, not instability.")
