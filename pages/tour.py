"""Placeholder while the page is written (issue 6)."""
import streamlit as st

st.title("tour")
st.info("This page is being built.")
