"""prunekit dashboard: the page router and the shared sidebar. Pages draw; the package computes.

Run it with `make app` (or `streamlit run app.py`); it binds to 127.0.0.1 (.streamlit/config.toml).
"""
import streamlit as st

st.set_page_config(page_title="prunekit", page_icon=":material/content_cut:", layout="wide")

from pages.shared import sidebar  # noqa: E402  (set_page_config must come first)

PAGES = [
    st.Page("pages/model.py", title="Model & data", icon=":material/memory:", default=True),
]

navigation = st.navigation(PAGES)
sidebar()
navigation.run()
