"""The dashboard's pages (the files directly in pages/, which app.py routes) and, in pages/ui/, their shared helpers.

Importing this package is the first thing every page does (``from pages.ui... import ...``), before the slow
imports (PyTorch, prunekit, plotly): on the first run after a server start, which may be a page opened by its URL
and run without app.py, a note says what is going on instead of a blank page.
:func:`pages.ui.router.through_router`, which every page calls once its imports are done, takes it away.
"""
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

STARTING = None
if get_script_run_ctx() is not None:  # inside a Streamlit script run (not a plain import, e.g. by a test)
    STARTING = st.empty()
    STARTING.info("Starting prunekit: loading PyTorch and the model. The first page after a server start takes a few "
                  "seconds; the next ones are quick.", icon=":material/hourglass_top:")


def started() -> None:
    """Take the start-up note away (the slow imports are done), once: the note belongs to the first run after the
    server started, and emptying it from a later run would blank that run's first element (the page's title)."""
    global STARTING
    if STARTING is not None:
        STARTING.empty()
        STARTING = None
