"""Jobs: the background work (fine-tuning, training, sweeps, long scoring) with live progress, curves, cancel and
resume.

Everything shown is read from disk (prunekit.runs.jobs), so a refresh or a restart of the dashboard finds it again.
"""
import datetime as dt

import pandas as pd
import streamlit as st

from pages.ui.classroom import classroom, is_presenter
from pages.ui.figures import training_curves
from pages.ui.router import through_router
from pages.ui.sidebar import device_label
from pages.ui.wording import HEADLINE_CHARS, WRAPPED_ROW_PX, headline, local_time, message, wrapped_height
from prunekit.runs import jobs
from prunekit.runs.records import list_runs
from prunekit.text import duration

REFRESH_S = 2  # seconds between redraws while a job is queued or running
KIND_WORDS = {"finetune": "fine-tuning", "train": "training", "score": "scoring", "sensitivity": "sensitivity scans",
              "sweep": "sweeps"}  # the registered job kinds in words (another kind is named as registered)
STATUS_ICON = {"queued": ":material/schedule:", "running": ":material/autorenew:", "done": ":material/check_circle:",
               "failed": ":material/error:", "cancelled": ":material/cancel:", "interrupted": ":material/pause_circle:"}


def _progress_text(job: jobs.Job, p: dict) -> str:
    """One line of the job's progress ``p`` (:attr:`prunekit.runs.jobs.Job.progress`)."""
    if job.status == "queued":
        return "waiting for the device"
    eta = "estimating..." if p.get("eta_s") is None else duration(p["eta_s"])
    if "epoch" in p:
        return (f"epoch {p['epoch']}/{p['epochs']} · batch {p['batch']}/{p['batches']} · train loss {p['loss']:.3f}"
                f" · train accuracy {p['accuracy']:.1f}% · ETA {eta}")
    if "done" in p:
        step = "point" if job.kind == "sweep" else "step"  # a sweep's steps are its points (criterion x target)
        return f"{step} {p['done']}/{p['total']} · ETA {eta}"
    return "starting (loading the model and the data)..."


def active_job(job: jobs.Job) -> None:
    with st.container(border=True):
        head, button = st.columns([5, 1])
        head.markdown(f"{STATUS_ICON[job.status]} **{job.status.capitalize()}** · {job.description}  \n"
                      f"<small>job `{job.id}` on {job.device}, queued by {job.owner}</small>", unsafe_allow_html=True)
        if is_presenter() and button.button("Cancel", key=f"cancel-{job.id}", icon=":material/stop_circle:", width="stretch"):
            try:
                jobs.cancel(job.id)
                st.toast(f"Cancelling {job.id}: it stops at its next batch.")
            except ValueError as exc:
                st.warning(str(exc))
        progress = job.progress
        st.progress(min(1.0, float(progress.get("fraction", 0.0))), text=_progress_text(job, progress))
        rows = job.metrics()
        if rows:
            st.plotly_chart(training_curves(rows, job.start_point()), width="stretch",
                            key=f"curves-{job.id}-{len(rows)}")
            st.caption("One point per finished epoch; the accuracy starts at epoch 0, the model before training. "
                       "The loss should fall and the accuracy rise; a gap that grows "
                       "between epochs means the learning rate is too high or the data too few.")


def _result(job: jobs.Job) -> str:
    """A finished job's outcome in a few words: its accuracy, a sweep's points, else its error's headline (the whole
    message is in its details)."""
    if job.result and job.result.get("accuracy") is not None:
        return f"test accuracy {job.result['accuracy']:.2f}%"
    if job.kind == "sweep" and job.result:
        return f"{len(job.result.get('runs') or [])} points (runs)"
    return headline(job.error, HEADLINE_CHARS)


def sweep_points(job: jobs.Job) -> tuple[int, int]:
    """(points of sweep ``job`` finished on disk, points it asks for): the runs named after it (its sweep id is its
    job id) that are done, and criteria x targets."""
    runs = list_runs()
    done = 0 if runs.empty else int(((runs["sweep"] == job.id) & (runs["status"] == "done")).sum())
    return done, len(job.args.get("criteria") or ()) * len(job.args.get("targets") or ())


def resume_note(job: jobs.Job) -> str:
    """What Resume does for ``job``, in its kind's words: a sweep keeps its finished points, training continues
    after its last finished epoch, the rest start again."""
    if job.kind == "sweep":
        done, total = sweep_points(job)
        return (f"Resume continues the same sweep: the {done} of {total} points it finished stay (on the Compare "
                f"page's chart, dashed until it is complete) and only the other {total - done} are made.")
    if job.kind in ("finetune", "train"):
        return "Resume continues after its last finished epoch."
    return "Resume runs it again from the start."


def took(job: jobs.Job) -> str:
    """From the job's start to its end ('' when either is missing), e.g. '3 min 05 s'."""
    try:
        start, end = (dt.datetime.fromisoformat(job.spec[k]) for k in ("started", "finished"))
    except (KeyError, TypeError, ValueError):
        return ""
    return duration(max((end - start).total_seconds(), 0.0))


def finished_table(done: list[jobs.Job]) -> None:
    """The finished jobs, newest first: five columns that fill the main column at 1280 px (818 px) with their text
    wrapped on up to four lines; the job's folder, who queued it and its device are in its details (and in the
    table's show/hide columns menu)."""
    table = pd.DataFrame([{
        "finished": local_time(j.spec.get("finished")), "status": j.status, "what": j.description.replace("`", ""),
        "took": took(j), "result": _result(j), "job": j.id, "by": j.owner, "device": j.device} for j in done])
    st.dataframe(table, hide_index=True, width="stretch", row_height=WRAPPED_ROW_PX, height=wrapped_height(len(table)),
                 column_order=["finished", "status", "what", "took", "result"], column_config={
        "finished": st.column_config.TextColumn(width=150, help="when it ended, in this machine's time zone"),
        "status": st.column_config.TextColumn(width=90),
        "what": st.column_config.TextColumn(width=250, help="what the job does (the same in its details, below)"),
        "took": st.column_config.TextColumn(width=85, help="from its start to its end"),
        "result": st.column_config.TextColumn(width=240, help="its accuracy or points, else why it stopped (the "
                                                              "whole message: in its details, below)"),
        "job": st.column_config.TextColumn(help="the job's folder under the jobs root"),
        "by": st.column_config.TextColumn(help="who queued it: the presenter, a visitor (classroom mode) or the "
                                               "command line")})


def finished_details(done: list[jobs.Job]) -> None:
    """The picked finished job (the newest by default, and again whenever another one finishes): what it was, its
    whole message, Resume, its curves and where its result is."""
    ids = [j.id for j in done]  # the last submitted first: the default pick
    seen = st.session_state.get("job_detail_newest")
    if seen is not None and seen != ids[0]:  # a job finished since the last run: open its details, not the old pick
        st.session_state["job_detail"] = ids[0]
    st.session_state["job_detail_newest"] = ids[0]
    what = {j.id: j.description.replace("`", "") for j in done}
    choice = st.selectbox("Details of", ids, key="job_detail", format_func=lambda i: f"{i} · {what[i]}")
    job = next(j for j in done if j.id == choice)
    st.markdown(f"{STATUS_ICON.get(job.status, '')} **{job.status.capitalize()}** · {what[job.id]}  \n"
                f"<small>job `{job.id}` on {job.device}, queued by {job.owner}; finished "
                f"{local_time(job.spec.get('finished'))}" + (f" after {took(job)}" if took(job) else "")
                + "</small>", unsafe_allow_html=True)
    if job.status == "failed":
        st.error(f"This job failed: {message(job.error)}", icon=":material/error:")
        if job.traceback:
            with st.expander("Technical details (the traceback, for a bug report)"):
                st.code(job.traceback, language="text")
    elif job.status == "interrupted":
        st.warning("This job's worker stopped before the end (killed, or the machine restarted). "
                   + resume_note(job), icon=":material/pause_circle:")
    elif job.status == "cancelled":
        st.info("Cancelled. " + resume_note(job), icon=":material/cancel:")
    if job.status in jobs.RESUMABLE and is_presenter() and st.button("Resume", icon=":material/play_arrow:", key=f"resume-{job.id}"):
        try:
            jobs.resume(job.id)
            st.rerun()
        except ValueError as exc:
            st.warning(str(exc))
    rows = job.metrics()
    if rows:
        st.plotly_chart(training_curves(rows, job.start_point()), width="stretch", key=f"done-curves-{job.id}")
        st.caption("Loss and accuracy after each epoch of this job (accuracy at epoch 0: the model before it, e.g. "
                   "as pruned). The last accuracy point is what the run records "
                   "as its fine-tuned accuracy on the Compare page.")
    if job.kind == "finetune":
        st.page_link("pages/compare.py", label="Compare this run with the others", icon=":material/scatter_plot:")
    elif job.kind == "sweep":
        st.page_link("pages/compare.py", label="See its curves on the Compare page", icon=":material/scatter_plot:")


through_router()
st.title("Jobs")
st.caption(f"Fine-tuning, training, sweeps and long scoring run in a background process on the "
           f"{device_label().split(' (')[0]}, one job at a time; this page follows them live. Closing or refreshing "
           "the browser does not stop them.")

try:
    jobs.ensure_workers()  # after a restart, queued jobs get a worker again
except OSError as exc:
    st.error(f"Cannot reach the jobs folder ({exc}). Check that {jobs.jobs_root()} is writable.")
    st.stop()

listed = jobs.list_jobs()
any_active = any(j.active for j in listed)


@st.fragment(run_every=REFRESH_S if any_active else None)
def live() -> None:
    everything = jobs.list_jobs()
    active = [j for j in everything if j.active]
    st.subheader(f"Running and queued ({len(active)})")
    if not active:
        st.info("Nothing is running. A fine-tuning starts from a run: on the **Plan & prune** page right after "
                "pruning, or on the **Compare** page for any run you open there; a sweep (criteria x FLOPs "
                "targets) starts on the **Compare** page too. Training, sensitivity scans and slow scoring start "
                "from a terminal, e.g. `python -m prunekit jobs submit sensitivity --arg ...`; every kind of job "
                f"({', '.join(KIND_WORDS.get(k, k) for k in jobs.KINDS.names())}) is followed here.",
                icon=":material/hourglass_empty:")
    for job in sorted(active, key=lambda j: (j.status != "running", j.spec.get("order", 0))):
        active_job(job)
    audience = [j for j in active if j.owner.startswith("visitor")]
    if classroom() and is_presenter() and audience and st.button(
            f"Cancel the audience's jobs ({len(audience)})", icon=":material/cleaning_services:",
            help="Jobs queued by visitors' browsers (before classroom mode, or with the key) are cancelled; yours "
                 "and the command line's stay."):
        for job in audience:
            jobs.cancel(job.id)
        st.rerun()
    st.caption(f"Updated {dt.datetime.now().strftime('%H:%M:%S')}" + (f", every {REFRESH_S} s" if active else ""))
    if any_active and not active:
        st.rerun()  # the last job just ended: redraw the whole page once, so the finished list shows it


live()
finished = [j for j in listed if not j.active]
st.subheader(f"Finished ({len(finished)})")
if finished:
    finished_table(finished)
    finished_details(finished)
else:
    st.caption("Finished, failed, cancelled and interrupted jobs will be listed here.")
