"""The dashboard's pages (app.py routes them) and their helpers.

Importing this package is the first thing every page does (``from pages.shared import ...``), before the slow
imports (PyTorch, prunekit, plotly): on the first run after a server start, which may be a page opened by its URL
and run without app.py, a note says what is going on instead of a blank page. :mod:`pages.shared` takes it away
once it is imported.
"""
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

STARTING = None
if get_script_run_ctx() is not None:  # inside a Streamlit script run (not a plain import, e.g. by a test)
    STARTING = st.empty()
    STARTING.info("Starting prunekit: loading PyTorch and the model. The first page after a server start takes a few "
                  "seconds; the next ones are quick.", icon=":material/hourglass_top:")


def started() -> None:
    """Take the start-up note away (the slow imports are done)."""
    if STARTING is not None:
        STARTING.empty()
