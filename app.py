"""prunekit dashboard: the page router and the shared sidebar. Pages draw; the package computes.

Run it with `make app` (or `streamlit run app.py`); it binds to 127.0.0.1 (.streamlit/config.toml).
"""
import streamlit as st

st.set_page_config(page_title="prunekit", page_icon=":material/content_cut:", layout="wide")

from pages.shared import sidebar  # noqa: E402  (set_page_config must come first)

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

navigation = st.navigation(PAGES)
sidebar()
navigation.run()
