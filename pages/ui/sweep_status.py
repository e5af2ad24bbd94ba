"""The Compare page's view of sweeps: which curves are partial (stopped part-way or still running), the notice and
Resume of each stopped sweep, the sweep jobs of the sidebar's model the page follows, and how far each is."""
import datetime as dt

import pandas as pd
import streamlit as st

from pages.ui.classroom import is_presenter
from pages.ui.sidebar import selection
from pages.ui.sweep_form import REFRESH_S
from prunekit.runs import jobs


def sweep_marks(progress: pd.DataFrame, sweeps: dict[str, jobs.Job]) -> dict[tuple[str, str], str]:
    """{(sweep, criterion): "partial: k of n points"} of every curve whose sweep is not complete ("running: ..."
    while its job runs); ``progress``: :func:`prunekit.runs.compare.sweep_progress`'s table, ``sweeps``: the sweep
    jobs by id (a job's id is its sweep's)."""
    return {(r.sweep, r.criterion): f"{'running' if r.sweep in sweeps and sweeps[r.sweep].active else 'partial'}: "
                                    f"{r.done} of {int(r.total)} points"
            for r in progress[progress["partial"]].itertuples()}


def stopped_sweeps(progress: pd.DataFrame, sweeps: dict[str, jobs.Job]) -> None:
    """Each sweep stopped part-way: how many points of each criterion it holds, and Resume (its job continues under
    the same id, keeping the points it finished), or the command that continues a sweep made on the command line."""
    running = progress["sweep"].map(lambda s: s in sweeps and sweeps[s].active).astype(bool)
    for sweep_id, rows in progress.loc[~running].groupby("sweep", sort=False):
        if not rows["partial"].any():
            continue
        counts = ", ".join(f"{r.criterion} {r.done} of {int(r.total)}" for r in rows.itertuples())
        dashed = "Its dashed curves are partial. " if (rows["partial"] & (rows["done"] > 0)).any() else ""
        job = sweeps.get(sweep_id)
        resumable = job is not None and job.status in jobs.RESUMABLE and is_presenter()
        text, button = st.columns([5, 1], vertical_alignment="center")
        text.info(f"Sweep `{sweep_id}` stopped part-way (points finished: {counts}). {dashed}"
                  + ("Resume continues the same sweep: the finished points stay, only the others are made."
                     if resumable else f"`python -m prunekit sweep ... --resume {sweep_id}` (the same command) "
                     "continues it: the finished points stay."), icon=":material/pause:")
        if resumable and button.button("Resume", key=f"compare_resume_{sweep_id}", icon=":material/play_arrow:",
                                       width="stretch"):
            try:
                jobs.resume(job.id)
            except ValueError as exc:
                st.warning(str(exc))
            else:
                st.rerun()


def sweep_jobs() -> dict[str, jobs.Job]:
    """Every sweep job by id (a sweep made on this page is named after its job)."""
    return {j.id: j for j in jobs.list_jobs() if j.kind == "sweep"}


def running_here(sweeps: dict[str, jobs.Job]) -> list[jobs.Job]:
    """The queued or running sweeps of the sidebar's model (its architecture): while there is one, the chart and
    the table redraw themselves."""
    arch = selection().arch
    return [j for j in sweeps.values() if j.active and (arch is None or j.args.get("arch") == arch)]


def live_note(running: list[jobs.Job]) -> None:
    """Which sweeps this page is following, and how far each is."""
    for job in running:
        p = job.progress
        where = f"point {p['done']} of {p['total']}" if "done" in p else job.status
        st.caption(f":material/autorenew: Sweep job `{job.id}` ({job.description}): {where}. The chart and the "
                   f"table redraw every {REFRESH_S} s until it ends (updated {dt.datetime.now():%H:%M:%S}).")
