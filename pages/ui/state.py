"""The st.session_state keys that pages share, and what they hold.

``CRITERION``: the criterion chosen on the Saliency page (a registry name; every page scores and picks filters with
it). ``PLAN``: the plan being edited on the Plan page ({coupled group's root conv: ratio}). ``PLAN_ROUND_TO``: its
rounding of kept filters (:func:`prunekit.pruning.ratios.kept_channels`). ``PROBE_N``: probe images, set in the
sidebar. ``SELECTION``: the sidebar's :class:`pages.ui.sidebar.Selection`, drawn before every page.
"""
import streamlit as st

from prunekit.defaults import DEFAULT_CRITERION

CRITERION, PLAN, PLAN_ROUND_TO, PROBE_N, SELECTION = "criterion", "plan", "plan_round_to", "probe_n", "selection"
LONG_PLAN = 24  # coupled groups: a PLAN of more opens on the table rather than a slider per group


def chosen_criterion() -> str:
    """The criterion chosen on the Saliency page (the default until one is chosen)."""
    return st.session_state.get(CRITERION, DEFAULT_CRITERION)
