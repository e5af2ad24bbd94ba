"""The Plan page's search for the allocation under a budget (the search preset, :mod:`prunekit.pruning.search`): it
runs in a background thread of this session, its candidates drawn live as accuracy against cost with the budget
as a line, the chosen plan marked and the plan in the editor placed among them; "Load into the editor" makes the
chosen plan the one the sliders and the table edit. A latency budget measures the model's latency model first
(once per runtime, batch and rounding; cached on disk), and the view then predicts the edited plan's latency."""
from __future__ import annotations

import threading
from collections.abc import Callable

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages.ui.cached import split
from pages.ui.classroom import may
from pages.ui.figures import legible
from pages.ui.scoring import scores_with_progress
from prunekit.criteria.scores import to_tensors
from prunekit.defaults import LATENCY_MODEL, MAX_RATIO, RECALIBRATION, SEARCH
from prunekit.errors import UserError
from prunekit.models.layers import TRACE_LOCK
from prunekit.pruning.presets import LATENCY, get_preset
from prunekit.pruning.search import Candidate, candidates_frame, training_judge
from prunekit.pruning.structure import estimate
from prunekit.runs.latency_model import latency_model
from prunekit.runs.runtimes import runtime_labels

RUNNING = "plan_search"  # session key: this session's search (a SearchRun)
POLL_S = 1.0  # how often the live chart is redrawn while the search runs
MEASURES = {"FLOPs": "flops", "parameters": "params", "latency": LATENCY}
START_COLOR, EXPLORED_COLOR, BEST_COLOR, YOURS_COLOR = "#7f7f7f", "#1f77b4", "#d62728", "#2ca02c"


class SearchRun:
    """One search in a daemon thread: ``candidates`` grow as they are judged; ``plan`` (the result), ``error`` (a
    message) or neither while it runs; ``yours``: the edited plan's (reduction, accuracy) on the same images;
    ``stage``: what it is doing."""

    def __init__(self, key: tuple, settings: dict, work: Callable[[SearchRun], None]):
        self.key, self.settings = key, settings
        self.candidates: list[Candidate] = []
        self.plan, self.error, self.yours, self.latency = None, None, None, None
        self.stage = "starting"
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True, name="prunekit-search")
        self.thread.start()

    def _run(self, work: Callable[[SearchRun], None]) -> None:
        try:
            work(self)
        except UserError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown on the page; the session goes on
            self.error = f"{type(exc).__name__}: {exc}"

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


def _work(sel, struct, ratios: dict, tensors: dict, criterion: str, round_to: int, train, s: dict):
    """The thread's work: the latency model (a latency budget), the edited plan judged on the search's images,
    then the search."""
    def work(run: SearchRun) -> None:
        lm = None
        if s["by"] == LATENCY:
            run.stage = f"measuring the latency model ({s['runtime']}, batch {s['batch']})"
            with TRACE_LOCK:  # forward passes and exports: no trace may run meanwhile
                lm = latency_model(sel.model, sel.input_size, runtime=s["runtime"], batch=s["batch"],
                                   round_to=round_to, struct=struct)
            run.latency = lm
        active = {k: v for k, v in ratios.items() if v > 0}
        if active:
            run.stage = "judging your plan"
            judge = training_judge(sel.model, tensors, train, round_to=round_to)
            run.yours = (_reduction(struct, active, s["by"], round_to, lm), judge(active)[0])
        run.stage = "searching"
        run.plan = get_preset("search").make(
            struct, sel.arch, target=s["target"], by=s["by"], model=sel.model, scores=tensors, criterion=criterion,
            round_to=round_to, latency=lm, train=train, seed=s["seed"], candidates=s["candidates"],
            seconds=s["seconds"], on_candidate=run.candidates.append, cancel=run.cancelled.is_set)
        run.stage = "done"
    return work


def _reduction(struct, ratios: dict, by: str, round_to: int, lm) -> float:
    if by == LATENCY:
        return lm.reduction(struct, ratios)
    est = estimate(struct, ratios, round_to)
    return est.macs_reduction if by == "flops" else est.params_reduction


def _settings() -> dict | None:
    """The search's inputs in a row of controls; the settings when Search is pressed, else None."""
    cols = st.columns([1, 2.2, 1, 1, 0.8, 1], vertical_alignment="bottom")
    target = cols[0].number_input("Fraction to remove", 0.05, MAX_RATIO, 0.5, 0.05, key="search_target")
    by = MEASURES[cols[1].radio("of the", list(MEASURES), key="search_by", horizontal=True)]
    candidates = cols[2].number_input("Candidates", 1, 500, SEARCH.candidates, key="search_candidates",
                                      help="Plans judged at most, the presets' starts included.")
    seconds = cols[3].number_input("Seconds", 5.0, 3600.0, SEARCH.seconds, 5.0, key="search_seconds",
                                   help="The time limit: the search stops there with the best plan so far.")
    seed = cols[4].number_input("Seed", 0, 10**6, SEARCH.seed, key="search_seed",
                                help="The same seed, budget and candidates give the same plan.")
    runtime, batch = LATENCY_MODEL.runtime, LATENCY_MODEL.batch
    if by == LATENCY:
        labels = runtime_labels()
        sub = st.columns([1.5, 1, 3], vertical_alignment="bottom")
        runtime = sub[0].selectbox("Latency in", list(labels), index=list(labels).index(LATENCY_MODEL.runtime),
                                   format_func=labels.get, key="search_runtime")
        batch = int(sub[1].number_input("at batch size", 1, 1024, LATENCY_MODEL.batch, key="search_batch"))
    if not cols[5].button("Search", type="primary", key="search_go", icon=":material/travel_explore:",
                          width="stretch"):
        return None
    return {"target": float(target), "by": by, "candidates": int(candidates), "seconds": float(seconds),
            "seed": int(seed), "runtime": runtime, "batch": batch}


def search_ui(struct, sel, ratios: dict, criterion: str, round_to: int,
              load: Callable[[dict, dict], None]) -> None:
    """The search's controls, its live chart, and "Load into the editor" (``load(ratios, the plan's record)``)."""
    st.subheader("Search the allocation")
    train = split(sel.dataset, "train") if sel.data_path is not None and not sel.data_problem else None
    if train is None:
        st.info(f"The search judges candidates on {sel.dataset} training images, and there are none here (the "
                "Model & data page says how to get them).", icon=":material/folder_off:")
        return
    st.caption(f"Starts from the presets' plans at the budget, then explores around the best ({SEARCH.method}): "
               f"each candidate is scaled onto the budget, pruned with **{criterion}**, its BatchNorm recalibrated "
               f"on {RECALIBRATION.n} training images and judged on {SEARCH.n} other training images (the test "
               "images never choose the plan). About a second per candidate for ResNet-20 on a 2-core CPU.")
    if not may("run the search (a minute of the machine per search)"):
        return
    settings = _settings()
    key = (sel.key, criterion, round_to)
    if settings is not None:
        tensors = to_tensors(scores_with_progress(sel, criterion))  # here: scoring traces (never in a thread)
        st.session_state[RUNNING] = SearchRun(key, settings, _work(sel, struct, ratios, tensors, criterion,
                                                                    round_to, train, settings))
    run = st.session_state.get(RUNNING)
    if run is None or run.key != key:
        return
    if run.done:
        _finished(run, struct, ratios, load)
    else:
        _live(run)


@st.fragment(run_every=POLL_S)
def _live(run: SearchRun) -> None:
    """Redrawn every POLL_S seconds while the search runs; the page reruns once when it ends."""
    if run.done:
        st.rerun()
    n, total = len(run.candidates), run.settings["candidates"]
    st.progress(min(n / total, 1.0), text=f"{run.stage.capitalize()}: {n} of at most {total} candidates judged")
    if st.button("Cancel", key="search_cancel", icon=":material/stop:",
                 help="Stops after the candidate being judged, with the best plan found so far."):
        run.cancelled.set()
    st.plotly_chart(search_figure(run), width="stretch", key="search_live_chart")


def _finished(run: SearchRun, struct, ratios: dict, load: Callable[[dict, dict], None]) -> None:
    if run.error:
        st.error(f"The search failed: {run.error}", icon=":material/error:")
        return
    found = run.plan.preset["search"]
    why = {"candidates": "its candidates were judged", "time": "its time ran out", "cancelled": "it was cancelled",
           "exhausted": "it found no new candidate"}[found["stopped"]]
    best = found["accuracy"]
    n = found["judged"]
    st.success(f"Searched {n} candidate{'s' if n > 1 else ''} in {found['seconds']:.0f} s (stopped: {why}). The best, "
               f"candidate {found['best']}, keeps {best:.1f}% on the search's training images.",
               icon=":material/check:")
    st.plotly_chart(search_figure(run), width="stretch", key="search_final_chart")
    if st.button("Load into the editor", type="primary", key="search_load", icon=":material/input:"):
        load({g.root: run.plan.ratios.get(g.root, 0.0) for g in struct.groups}, run.plan.preset)
        st.rerun()
    with st.expander(f"Every candidate ({found['judged']})", icon=":material/table:"):
        st.dataframe(candidates_frame(found), hide_index=True, width="stretch")
    if run.latency is not None:
        lm = run.latency
        st.caption(f"Latency model ({lm.runtime}, batch {lm.batch}): {lm.before_ms:.2f} ms unpruned; your plan "
                   f"{lm.predict(struct, {k: v for k, v in ratios.items() if v > 0}):.2f} ms, the chosen one "
                   f"{run.plan.preset['latency']['predicted_ms']:.2f} ms (predicted).")


def search_figure(run: SearchRun) -> go.Figure:
    """Left: accuracy against the share of the budget's measure removed, the budget a dashed line, the chosen plan
    a star, the edited plan a diamond. Right: accuracy by candidate, in the order judged, with the best so far."""
    s, cands = run.settings, list(run.candidates)
    noun = next(k for k, v in MEASURES.items() if v == s["by"])
    fig = make_subplots(1, 2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=(f"Accuracy against {noun} removed", "Accuracy by candidate"))
    best = max(cands, key=lambda c: c.score) if cands else None
    for started, color, name in ((True, START_COLOR, "presets' plans"), (False, EXPLORED_COLOR, "explored")):
        group = [c for c in cands if (c.source not in SEARCH.methods) == started]
        fig.add_scatter(x=[100 * c.reached for c in group], y=[c.accuracy for c in group], mode="markers",
                        name=name, marker=dict(color=color, size=9), text=[f"#{c.index} {c.source}" for c in group],
                        hovertemplate="%{text}<br>%{x:.1f}% removed<br>%{y:.1f}%<extra></extra>", row=1, col=1)
    if best is not None:
        fig.add_scatter(x=[100 * best.reached], y=[best.accuracy], mode="markers", name="chosen",
                        marker=dict(color=BEST_COLOR, size=18, symbol="star"), row=1, col=1)
    if run.yours is not None:
        fig.add_scatter(x=[100 * run.yours[0]], y=[run.yours[1]], mode="markers", name="your plan",
                        marker=dict(color=YOURS_COLOR, size=14, symbol="diamond"), row=1, col=1)
    fig.add_vline(x=100 * s["target"], line_dash="dash", line_color=BEST_COLOR, row=1, col=1,
                  annotation_text=f"budget {s['target']:.0%}", annotation_position="top left")
    so_far = [max(x.accuracy for x in cands[:i + 1]) for i in range(len(cands))]
    fig.add_scatter(x=[c.index for c in cands], y=[c.accuracy for c in cands], mode="markers", showlegend=False,
                    marker=dict(color=EXPLORED_COLOR, size=7), row=1, col=2)
    fig.add_scatter(x=[c.index for c in cands], y=so_far, mode="lines", name="best so far",
                    line=dict(color=BEST_COLOR, shape="hv"), row=1, col=2)
    fig.update_xaxes(title_text=f"{noun} removed (%)", row=1, col=1)
    fig.update_xaxes(title_text="candidate", row=1, col=2)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_layout(height=380, legend=dict(orientation="h", y=1.18, x=0))
    return legible(fig)
