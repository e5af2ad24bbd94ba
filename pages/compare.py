"""Compare runs: every pruning on disk as accuracy vs cost, its Pareto front, one run opened (channels,
fine-tuning curve, downloads, its plan back into the editor) and the table of all runs."""
import zlib
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.ui.figures import CRITERION_COLORS, criterion_color, legible
from pages.ui.last_run import finetune_ui
from pages.ui.router import through_router
from pages.ui.runs_table import runs_table
from pages.ui.run_charts import channels_chart, finetune_chart
from pages.ui.state import CRITERION, PLAN
from pages.ui.sweep_form import REFRESH_S, sweep_form
from pages.ui.sweep_status import live_note, running_here, stopped_sweeps, sweep_jobs, sweep_marks
from pages.ui.wording import local_time, message
from prunekit.runs import jobs
from prunekit.runs.compare import (
    COSTS,
    STAGES,
    axes,
    axis,
    baselines,
    channels_frame,
    comparison,
    finetune_frame,
    latency_frame,
    report_zip,
    run_files,
    sweep_progress,
)
from prunekit.runs.records import list_runs, read_manifest, runs_root
from prunekit.runs.runtimes import runtime_labels
from prunekit.text import human

RUN_KEY = "compare_run"


CLI_EXAMPLE = """python -m prunekit plan --checkpoint assets/resnet20_cifar10.safetensors \\
    --criterion l1 --preset uniform --ratio 0.5 --out plan.json
python -m prunekit prune --checkpoint assets/resnet20_cifar10.safetensors \\
    --criterion l1 --plan plan.json"""


def empty_state() -> None:
    st.info(
        f"No runs yet in `{runs_root().resolve()}`. A run is one pruning kept on disk (the plan, the smaller model, "
        "its cost and accuracy). Make one on the **Plan & prune** page, or from a terminal (runs go to "
        "`$PRUNEKIT_RUNS`, default `./runs`):", icon=":material/science:")
    st.code(CLI_EXAMPLE, language="bash")
    st.page_link("pages/plan.py", label="Go to Plan & prune", icon=":material/tune:")


def axis_controls() -> tuple[str, str, bool]:
    """(x: a key of axes(), the cost read in the picked runtime; stage; whether to star the unpruned models)."""
    a, r, b, c = st.columns([1, 1, 1.6, 1])  # the toggle's label whole at 1280 px
    cost = a.selectbox("Cost (x axis)", list(COSTS), format_func=COSTS.get, key="compare_x")
    runtime = r.radio("Runtime (latency)", list(runtime_labels()), format_func=runtime_labels().get, key="compare_runtime",
                      help="Where the latencies were timed: PyTorch eager on the run's device, or the model exported "
                           "to ONNX and run by ONNX Runtime on the CPU (checked equal to the module first).")
    x = axis(cost, runtime)
    stage = b.radio("Accuracy (y axis)", list(STAGES), format_func=STAGES.get, horizontal=True, key="compare_stage")
    with_base = c.toggle("Unpruned star", key="compare_base",
                         help="Also draw the unpruned model as a star at its own cost. Off: the x axis fits the "
                              "runs, and the unpruned model is the dotted line at its accuracy. On: its star too (the "
                              "runs then bunch up on the left).")
    return x, stage, with_base


SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "x", "pentagon", "triangle-down", "hourglass"]


def _symbol(criterion) -> str:
    """The marker of ``criterion``, fixed like its colour (:data:`pages.ui.figures.CRITERION_COLORS`' order; a
    criterion from elsewhere by its name); never a star, the unpruned model's."""
    known = list(CRITERION_COLORS)
    k = known.index(criterion) if criterion in known else zlib.crc32(str(criterion).encode())
    return SYMBOLS[k % len(SYMBOLS)]


def _x_range(points: pd.DataFrame, base: pd.DataFrame, with_base: bool) -> list[float] | None:
    """The x axis fitted to the trusted runs (and the unpruned models when asked): a far-away star or a
    latency timed on a busy machine must not squash every run into one column."""
    xs = points.loc[points["suspect"].isna(), "x"].tolist() + (base["x"].tolist() if with_base else [])
    if not xs:
        return None
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    return [lo - pad, hi + pad]


def _sweep_curves(fig: go.Figure, group: pd.DataFrame, criterion, color: str, marks: dict) -> None:
    """One line per sweep of ``criterion`` (no legend entry of its own: the criterion's dots hold it); a sweep
    stopped part-way, or still running, is dashed and labelled with ``marks[(sweep, criterion)]``."""
    for sweep_id, curve in group[group["sweep"].notna()].groupby("sweep"):
        curve = curve.sort_values("x")
        mark = marks.get((sweep_id, criterion))
        label = [""] * (len(curve) - 1) + [f"{criterion} ({mark})"] if mark else None  # by its last point
        fig.add_scatter(x=curve["x"], y=curve["accuracy"], mode="lines+text" if mark else "lines",
                        line=dict(color=color, width=2, dash="dash" if mark else "solid"), text=label,
                        textposition="top left", textfont=dict(color=color, size=13), showlegend=False,
                        name=f"{criterion}: sweep {sweep_id}" + (f" ({mark})" if mark else ""),
                        legendgroup=str(criterion), hoverinfo="skip")


def _runs_trace(fig: go.Figure, group: pd.DataFrame, criterion, x: str, marks: dict) -> None:
    color, symbol = criterion_color(criterion), _symbol(criterion)
    _sweep_curves(fig, group, criterion, color, marks)
    suspect = group["suspect"].notna()
    fig.add_scatter(
        x=group["x"], y=group["accuracy"], mode="markers", name=str(criterion), legendgroup=str(criterion),
        customdata=group[["run", "preset", "stage", "n", "suspect"]].astype(object).fillna("-").to_numpy(),
        marker=dict(size=group["pareto"].map({True: 14, False: 10}), color=color,
                    symbol=[f"{symbol}-open" if s else symbol for s in suspect],
                    line=dict(width=group["pareto"].map({True: 2, False: 0}), color="#212529")),
        hovertemplate="<b>%{customdata[0]}</b><br>" + f"criterion {criterion}<br>preset %{{customdata[1]}}"
                      "<br>accuracy %{y:.2f}% (%{customdata[2]}, on %{customdata[3]} test images)<br>" + axes()[x]
                      + " %{x:.4s}<br>suspect timing: %{customdata[4]}<extra></extra>")


def scatter(points: pd.DataFrame, base: pd.DataFrame, x: str, with_base: bool = False,
            marks: dict | None = None) -> go.Figure:
    """One legend entry, colour and symbol per criterion (the colour it has in every chart), a line per sweep
    (dashed and labelled with ``marks[(sweep, criterion)]`` when the sweep is partial), the Pareto front as a step
    line, each unpruned model as a dotted line at its accuracy (and a star at its cost when ``with_base``); open
    markers: suspect latencies."""
    fig = go.Figure()
    front = points[points["pareto"]].sort_values("x")
    fig.add_scatter(x=front["x"], y=front["accuracy"], mode="lines", line=dict(color="#adb5bd", dash="dash",
                    shape="hv"), name="Pareto front", hoverinfo="skip")
    for criterion, group in points.groupby("criterion", sort=True, dropna=False):
        _runs_trace(fig, group, criterion, x, marks or {})
    for _, b in base.iterrows():
        on = f"{int(b['n']):,} test images" if pd.notna(b["n"]) else "test images not recorded"
        fig.add_hline(y=b["accuracy"], line=dict(color="#b08900", dash="dot", width=1.5),
                      annotation_text=f"unpruned {b['arch']}: {b['accuracy']:.2f}% ({on})",
                      annotation_position="bottom right", annotation_font=dict(color="#7a5f00"))
    if with_base and len(base):
        fig.add_scatter(x=base["x"], y=base["accuracy"], mode="markers", name="unpruned",
                        marker=dict(symbol="star", size=18, color="#ffd166", line=dict(width=1, color="#212529")),
                        customdata=base[["arch", "runs"]].to_numpy(),
                        hovertemplate="<b>unpruned %{customdata[0]}</b><br>accuracy %{y:.2f}%<br>"
                                      + axes()[x] + " %{x:.4s}<br>%{customdata[1]} run(s) from it<extra></extra>")
    fig.update_xaxes(title=axes()[x], tickformat="~s" if x in ("flops", "params") else None,
                     range=_x_range(points, base, with_base))
    fig.update_yaxes(title="top-1 test accuracy (%)")
    fig.update_layout(height=480, legend=dict(title="criterion", y=0.9), clickmode="event+select")
    return legible(fig)


def clicked_run(event, runs: list[str]) -> None:
    """A new click on a run's point selects it in the run picker (drawn after the chart)."""
    points = event.get("selection", {}).get("points", []) if event else []
    data = [p.get("customdata") for p in points]
    first = [(list(d.values()) if isinstance(d, dict) else d)[0] for d in data if d]
    picked = [run for run in first if run in runs]
    if picked and st.session_state.get("compare_click") != picked[0]:
        st.session_state["compare_click"] = st.session_state[RUN_KEY] = picked[0]


def chart_section(runs: pd.DataFrame, sweeps: dict[str, jobs.Job]) -> pd.DataFrame:
    """The accuracy-vs-cost chart (``sweeps``: the sweep jobs by id, whose state marks their curves); returns its
    points (with their Pareto mask)."""
    x, stage, with_base = axis_controls()
    points = comparison(runs, x, stage)
    progress = sweep_progress(runs)
    stopped_sweeps(progress, sweeps)
    if points.empty:
        st.info("No run has both this cost and an accuracy yet: a run pruned without test images records no "
                "accuracy, and one pruned without timing no latency (nor one whose ONNX export failed or disagreed an "
                "ONNX Runtime latency: its run says why). Pick another cost or runtime, or prune with data.")
        return points
    event = st.plotly_chart(scatter(points, baselines(runs, x), x, with_base, sweep_marks(progress, sweeps)),
                            width="stretch",
                            key=f"compare_chart_{x}_{stage}_{with_base}", on_select="rerun", selection_mode="points")
    suspects = points[points["suspect"].notna()]
    if len(suspects):
        st.warning(f"{len(suspects)} run(s) drawn open and left off the front and the axis range: their timing looks "
                   "wrong: " + "; ".join(f"{r}: {w}" for r, w in zip(suspects["run"], suspects["suspect"])),
                   icon=":material/timer_off:")
    clicked_run(event, points["run"].tolist())
    st.caption("Each dot is a pruned model: further left is cheaper, higher is more accurate; the dotted line is "
               "the unpruned model the runs started from, at its accuracy on the same test images as the runs "
               "(the Model page measures it on the whole test split, so the two can differ a little). Hover a dot "
               "for how many test images its accuracy is measured on. A line joins the points of one sweep (one "
               "criterion at several targets, `python -m prunekit sweep`): the accuracy-vs-cost curve papers "
               "compare methods by; a dashed one is a sweep stopped part-way (or still running), its label says "
               "how many of its points are there. Each criterion keeps its colour on every page. Outlined dots are on the Pareto front (no other run is both cheaper and more "
               "accurate): click any dot to open its run below.")
    return points


def _accuracy(col, label: str, entry, missing: str, on: int | None) -> None:
    """One accuracy of a run, its help naming the test images it is on (``on``: how many, None: not recorded)."""
    value = entry.get("accuracy") if isinstance(entry, dict) else None
    where = f"top-1 on {on:,} test images" if isinstance(on, int) and on > 0 else "top-1 on the test images"
    col.metric(label, "–" if value is None else f"{value:.2f}%", help=where if value is not None else missing)


def run_metrics(m: dict) -> None:
    before, after = m.get("before") or {}, m.get("after") or {}
    acc = m.get("accuracy") or {}
    cols = st.columns(6)
    not_measured = "not measured: this run was pruned without test images"
    n, tuned_on = (m.get("data") or {}).get("n"), (((m.get("finetune") or {}).get("data")) or {}).get("test")
    _accuracy(cols[0], "Accuracy before", acc.get("before"), not_measured, n)
    _accuracy(cols[1], "After pruning", acc.get("pruned"), not_measured, n)
    _accuracy(cols[2], "Recalibrated", acc.get("recalibrated"), "not recalibrated (pruned without training images, "
              "or before recalibration was a stage)", n)
    _accuracy(cols[3], "After fine-tuning", m.get("finetune"), "not fine-tuned (yet)", tuned_on)
    for col, key, label in ((cols[4], "params", "Parameters"), (cols[5], "flops", "FLOPs")):
        if before.get(key) and after.get(key) is not None:
            col.metric(label, human(after[key]), f"from {human(before[key])}", delta_color="off", delta_arrow="off")
        else:
            col.metric(label, "–", help="not measured: the run stopped before pruning")


def latency_table(m: dict) -> None:
    """The run's latency before and after pruning in each runtime, and why ONNX Runtime has none when it has none."""
    frame = latency_frame(m)
    timed = frame[frame["before"].notna() | frame["after"].notna()]
    if len(timed):
        doubts = timed["check"].notna()
        shown = timed.drop(columns="note").assign(check=doubts.map({False: "yes", True: "no: see below"}))
        st.dataframe(shown, hide_index=True, column_config={
            "before": st.column_config.NumberColumn("before (ms)", format="%.2f"),
            "after": st.column_config.NumberColumn("after (ms)", format="%.2f"),
            "speedup": st.column_config.NumberColumn(format="%.2fx"),
            "check": st.column_config.TextColumn("plausible?", width="medium",
                                                 help="a speedup far above the MAC reduction, or a pruned model "
                                                      "much slower, means a timing was disturbed")})
        for _, row in timed[doubts].iterrows():  # the reason in full, never cut by a column
            st.caption(f":material/timer_off: {row['runtime']}, batch {row['batch']}: {row['check']}")
    for note in frame["note"].dropna().unique():
        st.caption(f"No ONNX Runtime latency: {note}")


def downloads(run_dir: Path, charts: dict[str, go.Figure]) -> None:
    """The report zip (built on click) and the run's model files (only files inside the run directory)."""
    cols = st.columns(3)
    cols[0].download_button("Report (zip)", data=lambda: report_zip(run_dir, {
        name: fig.to_html(include_plotlyjs=True, full_html=True) for name, fig in charts.items()}),
        file_name=f"{run_dir.name}-report.zip", mime="application/zip", icon=":material/download:",
        help="manifest.json, plan.json, channels.csv, finetune.csv and the charts as HTML", key="compare_zip")
    for col, (label, path) in zip(cols[1:], run_files(run_dir).items()):
        col.download_button(f"{label.capitalize()} model (.safetensors)", data=lambda p=path: p.read_bytes(),
                            file_name=f"{run_dir.name}-{label}.safetensors", mime="application/octet-stream",
                            icon=":material/download:", key=f"compare_model_{label}",
                            help="reload with prunekit.load_checkpoint (the file rebuilds the smaller model)")


def searched_note(preset: dict, budget: dict | None) -> None:
    """A run whose plan the search chose says so: how many candidates, the budget, and the latency it reached."""
    found = preset.get("search") if preset.get("name") == "search" else None
    if found:
        st.info(f"Searched plan: the best of {found['judged']} candidates ({found['method']}, seed {found['seed']}; "
                f"{found['accuracy']:.1f}% on the search's training images), removing at least "
                f"{preset['target']:.0%} of the {preset['by']}.", icon=":material/travel_explore:")
    if budget and budget.get("measured_ms") is not None:
        st.caption(f"Latency budget: -{budget['target']:.0%} in {budget['runtime']} at batch {budget['batch']}; "
                   f"predicted {budget['predicted_ms']:.2f} ms, measured {budget['measured_ms']:.2f} ms "
                   f"(from {budget['before_ms']:.2f} ms: {budget['reached']:.1%} removed).")


def run_detail(row: pd.Series) -> None:
    """One run opened: summary, channels, fine-tuning curve, downloads and 'load this plan'."""
    run_dir = Path(row["path"])
    try:
        m = read_manifest(run_dir)
    except ValueError as exc:
        st.error(f"This run cannot be read: {exc}")
        return
    plan = m.get("plan") or {}
    preset = (plan.get("preset") or {}).get("name") or "hand-made"
    criterion = (m.get("criterion") or {}).get("name") or "?"
    st.markdown(f"**{m['id']}** · status **{m['status']}** · {(m.get('model') or {}).get('arch', '?')} · "
                f"preset **{preset}** · criterion **{criterion}** · created {local_time(m.get('created')) or '?'}")
    if m.get("error"):
        st.error(f"This run {m['status']}: {message(m['error'])}")
    searched_note(plan.get("preset") or {}, m.get("latency_budget"))
    run_metrics(m)
    latency_table(m)
    charts = {}
    channels = channels_frame(m)
    epochs = finetune_frame(m)
    left, right = st.columns(2)
    with left:
        st.markdown("**Filters per conv, before and after**")
        if channels.empty:
            st.info("No pruning report in this run (it stopped before pruning).")
        else:
            charts["channels"] = channels_chart(channels)
            st.plotly_chart(charts["channels"], width="stretch", key="compare_channels")
            st.caption("Grey bars are each conv's filters before pruning, blue bars what is left. Convs of one "
                       "coupled group (a ResNet stage's residual stream) lose the same filters together.")
    with right:
        st.markdown("**Fine-tuning**")
        if epochs.empty or "test_accuracy" not in epochs:
            st.info("Not fine-tuned yet" + (": queue its fine-tuning in the form below this run." if m["status"]
                                            == "done" else f" (the run is {m['status']}: only a finished run "
                                            "fine-tunes)."), icon=":material/model_training:")
        else:
            charts["finetune"] = finetune_chart(epochs)
            st.plotly_chart(charts["finetune"], width="stretch", key="compare_finetune")
            st.caption("Accuracy after each fine-tuning epoch (solid: test images, dotted: training images). A "
                       "curve still rising at the end says more epochs would recover more.")
    downloads(run_dir, charts)
    if m["status"] == "done" and (epochs.empty or "test_accuracy" not in epochs):
        finetune_ui(run_dir, m)
    if plan.get("ratios") is not None and st.button("Load this plan into the editor", icon=":material/tune:",
                                                    key="compare_load", type="primary"):
        st.session_state[PLAN] = dict(plan["ratios"])
        st.session_state[CRITERION] = criterion
        st.switch_page("pages/plan.py")


def one_run(runs: pd.DataFrame) -> None:
    """The run picker (the newest finished run by default, or the dot clicked) and the run opened."""
    readable = runs[runs["status"] != "unreadable"]
    st.subheader("One run")
    if readable.empty:
        st.warning("No run here has a readable manifest; see the table below for why.")
        return
    labels = {r.run: f"{r.run} · {r.status} · {r.criterion}" for r in readable.itertuples()}
    if st.session_state.get(RUN_KEY) not in labels:  # default: the newest finished run
        done = readable.loc[readable["status"] == "done", "run"]
        st.session_state[RUN_KEY] = done.iloc[0] if len(done) else readable["run"].iloc[0]
    picked = st.selectbox("Run (or click a dot above)", list(labels), format_func=labels.get, key=RUN_KEY)
    run_detail(readable[readable["run"] == picked].iloc[0])


def runs_view(following: bool) -> None:
    """Everything drawn from the runs on disk; redrawn every REFRESH_S seconds while a sweep of the sidebar's model
    runs (``following``), and once more, whole, when it ends (which stops the redraws)."""
    sweeps = sweep_jobs()
    running = running_here(sweeps)
    live_note(running)
    runs = list_runs()
    if runs.empty:
        empty_state()
    else:
        points = chart_section(runs, sweeps)
        one_run(runs)
        st.subheader(f"All runs ({len(runs)})")
        runs_table(runs, points, st.session_state.get("compare_runtime") or next(iter(runtime_labels())))
    if following and not running:
        st.rerun()  # the sweep ended: one whole redraw, without the timer


through_router()
st.title("Compare runs")
st.caption("Every pruning kept on disk: which plan and criterion bought the most accuracy for the least cost.")
sweep_form()
FOLLOWING = bool(running_here(sweep_jobs()))
st.fragment(run_every=REFRESH_S if FOLLOWING else None)(runs_view)(FOLLOWING)
