"""Classroom mode: the audience explores, only the presenter changes things or occupies the machine.

Turned on by ``make app CLASSROOM=1``, ``streamlit run app.py -- --classroom``, ``$PRUNEKIT_CLASSROOM=1`` or
``classroom = true`` in Streamlit's secrets. Everything that reads stays open to every browser: the model, saliency,
feature maps, correlations, plans with their estimate and predicted accuracy, the runs on Compare, the tour. What
writes or holds the CPU/GPU for long (prune, sensitivity curves, the search, queueing, cancelling or resuming a job,
uploading a checkpoint) needs the presenter's key: ``$PRUNEKIT_PRESENTER_KEY``, ``presenter_key`` in the secrets, or
else one drawn once per server (when the first browser arrives) and printed in its terminal, never on a page. A
browser enters it once, in the sidebar's Presenter box. Jobs record who queued them (:func:`visitor`).

>>> if may("prune"):            # False, with the reason drawn, for an audience member in classroom mode
...     prune_it()
"""
from __future__ import annotations

import argparse
import hmac
import os
import secrets
import sys

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

CLASSROOM_ENV, KEY_ENV = "PRUNEKIT_CLASSROOM", "PRUNEKIT_PRESENTER_KEY"
PRESENTER = "presenter"  # session_state: this browser entered the key


def classroom() -> bool:
    """Whether the app serves a class (see the module docstring for the four ways to turn it on)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--classroom", action="store_true")
    if parser.parse_known_args(sys.argv[1:])[0].classroom:
        return True
    if os.environ.get(CLASSROOM_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return bool(_secret("classroom"))


def _secret(name: str):
    try:
        return st.secrets.get(name)
    except Exception:  # noqa: BLE001 - no secrets.toml, or an unreadable one: the secret is simply not set
        return None


@st.cache_resource(show_spinner=False)
def presenter_key() -> str:
    """The key, read or drawn once per server; a drawn one is printed in the server's terminal (never on a page)."""
    key = os.environ.get(KEY_ENV) or _secret("presenter_key")
    if key:
        return str(key)
    key = secrets.token_urlsafe(9)
    print(f"prunekit classroom mode: the presenter's key is {key} (enter it once in the sidebar's Presenter box)",
          flush=True)
    return key


def is_presenter() -> bool:
    """Whether this browser may change things: always outside classroom mode, else once it entered the key."""
    return not classroom() or st.session_state.get(PRESENTER) is True


def visitor() -> str:
    """Who this browser is, for a job's record: "presenter", or "visitor <id>" (this session's short id)."""
    if classroom() and is_presenter():
        return "presenter"
    ctx = get_script_run_ctx()
    return f"visitor {ctx.session_id[:6]}" if ctx is not None else "visitor"


def may(what: str) -> bool:
    """True when this browser may ``what`` (e.g. "prune"); else a note saying what the key is for, and False."""
    if is_presenter():
        return True
    st.info(f"Classroom mode: only the presenter can {what}. Everything else here is yours to explore; the "
            "presenter enters their key once in the sidebar's Presenter box.", icon=":material/school:")
    return False


def presenter_box() -> None:
    """The sidebar's Presenter box (classroom mode only): the key, entered once per browser."""
    if not classroom():
        return
    presenter_key()  # drawn and printed when the server's first visitor arrives
    with st.expander("Presenter", icon=":material/school:", expanded=False):
        if st.session_state.get(PRESENTER) is True:
            st.caption("This browser is the presenter's: pruning and jobs are open here.")
            return
        typed = st.text_input("Presenter's key", type="password", key="presenter_key_typed",
                              help="Printed in the terminal where the app was started (or set in "
                                   f"${KEY_ENV}). Only the presenter prunes, sweeps and runs jobs.")
        if typed:
            if hmac.compare_digest(typed.encode(), presenter_key().encode()):
                st.session_state[PRESENTER] = True
                st.rerun()
            st.error("That is not the presenter's key: the audience can explore, not prune or run jobs.")
