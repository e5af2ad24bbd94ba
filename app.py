"""prunekit dashboard: the page router and the shared sidebar. Pages draw; the package computes.

Run it with `make app` (or `streamlit run app.py`); it binds to 127.0.0.1 (.streamlit/config.toml). Your own model
code is imported only when you name it here: `streamlit run app.py -- --factory package.module:function` (or
PRUNEKIT_FACTORY=package.module:function); the sidebar then offers it as a model source.
"""
import logging
import os

import streamlit as st

st.set_page_config(page_title="prunekit", page_icon=":material/content_cut:", layout="wide")

from pages.ui.sidebar import sidebar  # noqa: E402  (set_page_config must come first)

PAGES = {
    "Explore": [
        st.Page("pages/model.py", title="Model & data", icon=":material/memory:", default=True),
        st.Page("pages/saliency.py", title="Saliency", icon=":material/bar_chart:"),
        st.Page("pages/feature_maps.py", title="Feature maps", icon=":material/grid_view:"),
        st.Page("pages/correlations.py", title="Correlations", icon=":material/blur_on:"),
    ],
    "Prune": [
        st.Page("pages/plan.py", title="Plan & prune", icon=":material/tune:"),
        st.Page("pages/jobs.py", title="Jobs", icon=":material/pending_actions:"),
        st.Page("pages/compare.py", title="Compare runs", icon=":material/scatter_plot:"),
    ],
    "Learn": [
        st.Page("pages/tour.py", title="Guided tour", icon=":material/school:"),
    ],
}

# the navigation is drawn by this script (page links), never Streamlit's list of the files in pages/: that list
# (with its own names and order) would show until the first run ends (client.showSidebarNavigation)
navigation = st.navigation(PAGES, position="hidden")
with st.sidebar:
    for section, pages in PAGES.items():
        st.caption(section)
        for page in pages:
            st.page_link(page)
sidebar()
try:
    navigation.run()
except Exception as exc:  # the last safety net: a message on the page, the traceback only in the server log
    if os.environ.get("PRUNEKIT_APP_RAISE"):  # the tests set it, so that AppTest sees the exception itself
        raise
    logging.getLogger("prunekit.app").exception("page %s failed", navigation.title)
    st.error(f"This page hit an unexpected problem: {type(exc).__name__}: {exc}\n\nNothing was lost: your runs, "
             "jobs and cached scores are on disk. Try another choice, or reload the page. If it happens again, the "
             "server log has the details for a bug report.", icon=":material/error:")
