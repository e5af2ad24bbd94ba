"""Plan & prune: per-group ratios (sliders, a table, presets), their instant cost estimate, sensitivity curves,
a real pruning recorded as a run, and its fine-tuning queued as a background job."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.ui.cached import held_out, split, structure_of
from pages.ui.classroom import may
from pages.ui.figures import filters_figure
from pages.ui.frozen import frozen_ui
from pages.ui.last_run import LAST_RUN, last_run_ui
from pages.ui.prediction import predicted_ui
from pages.ui.scoring import scores_with_progress
from pages.ui.search_view import search_ui
from pages.ui.sensitivity_view import SENS, sensitivity_ui
from pages.ui.sidebar import DEFAULT_SOURCE, page_with_model
from pages.ui.state import LONG_PLAN, PLAN, PLAN_ROUND_TO, chosen_criterion
from pages.ui.wording import WRAPPED_ROW_PX
from prunekit import model_info
from prunekit.criteria.scores import to_tensors
from prunekit.defaults import HELD_OUT, MAX_RATIO, RECALIBRATION, ROUND_TO, TARGET_BY
from prunekit.errors import UserError
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset, list_presets
from prunekit.pruning.ratios import RULE, max_ratio, validate_ratios
from prunekit.pruning.structure import estimate, signature
from prunekit.runs.records import prune_run
from prunekit.runs.runtimes import vector_block
from prunekit.text import human

BY_LABEL = {"FLOPs": "flops", "parameters": "params"}
EDITORS = ("Sliders", "Table")
VERSION, VALID, ERROR, PRESET, APPLIED = "plan_version", "plan_valid", "plan_error", "plan_preset", "plan_applied"


# ----------------------------------------------------------------------------------------------
# The plan in session state: {group root: ratio}, validated on every run; a bad plan never replaces a good one.

def _set_plan(ratios: dict, preset: dict | None = None) -> None:
    """Make ``ratios`` the plan: the sliders follow it, the table is redrawn from it."""
    st.session_state[PLAN] = {k: float(v) for k, v in ratios.items()}
    st.session_state[PRESET] = preset or {"name": "manual"}
    st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1


def _slider_changed(root: str) -> None:
    _set_plan({**st.session_state.get(PLAN, {}), root: st.session_state[f"ratio::{root}"]})


def _table_changed(key: str, roots: list[str], struct, arch: str) -> None:
    """Apply the table's edits when every edited ratio is valid; else keep the plan and say why."""
    ratios = dict(st.session_state.get(PLAN, {}))
    for row, change in st.session_state[key]["edited_rows"].items():
        if "ratio" in change:
            ratios[roots[int(row)]] = 0.0 if change["ratio"] is None else change["ratio"]
    try:
        validate_ratios(ratios, struct.groups, struct.frozen)
    except UserError as exc:
        st.session_state[ERROR] = f"Typed in the table: {exc}"
        st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1  # the table shows the kept plan again
        return
    _set_plan(ratios)


def current_plan(struct, sel) -> dict[str, float]:
    """The plan being edited, checked against this model; a bad one is reported and the last good one kept."""
    ratios = st.session_state.get(PLAN)
    ratios = st.session_state[PLAN] = ratios if isinstance(ratios, dict) else {}
    valid_key, valid = st.session_state.get(VALID, ("", {}))
    error = st.session_state.pop(ERROR, None)
    try:
        validate_ratios(ratios, struct.groups, struct.frozen)
    except UserError as exc:
        roots = {g.root for g in struct.groups}
        if valid_key != sel.key and not set(ratios) & roots:
            st.info("The plan in memory was made for another model: this model starts with every filter kept.",
                    icon=":material/info:")
        else:
            error = str(exc)
        ratios = valid if valid_key == sel.key else {}
        _set_plan(ratios, st.session_state.get(PRESET))
    if error:
        st.error(f"{error}. The previous plan stays.", icon=":material/error:")
    st.session_state[VALID] = (sel.key, dict(ratios))
    return dict(ratios)


def criterion_in_use() -> str:
    """The criterion that picks the filters inside each group: the Saliency page's choice."""
    return chosen_criterion()


def score_tensors(sel, name: str) -> tuple[dict, str]:
    """({conv: per-filter scores}, the criterion they came from): ``name``'s, or l1's with a note when ``name``
    cannot run here."""
    df = scores_with_progress(sel, name)
    return to_tensors(df), df.attrs["criterion"]


def _round_to_changed() -> None:
    st.session_state[PLAN_ROUND_TO] = int(st.session_state["round_to_input"])


def round_to_ui() -> int:
    """The plan's rounding of every pruned group's kept filters (:func:`prunekit.pruning.ratios.kept_channels`)."""
    st.session_state["round_to_input"] = st.session_state.get(PLAN_ROUND_TO, ROUND_TO)
    block = vector_block()
    cols = st.columns([1, 2], vertical_alignment="bottom")
    cols[0].number_input(
        "Round kept channels to a multiple of", min_value=1, max_value=256, step=1, key="round_to_input",
        on_change=_round_to_changed,
        help=f"CPUs compute convolutions on blocks of channels: {block} floats on this machine (16 with AVX-512, 8 "
             "with AVX2). ONNX Runtime and oneDNN pad a width that is no multiple of the block, so 45 channels cost "
             "what 48 do, and removed filters that do not free a whole block save MACs but little time. With N > 1 "
             "every pruned group keeps the multiple of N nearest its ratio's count (at least N; a group narrower "
             "than N is not rounded); presets solve their target on the rounded estimate. 1: no rounding.")
    cols[1].caption(f"1 keeps exactly what the ratios say; {block}, this CPU's vector block, leaves the CPU no "
                    "padding to compute, at the price of coarser steps.")
    return st.session_state.get(PLAN_ROUND_TO, ROUND_TO)


# ----------------------------------------------------------------------------------------------
# Presets.

def preset_ui(struct, sel, criterion: str, round_to: int) -> None:
    """A preset of the registry and its numbers; Apply fills the editor."""
    st.subheader("Start from a preset")
    cols = st.columns([1.3, 1.2, 1, 1, 0.8], vertical_alignment="bottom")
    names = [n for n in list_presets() if not get_preset(n).judges]  # the search has its own view
    preset = get_preset(cols[0].selectbox("Preset", names, format_func=lambda n: get_preset(n).label,
                                          key="preset_kind"))
    modes = (["a target"] if preset.targets else []) + ([f"one {preset.knob.name}"] if preset.knob else [])
    mode = cols[1].radio("Set by", modes, key="preset_mode", horizontal=True) if modes else None
    value, target, by = None, None, TARGET_BY
    if mode == "a target":
        target = cols[2].number_input("Fraction to remove", 0.05, MAX_RATIO, 0.5, 0.05, key="preset_target")
        by = BY_LABEL[cols[3].radio("of the", list(BY_LABEL), key="preset_by", horizontal=True)]
    elif mode is not None:
        knob = preset.knob
        value = cols[2].number_input(knob.name.capitalize(), float(knob.low), float(knob.high), float(knob.default),
                                     0.05, key="preset_value", help=knob.doc)
    if cols[4].button("Apply", type="primary", key="preset_apply", width="stretch"):
        try:
            plan = make_preset(preset, struct, sel, value, target, by, criterion, round_to)
        except UserError as exc:
            st.error(f"{preset.label}: {exc}", icon=":material/error:")
            return
        _set_plan({g.root: plan.ratios.get(g.root, 0.0) for g in struct.groups}, plan.preset)
        noun = next(label for label, key in BY_LABEL.items() if key == by)
        reached = f" (rounded widths: it removes {plan.preset['reached']:.1%} of the {noun})" \
            if "reached" in plan.preset else ""
        st.session_state[APPLIED] = (st.session_state[VERSION], f"{preset.label} applied{reached}: the editor "
                                     "below holds its ratios.")
    version, notice = st.session_state.get(APPLIED, (None, ""))
    if version is not None and version == st.session_state.get(VERSION):  # until the plan is edited: a rerun
        st.success(notice, icon=":material/check:")  # (the predicted accuracy arriving) must not wipe it
    st.caption(preset.help)


def make_preset(preset, struct, sel, value, target, by: str, criterion: str, round_to: int) -> Plan:
    """The preset's Plan (a target solved with kept filters rounded to ``round_to``), handed what it needs
    (UserError with prunekit's reason when it cannot be made)."""
    inputs = {"model": sel.model}
    if "scores" in preset.needs:
        inputs["scores"], criterion = score_tensors(sel, criterion)
    if "sensitivity" in preset.needs:
        inputs["sensitivity"] = st.session_state.get(SENS, {}).get((sel.key, criterion, round_to))
    return preset.make(struct, sel.arch, value=value, target=target, by=by, criterion=criterion,
                       round_to=round_to, **inputs)


# ----------------------------------------------------------------------------------------------
# The editor: sliders and curves side by side, or a table; the estimate beside them.

def group_label(g, family: str) -> str:
    """'conv1 + layer1.0.conv2 + ... (residual stream, 16 filters)' or 'layer1.0.conv1 (16 filters)', and how a
    grouped or spread group is pruned (:attr:`prunekit.pruning.prune.Group.grouping`)."""
    how = f"; {g.grouping}" if g.grouping else ""
    if not g.coupled:
        return f"{g.root} ({g.filters} filters{how})"
    kind = "residual stream" if "resnet" in family else "coupled"
    return f"{' + '.join(g.members)} ({kind}, {g.filters} filters{how})"


def sliders_ui(struct, ratios: dict, est, family: str) -> None:
    for g in struct.groups:
        key = f"ratio::{g.root}"
        st.session_state[key] = float(ratios.get(g.root, 0.0))
        kept = est.channels[g.root][1]
        st.slider(group_label(g, family), 0.0, max_ratio(g.channels), step=0.05, format="%.2f", key=key,
                  on_change=_slider_changed, args=(g.root,),
                  help=f"Share of the {g.filters} filters to remove (now {g.filters - kept} removed, {kept} "
                       f"kept); at most {max_ratio(g.channels):.4g}, which keeps at least one filter"
                       f"{' of each block' if g.blocks > 1 else ''}.")


# the table's group column: the px the editor's column (396 px at 1280 px) leaves it, and the longest root conv name
# that fits it on one line ('layer2.0.downsample'); a model with longer ones gets taller rows, where names wrap
GROUP_PX, GROUP_CHARS = 150, 19


def table_ui(struct, sel, ratios: dict, est, family: str) -> None:
    """One row per group in columns that fit the editor's column at 1280 px (its convs counted; the groups of
    several convs spelled out under the table), its ratio typed in and checked as typed."""
    rows = [{"group": g.root, "ratio": float(ratios.get(g.root, 0.0)), "kept": est.channels[g.root][1],
             "filters": g.filters, "convs": len(g.members) + len(g.spread)} for g in struct.groups]
    key = f"plan_table_{st.session_state.get(VERSION, 0)}"
    row_px = WRAPPED_ROW_PX if max(len(g.root) for g in struct.groups) > GROUP_CHARS else 35
    st.data_editor(
        pd.DataFrame(rows), key=key, hide_index=True, width="stretch", row_height=row_px,
        height=(row_px + 1) * min(len(rows), LONG_PLAN) + 39,  # the longest plans scroll inside the table
        column_order=["group", "ratio", "kept", "filters", "convs"], disabled=["group", "convs", "filters", "kept"],
        on_change=_table_changed, args=(key, [g.root for g in struct.groups], struct, sel.arch),
        column_config={
            "group": st.column_config.TextColumn("group (root conv)", width=GROUP_PX),
            # no min_value / max_value: the editor would clamp a typed 1.5 or -1 to a value the user never typed;
            # the value reaches _table_changed as typed and is refused there, by the package's rule
            "ratio": st.column_config.NumberColumn("ratio", format="%.3f", width=75,
                                                   help=f"share of the group's filters to remove: {RULE}"),
            "kept": st.column_config.NumberColumn("kept", format="%d", width=55, help="filters kept after pruning"),
            "filters": st.column_config.NumberColumn("filters", format="%d", width=58, help="filters before"),
            "convs": st.column_config.NumberColumn("convs", format="%d", width=55,
                                                   help="convs pruned together: they lose the same filters "
                                                        "(listed under the table)")})
    st.caption(f"Type a ratio per group ({RULE}); the sliders follow."
               + (f" The table scrolls: {len(rows)} groups." if len(rows) > LONG_PLAN else ""))
    several = [g for g in struct.groups if g.coupled or g.grouping]
    if several:
        with st.expander(f"Convs pruned together ({len(several)} groups)", expanded=len(several) <= 6):
            st.markdown("\n".join(f"- {group_label(g, family)}" for g in several))


def editor_ui(struct, sel, ratios: dict, est, family: str) -> None:
    """The chosen editor only (sliders or table), so a rerun after an edit keeps the user where they were; a
    model with more than LONG_PLAN groups opens on the table (a slider per group would run off the page)."""
    default = "Table" if len(struct.groups) > LONG_PLAN else "Sliders"
    choice = st.segmented_control("Edit the ratios with", EDITORS, default=default, required=True,
                                  key=f"plan_editor::{sel.arch}")
    if choice == "Table":
        table_ui(struct, sel, ratios, est, family)
    else:
        sliders_ui(struct, ratios, est, family)


def estimate_ui(est) -> None:
    """Params / MACs / FLOPs before -> after, with the reductions: one above the other (three side by side cut a
    ResNet-56's '125.49M' at 1280 px)."""
    for name, before, after in (("Parameters", est.params_before, est.params),
                                ("MACs / image", est.macs_before, est.macs),
                                ("FLOPs / image", 2 * est.macs_before, 2 * est.macs)):
        st.metric(name, human(after), f"{after / before - 1:.1%}" if after != before else None, delta_color="inverse",
                  help=f"{before:,} before pruning -> {after:,} after (instant estimate from layer shapes)")
    st.caption(f"Before → after: parameters {est.params_before:,} → {est.params:,}; MACs {est.macs_before:,} → "
               f"{est.macs:,} (FLOPs = 2 × MACs). Exactly what the pruned model will count.")


# ----------------------------------------------------------------------------------------------
# Prune for real, then fine-tune in the background.

def prune_ui(struct, sel, ratios: dict, criterion: str, round_to: int) -> None:
    st.subheader("Prune for real")
    data = held_out(sel, HELD_OUT.n)
    train = split(sel.dataset, "train") if sel.data_path is not None else None
    st.caption(f"Filters inside each group are removed by **{criterion}** (lowest scores go; change the criterion "
               "on the Saliency page). The pruned model is a new, smaller network saved as a run; the model in the "
               "sidebar is never changed. "
               + (f"Accuracy is measured on {HELD_OUT.n} test images (seed {HELD_OUT.seed}) before, right after "
                  f"pruning and after re-estimating the BatchNorm statistics on {RECALIBRATION.n} training images."
                  if data is not None else f"Accuracy is not measured: {sel.no_images}"))
    if not may("prune for real (each pruning is a new run on disk)"):
        return
    if not st.button("Prune", type="primary", key="prune_go", icon=":material/content_cut:",
                     disabled=not any(ratios.values()), help="Set a ratio above 0 for at least one group first."):
        return
    try:
        tensors, criterion = score_tensors(sel, criterion)
        plan = Plan(sel.arch, {k: v for k, v in ratios.items() if v > 0}, criterion, signature=signature(struct),
                    preset=st.session_state.get(PRESET) or {"name": "manual"}, round_to=round_to)
        bar = st.progress(0.0, text="Pruning...")
        steps = ["measuring the original", "pruning", "counting and timing", "measuring the pruned model",
                 "recalibrating BatchNorm", "saving"]
        run = prune_run(sel.model, plan, tensors, arch=sel.arch, num_classes=num_classes(sel), recalibrate=train,
                        input_size=sel.input_size, data=data, checkpoint=checkpoint_path(sel), struct=struct,
                        progress=lambda d, t: bar.progress(d / t, text=f"Done: {steps[d - 1]} ({d}/{t})"))
        bar.empty()
    except (UserError, RuntimeError) as exc:
        st.error(f"Pruning failed: {exc}. Your plan is unchanged; adjust it and try again.", icon=":material/error:")
        return
    st.session_state[LAST_RUN] = run.manifest["id"]


def num_classes(sel) -> int:
    return int(sel.header.get("num_classes") or st.session_state.get("num_classes", 10))


def checkpoint_path(sel):
    """The file the sidebar's weights came from, when it is on disk (the bundled default)."""
    return DEFAULT_CHECKPOINT if st.session_state.get("model_source", DEFAULT_SOURCE) == DEFAULT_SOURCE else None


# ----------------------------------------------------------------------------------------------

INTRO = ("A **coupled group** is a set of convs whose filters must go together. In a ResNet, the convs whose outputs "
         "meet in one residual addition (and the stem conv feeding the first one) must keep the same channels, so "
         "they are pruned together with one ratio; the other convs form groups of one.")


def main() -> None:
    sel = page_with_model(
        "Plan & prune",
        "Choose how many filters each layer loses, see the cost at once, then prune for real and fine-tune.")
    struct = structure_of(sel)
    if not struct.groups:
        st.info(f"{sel.arch} has no prunable group of filters here. Planning and pruning do not apply to it.",
                icon=":material/info:")
        frozen_ui(struct.frozen, expanded=True)
        st.stop()
    family = model_info(sel.arch).family
    criterion = criterion_in_use()
    st.markdown(INTRO)
    frozen_ui(struct.frozen)
    round_to = round_to_ui()
    preset_ui(struct, sel, criterion, round_to)
    ratios = current_plan(struct, sel)
    est = estimate(struct, ratios, round_to)
    search_ui(struct, sel, ratios, criterion, round_to, load=_set_plan)

    st.subheader("Per-group ratios")
    left, right = st.columns([1.1, 1], gap="large")
    with left:
        editor_ui(struct, sel, ratios, est, family)
    with right:
        estimate_ui(est)
        predicted_ui(sel, ratios, criterion, round_to)
    st.subheader("Sensitivity of each group")
    sensitivity_ui(struct, sel, ratios, criterion, round_to, {g.root: group_label(g, family) for g in struct.groups},
                   lambda: score_tensors(sel, criterion)[0])

    st.subheader("Filters kept per conv")
    st.plotly_chart(filters_figure(est), width="stretch")
    st.caption("Filters per conv in forward order: the light bar is the width before pruning, the blue bar what "
               "the plan keeps. Convs of one coupled group always keep the same number.")
    prune_ui(struct, sel, ratios, criterion, round_to)
    last_run_ui()


main()
