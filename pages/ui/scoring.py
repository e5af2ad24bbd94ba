"""The selected model's scores for the pages: from this process's :class:`prunekit.criteria.cache.ScoreCache`, else
:func:`prunekit.criteria.scores.score_model` (its disk cache, else computed) with a progress bar.

(Not st.cache_data: that cannot replay a progress bar drawn from inside the computation.)"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.ui.sidebar import Selection
from prunekit.analysis.reliability import probe_reliability
from prunekit.criteria.cache import ScoreCache
from prunekit.criteria.scores import score_model
from prunekit.defaults import FALLBACK_CRITERION

SCORES_KEPT = 64  # score tables (and reliability tables) this process keeps in memory


@st.cache_resource
def score_cache() -> ScoreCache:
    """This process's score tables, shared by every session."""
    return ScoreCache(SCORES_KEPT)


def _key(kind: str, sel: Selection, criterion: str, params: dict | None, **flags: bool) -> tuple:
    return ScoreCache.key(kind, sel.key, criterion, params, sel.probe_spec, sel.data_path, **flags)


def scores(sel: Selection, criterion: str, params: dict | None = None, progress=None, *,
           fallback: bool = True, allow_slow: bool = True) -> pd.DataFrame:
    """The per-filter scores of the selected model by ``criterion`` (columns layer, filter, criterion, score,
    rank; one row per filter of every conv), computed with ``progress(done, total)`` when not cached. With
    ``fallback``, a criterion that cannot run here (no images, a model that cannot take them, or slow and not
    ``allow_slow``) gives the fallback criterion's scores, with the reason in ``attrs["fallback"]``; without,
    DataNotFoundError or UserError. UserError for bad parameters."""
    return score_cache().get_or_compute(
        _key("scores", sel, criterion, params, fallback=fallback, allow_slow=allow_slow),
        lambda: score_model(sel.model, criterion, params, probe=sel.probe_spec, progress=progress,
                            fallback=FALLBACK_CRITERION if fallback else None, allow_slow=allow_slow,
                            unfit=sel.data_problem))


def has_scores(sel: Selection, criterion: str, params: dict | None = None, *, fallback: bool = True,
               allow_slow: bool = True) -> bool:
    """Whether :func:`scores` would answer from memory at once."""
    return _key("scores", sel, criterion, params, fallback=fallback, allow_slow=allow_slow) in score_cache()


def reliability_of(sel: Selection, criterion: str, params: dict | None = None, progress=None) -> pd.DataFrame:
    """How reproducible the criterion's ranking is on the selected model
    (:func:`prunekit.analysis.reliability.probe_reliability` on the sidebar's probe), from this process's memory
    when it was measured before."""
    return score_cache().get_or_compute(
        _key("reliability", sel, criterion, params),
        lambda: probe_reliability(sel.model, criterion, params, sel.probe_spec, progress=progress))


def progress_bar(label: str):
    """An st.progress bar and the progress(done, total) callback that fills it."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label}: {done} of {total}")
    return bar, update


def scores_with_progress(sel: Selection, criterion: str, params: dict | None = None, *, fallback: bool = True,
                         allow_slow: bool = True) -> pd.DataFrame:
    """:func:`scores` with a progress bar while computing (none when in memory) and, when another criterion's
    scores came back, a note on the page saying why."""
    if has_scores(sel, criterion, params, fallback=fallback, allow_slow=allow_slow):
        df = scores(sel, criterion, params, fallback=fallback, allow_slow=allow_slow)
    else:
        bar, progress = progress_bar(f"Scoring every filter by {criterion}")
        try:
            df = scores(sel, criterion, params, fallback=fallback, allow_slow=allow_slow, progress=progress)
        finally:
            bar.empty()
    if df.attrs.get("fallback"):
        st.info(df.attrs["fallback"], icon=":material/info:")
    return df
