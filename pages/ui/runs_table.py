"""Compare's table of every run: the run's id and one view of its columns (accuracy, cost, origin and status) at a
time, each view fitting the main column at 1280 px, and why each unreadable run cannot be read."""
import pandas as pd
import streamlit as st

from pages.ui.wording import HEADLINE_CHARS, WRAPPED_ROW_PX, headline, local_time, message, wrapped_height
from prunekit.defaults import LATENCY_BATCHES
from prunekit.runs.compare import axis
from prunekit.runs.runtimes import runtime_labels
from prunekit.text import human

# px: a run's id ('20261207-214311-resnet20-b06072': 31 characters, 204 px of 14 px text) and the cell's padding; a
# longer id (a longer model name) breaks onto a second line of taller rows
RUN_PX, RUN_CHARS = 225, 31
# the All runs table's columns beside the run's id, a view at a time, each view fitting the main column at 1280 px
# (818 px): px per column, by the column's name before any " (...)" (the latency columns name their runtime)
VIEWS = {"accuracy": {"criterion": 115, "acc. before": 75, "acc. pruned": 75, "acc. recalibrated": 95,
                      "acc. fine-tuned": 85, "test images": 85, "Pareto": 60},
         "cost": {"model": 135, "FLOPs": 115, "params": 100, "latency b1": 115, "latency b64": 120},
         "origin and status": {"preset": 95, "created": 150, "status": 85, "error": 260}}


def runs_frame(runs: pd.DataFrame, points: pd.DataFrame, latency: dict[str, str]) -> pd.DataFrame:
    """Every run, newest first: its accuracies, costs read 'before → after', its latencies (``latency``: column ->
    the axis it reads), whether it is on the chart's Pareto front, and its origin and status in words."""
    front = dict(zip(points["run"], points["pareto"]))

    def col(name):
        return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)

    def costs(name):
        return [None if pd.isna(b) or pd.isna(a) else f"{human(b)} → {human(a)}"
                for b, a in zip(col(f"{name}_before"), col(name))]

    return pd.DataFrame({
        "run": runs["run"], "criterion": col("criterion"), "acc. before (%)": col("accuracy_before"),
        "acc. pruned (%)": col("accuracy_pruned"), "acc. recalibrated (%)": col("accuracy_recalibrated"),
        "acc. fine-tuned (%)": col("accuracy_finetuned"), "test images": col("test_images"),
        "FLOPs": costs("flops"), "params": costs("params"), **{k: col(v) for k, v in latency.items()},
        "Pareto": [front.get(r, False) for r in runs["run"]], "status": runs["status"], "model": col("arch"),
        "preset": col("preset"), "created": [local_time(c) if isinstance(c, str) else None for c in col("created")],
        "error": [headline(e, HEADLINE_CHARS) if isinstance(e, str) else None for e in col("error")]})


def runs_table(runs: pd.DataFrame, points: pd.DataFrame, runtime: str) -> None:
    """Every run in a table that fits 1280 px: the run's id and one view of its columns (accuracy, cost, origin and
    status), picked above it; latencies in ``runtime``; a failure's message wrapped (its whole text: the run,
    opened above)."""
    latency = {f"latency b{b} (ms, {runtime_labels()[runtime]})": axis(f"latency_b{b}", runtime)
               for b in LATENCY_BATCHES}
    table = runs_frame(runs, points, latency)
    view = st.segmented_control("Columns", list(VIEWS), default="accuracy", required=True, key="compare_columns")
    named = {c.split(" (")[0]: c for c in table}
    widths = {"run": RUN_PX, **{named[c]: px for c, px in VIEWS[view].items()}}
    config = {  # short headers: the caption says the units
        **{c: st.column_config.NumberColumn(stage, format="%.2f", help=f"top-1 test accuracy (%), {stage}")
           for c in table if (stage := c.removeprefix("acc. ").removesuffix(" (%)")) != c},
        **{c: st.column_config.NumberColumn(c.split(" (")[0] + " (ms)", format="%.2f",
                                            help=f"milliseconds per batch in {runtime_labels()[runtime]}")
           for c in latency},
        "test images": st.column_config.NumberColumn(format="%d", help="test images the accuracies before, after "
                                                     "pruning and recalibrated are measured on (the fine-tuned one: "
                                                     "the run's fine-tuning settings)"),
        "created": st.column_config.TextColumn(help="in this machine's time zone"),
        "error": st.column_config.TextColumn(help="why it failed, stopped or cannot be read (the whole message: "
                                                  "open the run above; an unreadable one's is under the table)")}
    wrapped = (view == "origin and status" and table["error"].notna().any()  # a message on up to four lines
               or table["run"].str.len().max() > RUN_CHARS)
    st.dataframe(table, hide_index=True, width="stretch", column_order=list(widths), placeholder="–",
                 row_height=WRAPPED_ROW_PX if wrapped else None,
                 height=wrapped_height(len(table)) if wrapped else "auto",
                 column_config={c: config.get(c, st.column_config.Column()) | {"width": px}
                                for c, px in widths.items()})
    st.caption("One row per run, newest first; Columns picks what it shows beside each run: accuracies (%), costs "
               "(before → after pruning; latencies in ms, in the runtime picked above the chart) or where it comes "
               "from and, for a failed, interrupted or unreadable run, why. Pareto marks the runs on the front of "
               "the chart above.")
    unreadable_runs(runs)


def unreadable_runs(runs: pd.DataFrame) -> None:
    """Why each unreadable run cannot be read, in full (the table's cell holds its headline, and such a run cannot
    be opened above)."""
    bad = runs[(runs["status"] == "unreadable") & runs["error"].notna()] if "error" in runs else runs.iloc[:0]
    if len(bad):
        with st.expander(f"Why {len(bad)} run(s) cannot be read", icon=":material/report:"):
            st.markdown("\n".join(f"- `{r.run}`: {message(r.error)}" for r in bad.itertuples()))
