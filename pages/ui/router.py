"""Streamlit's multipage workaround, in one place.

app.py routes with st.navigation. Streamlit (1.6x) decides once per server, on its first run, whether the app uses
the old "pages/ folder" mode, and until app.py has called st.navigation it runs a page opened by its URL on its own:
without the sidebar and without the router's navigation. Declaring the router when this module is imported (every
page imports it, directly or through :mod:`pages.ui.sidebar`) and rerunning such a lone run (:func:`through_router`)
makes every page go through app.py.
"""
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from pages import started
from pages.ui.state import SELECTION

PagesManager.uses_pages_directory = False  # the router (app.py's st.navigation) is declared, not the pages/ folder


def through_router() -> None:
    """Every page calls this first (after its imports): take the start-up note away, and rerun through app.py a page
    that runs without it (no sidebar choice in the session yet)."""
    started()
    if SELECTION not in st.session_state:
        st.rerun()
