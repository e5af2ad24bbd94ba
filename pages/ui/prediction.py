"""The Plan page's live predicted accuracy: each new plan is pruned, recalibrated and evaluated in a background
thread shared by every visitor (:class:`prunekit.runs.latest.LatestWins`: each visitor's newest plan wins, the controls
never wait), and the number is
shown only for the plan it was computed for."""
from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from pages.ui.cached import held_out, split
from pages.ui.last_run import UNPRUNED_ON
from pages.ui.scoring import scores_with_progress
from prunekit.criteria.scores import to_tensors
from prunekit.defaults import HELD_OUT, PREDICTION, RECALIBRATION
from prunekit.pruning.predict import predict_accuracy
from prunekit.runs.latest import LatestWins
from prunekit.text import count

POLL_S = 0.5  # how often the pending number is looked at while it is computed
HELP = (f"The plan applied to a copy of the model, its BatchNorm statistics re-estimated on {RECALIBRATION.n} "
        f"training images (no weight changes), evaluated on {PREDICTION.n} test images (seed {HELD_OUT.seed}). "
        "Recalibrated accuracy tracks the accuracy after fine-tuning far better than the plain accuracy right after "
        "pruning (EagleEye, Li et al., ECCV 2020).")


@st.cache_resource(show_spinner=False)
def predictor() -> LatestWins:
    """The server's one prediction worker, shared by every visitor: each visitor's newest plan waits its turn (one
    request per visitor, so nothing piles up and nothing is lost) and the same plan asked twice is measured once."""
    return LatestWins()


def visitor() -> str:
    """This browser session's id: whose request a prediction is."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "script"


def prediction_key(sel, criterion: str, ratios: dict, round_to: int) -> tuple:
    """What a prediction depends on: the weights, the criterion, the data, the plan's non-zero ratios and
    rounding."""
    return (sel.key, criterion, sel.dataset, sel.probe_n, tuple(sorted((k, v) for k, v in ratios.items() if v > 0)),
            round_to)


def predicted_ui(sel, ratios: dict, criterion: str, round_to: int) -> None:
    """The predicted accuracy of the current plan: asked for in the background, shown when it is there."""
    active = {k: v for k, v in ratios.items() if v > 0}
    data = held_out(sel, PREDICTION.n)
    if data is None or not active:
        st.metric("Predicted accuracy", "-", help=HELP)
        st.caption(f"No prediction: {sel.no_images}" if data is None else
                   "Set a ratio to see the accuracy the plan would keep (measured in the background).")
        return
    train = split(sel.dataset, "train")
    key = prediction_key(sel, criterion, ratios, round_to)
    tensors = to_tensors(scores_with_progress(sel, criterion))  # here: scoring traces the model (never in a thread)

    def work() -> dict:  # in the worker: the unpruned model is evaluated there too, never beside another's trace
        return predict_accuracy(sel.model, active, tensors, sel.input_size, train=train, held_out=data,
                                round_to=round_to)

    predictor().ask(key, work, client=visitor())
    _show(key)


def _show(key: tuple) -> None:
    outcome = predictor().result(key)
    if outcome is None:
        _pending(key)
    elif outcome.error is not None:
        st.metric("Predicted accuracy", "failed", help=HELP)
        st.caption(f"The prediction failed: {outcome.error}")
    else:
        r = outcome.value
        before = r["before"]
        st.metric("Predicted accuracy", f"{r['accuracy']:.1f}%", f"{r['accuracy'] - before:+.1f} pts", help=HELP)
        st.caption(f"This plan, {'recalibrated, ' if r['recalibrated'] else ''}on {r['n']:,} test images (unpruned: "
                   f"{before:.1f}% on the same {r['n']:,}); measured in {r['seconds']:.1f} s.", help=UNPRUNED_ON)


@st.fragment(run_every=POLL_S)
def _pending(key: tuple) -> None:
    """Looks again every POLL_S seconds; when the number is there, the page redraws once with it."""
    if predictor().result(key) is None:
        st.metric("Predicted accuracy", "computing...", help=HELP)
        st.caption(_queue_words(predictor().ahead(key)))
        return
    st.rerun()


def _queue_words(ahead: int | None) -> str:
    """What the pending number waits for: its own measuring, or other visitors' plans measured before it (one at a
    time for the whole server)."""
    if not ahead:
        return "Measuring this plan in the background: the controls stay free."
    return (f"Waiting its turn: {count(ahead, 'plan')} of other visitors before it (the server measures one at a "
            "time); the controls stay free.")
