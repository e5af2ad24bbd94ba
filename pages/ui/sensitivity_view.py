"""Plan & prune's sensitivity curves: each group pruned alone at several ratios (recalibrated, no fine-tuning),
computed on request and kept per model, criterion and rounding in the session; the current ratios marked."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pages.ui.cached import held_out, split
from pages.ui.classroom import may
from pages.ui.figures import mark_ratios, sensitivity_figure
from prunekit.defaults import RECALIBRATION, SENSITIVITY
from prunekit.pruning.sensitivity import expected_minutes, sensitivity
from prunekit.pruning.structure import estimate
from prunekit.text import duration

SENS, SENS_FIG = "plan_sensitivity", "plan_sensitivity_figure"  # {(model, criterion, round_to): table / figure}


def sensitivity_ui(struct, sel, ratios: dict, criterion: str, round_to: int, labels: dict[str, str],
                   scores: Callable[[], dict]) -> None:
    """The button, then one accuracy-vs-ratio curve per group with the current ratio marked (each ratio keeping
    what the plan's rounding keeps). labels: {root: the group's name}; scores() -> {conv: (filters,) tensor}, the
    criterion's scores (computed when the button is pressed)."""
    data = held_out(sel, SENSITIVITY.n)
    if data is None and sel.data_problem:
        st.warning(f"Sensitivity curves evaluate the model on {sel.dataset} test images, and {sel.no_images}",
                   icon=":material/block:")
        return
    if data is None:
        st.info(f"Sensitivity curves need test images: each group is pruned alone and evaluated on "
                f"{SENSITIVITY.n} {sel.dataset} test images, and there are none here. The Model & data page says "
                "how to get them; the sliders, presets (except Sensitivity), the estimate and pruning still work.",
                icon=":material/folder_off:")
        return
    if not may("compute sensitivity curves (dozens of pruned models, minutes of the machine)"):
        return
    key = (sel.key, criterion, round_to)
    table = st.session_state.get(SENS, {}).get(key)
    rounded = (f" Kept filters are rounded to multiples of {round_to}, as the plan rounds them: ratios that round "
               "to the same width share one point." if round_to > 1 else "")
    if st.button("Compute sensitivity" if table is None else "Recompute sensitivity", key="sens_go",
                 help=f"Prunes each group alone at ratios {', '.join(map(str, SENSITIVITY.ratios))} (filters picked "
                      f"by {criterion}), re-estimates its BatchNorm statistics on {RECALIBRATION.n} training images "
                      f"and measures accuracy on {SENSITIVITY.n} test images without fine-tuning.{rounded} "
                      "Cached on disk: a second time is instant."):
        tensors = scores()
        bar = st.progress(0.0, text="Pruning each group alone...")
        table = sensitivity(sel.model, tensors, data, ratios=SENSITIVITY.ratios, struct=struct,
                            recalibrate=split(sel.dataset, "train"), round_to=round_to,
                            progress=lambda d, t: bar.progress(d / t, text=f"Sensitivity: {d}/{t} pruned models"))
        bar.empty()
        st.session_state.setdefault(SENS, {})[key] = table
        st.session_state.setdefault(SENS_FIG, {}).pop(key, None)
        st.rerun()  # drawn from the top: the button above now reads "Recompute"
    if table is None:
        models = len(struct.groups) * len(SENSITIVITY.ratios)
        expected = duration(60 * expected_minutes(models, estimate(struct, {}).macs), about=True)
        st.caption("Sensitivity: how much accuracy each group loses when it alone is pruned. Click the button: "
                   f"{'at most ' if round_to > 1 else ''}{models} pruned models, "
                   f"{expected} on a 2-core CPU (twice that on a "
                   "busy one; scaled from ResNet-20's 60 in about a minute by the MACs per image); a progress bar "
                   "follows it.")
        return
    figures = st.session_state.setdefault(SENS_FIG, {})
    if key not in figures:  # drawn once (about half a second); a slider move only moves the lines
        figures[key] = sensitivity_figure(table, struct, labels)
    st.plotly_chart(mark_ratios(figures[key], ratios), width="stretch")
    st.caption(f"Each panel is one group: test accuracy ({SENSITIVITY.n} images; BatchNorm recalibrated, no "
               "fine-tuning) when only that "
               "group is pruned, against its ratio; the red line is the ratio you set. All panels share one 0-100% "
               "scale and the dotted line is the unpruned accuracy: a flat curve can be pruned hard, a curve that "
               "drops early marks a sensitive group." + rounded)
    st.warning("Each curve prunes one group alone. Pruning several groups together costs more than any one of them "
               "alone (the damage adds up, and more): read the curves to compare groups, and the predicted accuracy "
               "above for what the whole plan costs.", icon=":material/warning:")
