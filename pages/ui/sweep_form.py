"""The Compare page's sweep form: criteria x targets queued as one background job on the sidebar's model; its
points arrive on the chart as curves."""
from __future__ import annotations

import streamlit as st

from pages.ui.classroom import may, visitor
from pages.ui.sidebar import selection
from pages.ui.state import PLAN_ROUND_TO, chosen_criterion
from prunekit.criteria import criterion_class, list_criteria
from prunekit.defaults import FALLBACK_CRITERION, HELD_OUT, RECALIBRATION, ROUND_TO, SWEEP
from prunekit.errors import UserError
from prunekit.pruning.presets import get_preset, list_presets
from prunekit.runs import jobs
from prunekit.runs.runtimes import runtime_labels
from prunekit.runs.sweeps import SweepSpec

DEFAULT_TARGETS = ", ".join(map(str, SWEEP.targets))
LAST_SWEEP = "compare_last_sweep"
REFRESH_S = 3  # seconds between the Compare page's redraws while a sweep of the sidebar's model runs


def sweep_form() -> None:
    """Choose criteria, targets and the allocation; Queue submits a ``sweep`` job (progress and cancel on Jobs)."""
    sel = selection()
    with st.expander("Draw new curves: sweep criteria across FLOPs targets (a background job)"):
        if sel.model is None:
            st.info(sel.error or "Pick a model in the sidebar first.", icon=":material/info:")
            return
        if sel.data_problem:
            st.warning(f"A sweep evaluates every point on {sel.dataset}'s images, and this model cannot take them: "
                       f"{sel.data_problem}", icon=":material/block:")
            return
        if not may("queue a sweep (it holds the machine for minutes)"):
            return
        usable = [n for n in list_criteria() if not criterion_class(n).slow]
        presets = [n for n in list_presets() if SweepSpec.allows(n)]
        with st.form("sweep"):
            criteria = st.multiselect("Criteria", usable, default=default_criteria(usable),
                                      help="The criterion chosen on the Saliency page and l1, the weight-only "
                                           "baseline, to start with; add any other")
            targets = st.text_input("Fractions of FLOPs to remove", DEFAULT_TARGETS, help="comma-separated, each "
                                    "in (0, 1)")
            preset = st.selectbox("Allocation", presets, index=presets.index(SWEEP.preset),
                                  format_func=lambda n: get_preset(n).label)
            round_to = st.number_input("Round kept channels to a multiple of", 1, 256,
                                       int(st.session_state.get(PLAN_ROUND_TO, ROUND_TO)), 1,
                                       help="as on the Plan page (which it starts from): 1 keeps exactly what the "
                                            "target asks; 16 or 8 (a CPU's vector block) runs faster on a CPU and "
                                            "overshoots the target a little")
            runtimes = st.pills("Also time each point's latency in (optional, slower)", list(runtime_labels()),
                                selection_mode="multi", default=[], format_func=runtime_labels().get,
                                help="batch 1 and 64, as a pruned run records it (ONNX Runtime: the model exported "
                                     "and checked equal first): several seconds more per point, in each runtime "
                                     "picked. None picked: no latency, the quickest sweep (the FLOPs and "
                                     "parameters are counted either way)")
            plain = st.checkbox("Also measure each point right after pruning (before recalibration)", SWEEP.plain,
                                help="one more evaluation per point; the recalibrated accuracy is the one that "
                                     "ranks plans like fine-tuning does")
            go = st.form_submit_button("Queue the sweep", type="primary", icon=":material/play_arrow:")
        st.caption(f"Each point is pruned, its BatchNorm recalibrated on {RECALIBRATION.n:,} training images and "
                   f"evaluated on {HELD_OUT.n:,} test images (the unpruned model once for the whole sweep), and kept "
                   "as a run; the chart joins one criterion's points into a curve and redraws itself while the "
                   "sweep runs. Follow it, or cancel it, on the Jobs page; a cancelled sweep resumed there keeps the "
                   "points it finished and makes only the others.")
        if go:
            _submit(sel, criteria, targets, preset, int(round_to), tuple(runtimes), bool(plain))
        if st.session_state.get(LAST_SWEEP):
            job_id, resumed = st.session_state[LAST_SWEEP]
            st.success(f"The same sweep stopped before: resumed as job {job_id}, keeping the points it finished"
                       if resumed else f"Sweep queued as job {job_id}", icon=":material/schedule:")
            st.page_link("pages/jobs.py", label="Follow it on the Jobs page", icon=":material/pending_actions:")


def default_criteria(usable: list[str]) -> list[str]:
    """What the form opens on: the Saliency page's criterion and l1 (the weight-only baseline), those a sweep can
    run (:attr:`prunekit.criteria.base.Criterion.slow` ones cannot)."""
    return [n for n in dict.fromkeys((chosen_criterion(), FALLBACK_CRITERION)) if n in usable]


def _submit(sel, criteria: list[str], targets: str, preset: str, round_to: int, runtimes: tuple[str, ...],
            plain: bool) -> None:
    """Queue the sweep; the same sweep of the same weights stopped before (cancelled, interrupted, failed) is resumed
    under its id instead, keeping the points it finished."""
    try:
        values = [float(t) for t in targets.replace(" ", "").split(",") if t]
    except ValueError:
        st.error(f"Targets must be numbers separated by commas, got {targets!r}.", icon=":material/error:")
        return
    try:
        spec = SweepSpec(criteria=tuple(criteria), targets=tuple(values), preset=preset, round_to=round_to,
                         runtimes=runtimes, plain=plain)
        classes = int(sel.header.get("num_classes") or st.session_state.get("num_classes", 10))
        args = {"criteria": list(spec.criteria), "targets": list(spec.targets), "preset": spec.preset,
                "round_to": spec.round_to, "runtimes": list(spec.runtimes), "plain": spec.plain, "data": sel.dataset,
                "arch": sel.arch, "num_classes": classes, "input_size": list(sel.input_size), "probe_n": sel.probe_n,
                "weights_hash": sel.key}
        stopped = jobs.stopped_twin("sweep", args)
        job = jobs.resume(stopped.id) if stopped else jobs.submit("sweep", args, model=sel.model, arch=sel.arch,
                                                                   num_classes=classes, owner=visitor())
    except (UserError, OSError) as exc:
        st.error(f"The sweep could not be queued: {exc}", icon=":material/error:")
        return
    st.session_state[LAST_SWEEP] = (job.id, stopped is not None)
