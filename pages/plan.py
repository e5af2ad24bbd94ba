"""Plan & prune: per-group ratios (sliders, a table, presets), their instant cost estimate, sensitivity curves,
a real pruning recorded as a run, and its fine-tuning queued as a background job."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages.shared import (
    CRITERION,
    DEFAULT_CRITERION,
    DEFAULT_SOURCE,
    PLAN,
    device_label,
    has_scores,
    human,
    page_with_model,
    scores,
    split,
)
from prunekit import model_info
from prunekit.checkpoints import DEFAULT_CHECKPOINT
from prunekit.criteria import get_criterion
from prunekit.data import DataNotFoundError
from prunekit.plan import (
    MAX_RATIO,
    Plan,
    afie_plan,
    estimate,
    global_threshold,
    max_ratio,
    sensitivity_plan,
    signature,
    structure,
    uniform,
    vgg16_published,
)
from prunekit.prune import kept_channels, validate_ratios
from prunekit.runs import prune_run, read_manifest, runs_root
from prunekit.scores import to_tensors
from prunekit.sensitivity import sensitivity

SENSITIVITY_RATIOS = (0.1, 0.3, 0.5, 0.7)
SENSITIVITY_N, PRUNE_N, BATCH = 256, 1000, 128
PRESETS = {"Uniform": "uniform", "Global threshold": "threshold", "AFIE allocation": "afie",
           "Sensitivity": "sensitivity", "Published VGG-16 budget": "vgg16_published"}
BY = {"FLOPs": "flops", "parameters": "params"}
VERSION, VALID, ERROR, PRESET, SENS, SENS_FIG, LAST_RUN, LAST_JOB = (
    "plan_version", "plan_valid", "plan_error", "plan_preset", "plan_sensitivity", "plan_sensitivity_figure",
    "last_run", "plan_last_job")


@st.cache_resource(show_spinner="Tracing the model's coupled groups...", max_entries=8)
def _structure(_model, key: str, input_size: tuple):
    """The model's prunable groups and layer shapes: traced once per model (``key``: its weights' hash)."""
    return structure(_model, input_size)


# ----------------------------------------------------------------------------------------------
# The plan in session state: {group root: ratio}, validated on every run; a bad plan never replaces a good one.

def _check(struct, arch: str, ratios: dict) -> None:
    """ValueError in prunekit's words for a ratio the plan cannot take."""
    validate_ratios(ratios, list(struct.groups))
    Plan(arch, ratios)  # at most MAX_RATIO


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
        _check(struct, arch, ratios)
    except ValueError as exc:
        st.session_state[ERROR] = str(exc)
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
        _check(struct, sel.arch, ratios)
    except ValueError as exc:
        roots = {g.root for g in struct.groups}
        if valid_key != sel.key and not set(ratios) & roots:
            st.info("The plan in memory was made for another model: this model starts with every filter kept.",
                    icon=":material/info:")
        else:
            error = str(exc)
        ratios = valid if valid_key == sel.key else {}
        _set_plan(ratios, st.session_state.get(PRESET))
    if error:
        st.error(f"{error}. The previous plan stays. A ratio is a number from 0 to {MAX_RATIO} and must keep at "
                 "least one filter of its group.", icon=":material/error:")
    st.session_state[VALID] = (sel.key, dict(ratios))
    return dict(ratios)


# ----------------------------------------------------------------------------------------------
# Scores and data, with progress bars.

def criterion_in_use(sel) -> tuple[str, str | None]:
    """(the criterion that picks the filters inside each group, a note when it falls back to L1)."""
    name = st.session_state.get(CRITERION, DEFAULT_CRITERION)
    if get_criterion(name).needs_data and sel.data_path is None:
        return "l1", f"{name} reads images and there is no {sel.dataset} data: filters are picked by l1 instead."
    return name, None


def score_tensors(sel, name: str) -> dict:
    """{conv: per-filter scores} of criterion ``name`` (cached by pages.shared.scores), with a progress bar."""
    if has_scores(sel, name):
        return to_tensors(scores(sel, name))
    bar = st.progress(0.0, text=f"Scoring every filter by {name}...")
    try:
        df = scores(sel, name, progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                        text=f"Scoring by {name}: {done}/{total}"))
    except DataNotFoundError:
        st.warning(f"{name} needs images that are missing: filters are picked by l1 instead.")
        name, df = "l1", scores(sel, "l1")
    bar.empty()
    return to_tensors(df)


def held_out(sel, n: int):
    """``n`` test images (seed 0), None without data."""
    test = split(sel.dataset, "test") if sel.data_path is not None else None
    return None if test is None else test.subset(n, seed=0)


# ----------------------------------------------------------------------------------------------
# Presets.

def preset_ui(struct, sel, criterion: str) -> None:
    """A preset and its numbers; Apply fills the editor."""
    st.subheader("Start from a preset")
    cols = st.columns([1.3, 1.2, 1, 1, 0.8], vertical_alignment="bottom")
    label = cols[0].selectbox("Preset", list(PRESETS), key="preset_kind")
    kind = PRESETS[label]
    free = {"uniform": "one ratio", "threshold": "one threshold"}.get(kind)
    if kind == "vgg16_published":
        mode = None
        cols[1].caption("SFM's budget: 30% of convs 1-7, 75% of convs 8-12, conv 13 kept.")
    else:
        modes = ["a target", free] if free else ["a target"]
        mode = cols[1].radio("Set by", modes, key="preset_mode", horizontal=True)
    value, by = None, "flops"
    if mode == "a target":
        value = cols[2].number_input("Fraction to remove", 0.05, 0.95, 0.5, 0.05, key="preset_target")
        by = BY[cols[3].radio("of the", list(BY), key="preset_by", horizontal=True)]
    elif mode is not None:
        name = "Ratio" if kind == "uniform" else "Threshold (0-1)"
        value = cols[2].number_input(name, 0.0, MAX_RATIO if kind == "uniform" else 1.0, 0.5, 0.05,
                                     key="preset_value")
    if cols[4].button("Apply", type="primary", key="preset_apply", width="stretch"):
        try:
            plan = make_preset(struct, sel, kind, mode == "a target", value, by, criterion)
        except ValueError as exc:
            st.error(f"{label}: {exc}", icon=":material/error:")
            return
        _set_plan({g.root: plan.ratios.get(g.root, 0.0) for g in struct.groups}, plan.preset)
        st.success(f"{label} applied: the editor below holds its ratios.", icon=":material/check:")
    st.caption(PRESET_HELP[kind])


PRESET_HELP = {
    "uniform": "Every group loses the same share of its filters (capped so that each keeps one). With a target, "
               "the ratio is solved so that the estimate removes that fraction of FLOPs or parameters.",
    "threshold": "Scores are min-max normalised per layer; every filter below one global threshold goes, so layers "
                 "full of weak filters lose more. Uses the criterion chosen on the Saliency page.",
    "afie": "AFIE allocation: layers whose weights carry less information (low AFIE) lose more filters, scaled "
            "to reach the target.",
    "sensitivity": "Each group is pruned as far as it can without losing more accuracy than one shared tolerance, "
                   "solved for the target: robust groups lose most. Needs the sensitivity curves below.",
    "vgg16_published": "The budget published for VGG-16 on CIFAR-10 (SFM): -83% parameters, -67% FLOPs.",
}


def make_preset(struct, sel, kind: str, by_target: bool, value: float | None, by: str, criterion: str) -> Plan:
    """The preset's Plan (ValueError with prunekit's reason when it cannot be made)."""
    target = value if by_target else None
    if kind == "uniform":
        return uniform(struct, sel.arch, None if by_target else value, target=target, by=by, criterion=criterion)
    if kind == "threshold":
        return global_threshold(struct, sel.arch, score_tensors(sel, criterion), None if by_target else value,
                                target=target, by=by, criterion=criterion)
    if kind == "afie":
        return afie_plan(sel.model, struct, sel.arch, target=target, by=by, criterion=criterion)
    if kind == "sensitivity":
        table = st.session_state.get(SENS, {}).get((sel.key, criterion))
        if table is None:
            raise ValueError("compute the sensitivity curves first (button beside the sliders below)")
        return sensitivity_plan(struct, sel.arch, table, target=target, by=by, criterion=criterion)
    if sel.arch != "vgg16_bn":
        raise ValueError(f"the published budget is defined for vgg16_bn only; this model is {sel.arch}. Pick "
                         "vgg16_bn under 'A registered architecture' in the sidebar, or use another preset.")
    return vgg16_published(struct, sel.arch, criterion=criterion)


# ----------------------------------------------------------------------------------------------
# The editor: sliders and curves side by side, or a table; the estimate beside them.

def group_label(g, family: str) -> str:
    """'conv1 + layer1.0.conv2 + ... (residual stream, 16 filters)' or 'layer1.0.conv1 (16 filters)'."""
    if not g.coupled:
        return f"{g.root} ({g.channels} filters)"
    kind = "residual stream" if "resnet" in family else "coupled"
    return f"{' + '.join(g.members)} ({kind}, {g.channels} filters)"


def sliders_ui(struct, ratios: dict, family: str) -> None:
    for g in struct.groups:
        key = f"ratio::{g.root}"
        st.session_state[key] = float(ratios.get(g.root, 0.0))
        kept = kept_channels(g.channels, ratios.get(g.root, 0.0))
        st.slider(group_label(g, family), 0.0, max_ratio(g.channels), step=0.05, format="%.2f", key=key,
                  on_change=_slider_changed, args=(g.root,),
                  help=f"Share of the {g.channels} filters to remove (now {g.channels - kept} removed, {kept} "
                       f"kept); at most {max_ratio(g.channels):.4g}, which keeps at least one filter.")


def table_ui(struct, sel, ratios: dict, est, family: str) -> None:
    rows = [{"group": g.root, "convs": group_label(g, family), "filters": g.channels,
             "ratio": float(ratios.get(g.root, 0.0)), "kept": est.channels[g.root][1]} for g in struct.groups]
    key = f"plan_table_{st.session_state.get(VERSION, 0)}"
    st.data_editor(
        pd.DataFrame(rows), key=key, hide_index=True, width="stretch", height=36 * (len(rows) + 1) + 3,
        column_order=["group", "ratio", "kept", "filters", "convs"], disabled=["group", "convs", "filters", "kept"],
        on_change=_table_changed, args=(key, [g.root for g in struct.groups], struct, sel.arch),
        column_config={
            "group": st.column_config.TextColumn("group (root conv)", width="medium"),
            "convs": st.column_config.TextColumn("convs pruned together", width="large"),
            "filters": st.column_config.NumberColumn("filters", format="%d"),
            "ratio": st.column_config.NumberColumn("ratio", min_value=0.0, max_value=MAX_RATIO, step=0.01,
                                                   format="%.3f", help="share of the group's filters to remove"),
            "kept": st.column_config.NumberColumn("kept after", format="%d")})
    st.caption("Type a ratio per group (0 keeps every filter, at most 0.95, and at least one filter must stay); "
               "the sliders follow.")


def estimate_ui(est) -> None:
    """Params / MACs / FLOPs before -> after, with the reductions."""
    cols = st.columns(3)
    for col, name, before, after in ((cols[0], "Parameters", est.params_before, est.params),
                                     (cols[1], "MACs / image", est.macs_before, est.macs),
                                     (cols[2], "FLOPs / image", 2 * est.macs_before, 2 * est.macs)):
        col.metric(name, human(after), f"{after / before - 1:.1%}" if after != before else None, delta_color="inverse",
                   help=f"{before:,} before pruning -> {after:,} after (instant estimate from layer shapes)")
    st.caption(f"Before → after: parameters {est.params_before:,} → {est.params:,}; MACs {est.macs_before:,} → "
               f"{est.macs:,} (FLOPs = 2 × MACs). Exactly what the pruned model will count.")


def sensitivity_ui(struct, sel, ratios: dict, criterion: str) -> None:
    """The button, then one accuracy-vs-ratio curve per group with the current ratio marked."""
    data = held_out(sel, SENSITIVITY_N)
    if data is None:
        st.info(f"Sensitivity curves need test images: each group is pruned alone and evaluated on "
                f"{SENSITIVITY_N} {sel.dataset} test images, and there are none here. The Model & data page says "
                "how to get them; the sliders, presets (except Sensitivity), the estimate and pruning still work.",
                icon=":material/folder_off:")
        return
    table = st.session_state.get(SENS, {}).get((sel.key, criterion))
    if st.button("Compute sensitivity" if table is None else "Recompute sensitivity", key="sens_go",
                 help=f"Prunes each group alone at ratios {', '.join(map(str, SENSITIVITY_RATIOS))} (filters picked "
                      f"by {criterion}) and measures accuracy on {SENSITIVITY_N} test images without fine-tuning. "
                      "Cached on disk: a second time is instant."):
        tensors = score_tensors(sel, criterion)
        bar = st.progress(0.0, text="Pruning each group alone...")
        table = sensitivity(sel.model, tensors, data, ratios=SENSITIVITY_RATIOS,
                            progress=lambda d, t: bar.progress(d / t, text=f"Sensitivity: {d}/{t} pruned models"))
        bar.empty()
        st.session_state.setdefault(SENS, {})[(sel.key, criterion)] = table
        st.session_state.setdefault(SENS_FIG, {}).pop((sel.key, criterion), None)
    if table is None:
        st.caption("Sensitivity: how much accuracy each group loses when it alone is pruned. Click the button "
                   "(about half a minute on a CPU for ResNet-20).")
        return
    figures = st.session_state.setdefault(SENS_FIG, {})
    if (sel.key, criterion) not in figures:  # drawn once (about half a second); a slider move only moves the lines
        figures[(sel.key, criterion)] = sensitivity_figure(table, struct)
    st.plotly_chart(mark_ratios(figures[(sel.key, criterion)], ratios), width="stretch")
    st.caption(f"Each panel is one group: test accuracy ({SENSITIVITY_N} images, no fine-tuning) when only that "
               "group is pruned, against its ratio; the red line is the ratio you set. All panels share one 0-100% "
               "scale: a flat curve can be pruned hard, a curve that drops early marks a sensitive group.")


def sensitivity_figure(table: pd.DataFrame, struct) -> go.Figure:
    """One accuracy-vs-ratio panel per group, two per row, each with a red vertical line named after its group
    for :func:`mark_ratios` to move."""
    roots = [g.root for g in struct.groups if g.root in set(table["group"])]
    rows = (len(roots) + 1) // 2
    fig = make_subplots(rows=rows, cols=2, subplot_titles=roots, shared_xaxes=True, vertical_spacing=0.5 / rows,
                        horizontal_spacing=0.12)
    traces, where = [], []
    for i, root in enumerate(roots):
        curve = table[table["group"] == root].sort_values("ratio")
        traces += [go.Scatter(x=curve["ratio"], y=curve["accuracy"], mode="lines+markers", marker_size=5,
                              line_color="#2f6fed", hovertemplate="ratio %{x:.2f}: %{y:.1f}%<extra></extra>"),
                   go.Scatter(x=[0, 0], y=[0, 100], mode="lines", name=root, line=dict(color="#d62728", width=2),
                              hoverinfo="skip")]
        where += [(i // 2 + 1, i % 2 + 1)] * 2
    fig.add_traces(traces, rows=[w[0] for w in where], cols=[w[1] for w in where])
    fig.update_xaxes(range=[-0.03, 0.95], tickformat=".1f")
    fig.update_xaxes(title_text="ratio removed", title_font_size=11, row=rows)
    fig.update_yaxes(title_text="acc. %", title_font_size=10, tickfont_size=10, range=[0, 100], dtick=25)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=105 * rows + 60, margin=dict(l=10, r=10, t=25, b=10), showlegend=False)
    return fig


def mark_ratios(fig: go.Figure, ratios: dict) -> go.Figure:
    """Move each group's red line to its current ratio (in place: the figure is this session's own)."""
    for trace in fig.data:
        if trace.name:
            r = ratios.get(trace.name, 0.0)
            trace.x = (r, r)
    return fig


def filters_figure(est) -> go.Figure:
    layers = list(est.channels)
    fig = go.Figure()
    fig.add_bar(x=layers, y=[est.channels[n][0] for n in layers], name="before", marker_color="#c9d3e6")
    fig.add_bar(x=layers, y=[est.channels[n][1] for n in layers], name="after", marker_color="#2f6fed")
    fig.update_layout(barmode="overlay", height=300, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="filters",
                      legend=dict(orientation="h", y=1.08, x=0))
    fig.update_xaxes(tickangle=-45, tickfont=dict(size=10))
    return fig


# ----------------------------------------------------------------------------------------------
# Prune for real, then fine-tune in the background.

def prune_ui(struct, sel, ratios: dict, criterion: str, note: str | None) -> None:
    st.subheader("Prune for real")
    if note:
        st.info(note, icon=":material/info:")
    data = held_out(sel, PRUNE_N)
    st.caption(f"Filters inside each group are removed by **{criterion}** (lowest scores go; change the criterion "
               "on the Saliency page). The pruned model is a new, smaller network saved as a run; the model in the "
               "sidebar is never changed. "
               + (f"Accuracy is measured on {PRUNE_N} test images (seed 0) before and right after pruning."
                  if data is not None else "Without test images accuracy is not measured."))
    if not st.button("Prune", type="primary", key="prune_go", icon=":material/content_cut:",
                     disabled=not any(ratios.values()), help="Set a ratio above 0 for at least one group first."):
        return
    try:
        tensors = score_tensors(sel, criterion)
        plan = Plan(sel.arch, {k: v for k, v in ratios.items() if v > 0}, criterion, signature=signature(struct),
                    preset=st.session_state.get(PRESET) or {"name": "manual"})
        bar = st.progress(0.0, text="Pruning...")
        steps = ["measuring the original", "pruning", "counting and timing", "measuring the pruned model", "saving"]
        run = prune_run(sel.model, plan, tensors, arch=sel.arch, num_classes=num_classes(sel),
                        input_size=sel.input_size, data=data, checkpoint=checkpoint_path(sel),
                        latency_batches=(1,), repeat=3,
                        progress=lambda d, t: bar.progress(d / t, text=f"Done: {steps[d - 1]} ({d}/{t})"))
        bar.empty()
    except (ValueError, RuntimeError) as exc:
        st.error(f"Pruning failed: {exc}. Your plan is unchanged; adjust it and try again.", icon=":material/error:")
        return
    st.session_state[LAST_RUN] = run.manifest["id"]


def num_classes(sel) -> int:
    return int(sel.header.get("num_classes") or st.session_state.get("num_classes", 10))


def checkpoint_path(sel):
    """The file the sidebar's weights came from, when it is on disk (the bundled default)."""
    return DEFAULT_CHECKPOINT if st.session_state.get("model_source", DEFAULT_SOURCE) == DEFAULT_SOURCE else None


def last_run_ui(sel) -> None:
    """The last run of this session: its accuracy and cost, a link to Compare, and the fine-tuning form."""
    run_id = st.session_state.get(LAST_RUN)
    if not run_id:
        return
    path = runs_root() / run_id
    try:
        m = read_manifest(path)
    except ValueError:
        st.warning(f"The last run ({run_id}) is no longer under {runs_root()}.")
        return
    st.success(f"Run **{run_id}** saved ({m['status']}) in `{path}`.", icon=":material/check_circle:")
    acc = m.get("accuracy") or {}
    before, pruned = (acc.get("before") or {}).get("accuracy"), (acc.get("pruned") or {}).get("accuracy")
    cols = st.columns(4)
    cols[0].metric("Accuracy before", "not measured" if before is None else f"{before:.2f}%",
                   help=f"top-1 on {PRUNE_N} {(m.get('data') or {}).get('name', '')} test images (seed 0)")
    cols[1].metric("Accuracy after pruning", "not measured" if pruned is None else f"{pruned:.2f}%",
                   None if pruned is None else f"{pruned - before:+.2f} pts",
                   help="right after pruning, before any fine-tuning")
    for col, key, name in ((cols[2], "params", "Parameters after"), (cols[3], "flops", "FLOPs after")):
        a, b = m["after"][key], m["before"][key]
        col.metric(name, human(a), f"{a / b - 1:.1%}", delta_color="inverse", help=f"{b:,} -> {a:,}")
    st.page_link("pages/compare.py", label="Compare this run with the others", icon=":material/scatter_plot:")
    if m["status"] == "done":
        finetune_ui(sel, path)


def finetune_ui(sel, run_path) -> None:
    st.subheader("Fine-tune it in the background")
    st.caption(f"Fine-tuning runs as a job on **{device_label()}**; you can leave this page. On this kind of "
               "CPU, ResNet-20 trains at about 200-300 images/s, so one CIFAR-10 epoch (50,000 images) takes "
               "3-4 minutes: a train subset makes a quick demo.")
    if sel.data_path is None:
        st.warning(f"Fine-tuning trains on the {sel.dataset} training images, and there are none here: the Model & "
                   "data page says how to get them.", icon=":material/folder_off:")
    with st.form("finetune"):
        cols = st.columns(4)
        epochs = cols[0].number_input("Epochs", 1, 300, 3)
        lr = cols[1].number_input("Learning rate", 1e-5, 1.0, 0.01, format="%.4f")
        subset = cols[2].number_input("Train images (0 = all)", 0, 1_000_000, 0, 1000,
                                      help=f"0 or at least {BATCH} (one batch)")
        test_subset = cols[3].number_input("Test images (0 = all)", 0, 1_000_000, 0, 1000,
                                           help="Images the accuracy after each epoch is measured on (seed 0); "
                                                "fewer is quicker, all 10,000 is what the Compare page should "
                                                "compare.")
        submitted = st.form_submit_button("Queue fine-tuning", type="primary", icon=":material/play_arrow:",
                                          disabled=sel.data_path is None)
    if submitted:
        if 0 < subset < BATCH:
            st.error(f"{subset} training images make no batch of {BATCH}: use 0 (all) or at least {BATCH}.")
        else:
            submit_finetune(run_path, sel.dataset, int(epochs), float(lr), int(subset), int(test_subset))
    if st.session_state.get(LAST_JOB):
        st.success(f"Fine-tuning queued as job {st.session_state[LAST_JOB]}", icon=":material/schedule:")
        st.page_link("pages/jobs.py", label="Follow it on the Jobs page", icon=":material/pending_actions:")


def submit_finetune(run_path, dataset: str, epochs: int, lr: float, subset: int, test_subset: int) -> None:
    """Queue the fine-tuning of the run at ``run_path`` with the jobs API (a worker process does the work)."""
    from prunekit import jobs

    try:
        job = jobs.submit("finetune", {"run": str(run_path), "epochs": epochs, "lr": lr, "subset": subset,
                                       "test_subset": test_subset, "batch_size": BATCH, "data": dataset})
    except (ValueError, OSError) as exc:
        st.error(f"The job could not be queued: {exc}")
        return
    st.session_state[LAST_JOB] = job.id


# ----------------------------------------------------------------------------------------------

INTRO = ("A **coupled group** is a set of convs whose filters must go together. In a ResNet, the convs whose outputs "
         "meet in one residual addition (and the stem conv feeding the first one) must keep the same channels, so "
         "they are pruned together with one ratio; the other convs form groups of one.")


def main() -> None:
    sel = page_with_model(
        "Plan & prune",
        "Choose how many filters each layer loses, see the cost at once, then prune for real and fine-tune.")
    struct = _structure(sel.model, sel.key, sel.input_size)
    family = model_info(sel.arch).family
    criterion, note = criterion_in_use(sel)
    st.markdown(INTRO)
    if struct.frozen:
        st.caption("Not prunable here: " + "; ".join(f"{k} ({v})" for k, v in struct.frozen.items()) + ".")
    preset_ui(struct, sel, criterion)
    ratios = current_plan(struct, sel)
    est = estimate(struct, ratios)

    st.subheader("Per-group ratios")
    left, right = st.columns([1.1, 1], gap="large")
    with left:
        sliders, table = st.tabs(["Sliders", "Table"])
        with sliders:
            sliders_ui(struct, ratios, family)
        with table:
            table_ui(struct, sel, ratios, est, family)
    with right:
        estimate_ui(est)
        sensitivity_ui(struct, sel, ratios, criterion)

    st.subheader("Filters kept per conv")
    st.plotly_chart(filters_figure(est), width="stretch")
    st.caption("Filters per conv in forward order: the light bar is the width before pruning, the blue bar what "
               "the plan keeps. Convs of one coupled group always keep the same number.")
    prune_ui(struct, sel, ratios, criterion, note)
    last_run_ui(sel)


main()
