"""Jobs: the background work (fine-tuning, training, long scoring) with live progress, curves, cancel and resume.

Everything shown is read from disk (prunekit.runs.jobs), so a refresh or a restart of the dashboard finds it again.
"""
import datetime as dt

import pandas as pd
import streamlit as st

from pages.ui.figures import training_curves
from pages.ui.router import through_router
from pages.ui.sidebar import device_label
from prunekit.runs import jobs
from prunekit.text import duration

REFRESH_S = 2  # seconds between redraws while a job is queued or running
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
        return f"step {p['done']}/{p['total']} · ETA {eta}"
    return "starting (loading the model and the data)..."


def active_job(job: jobs.Job) -> None:
    with st.container(border=True):
        head, button = st.columns([5, 1])
        head.markdown(f"{STATUS_ICON[job.status]} **{job.status.capitalize()}** · {job.description}  \n"
                      f"<small>job `{job.id}` on {job.device}</small>", unsafe_allow_html=True)
        if button.button("Cancel", key=f"cancel-{job.id}", icon=":material/stop_circle:", width="stretch"):
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


def finished_table(done: list[jobs.Job]) -> None:
    table = pd.DataFrame([{
        "job": j.id, "status": j.status, "what": j.description.replace("`", ""), "device": j.device,
        "started": j.spec.get("started"), "finished": j.spec.get("finished"),
        "result": (f"test accuracy {j.result['accuracy']:.2f}%" if j.result and j.result.get("accuracy") is not None
                   else j.error or ""),
    } for j in done])
    st.dataframe(table, hide_index=True, width="stretch")
    ids = [j.id for j in done]  # the last submitted first: the default pick
    seen = st.session_state.get("job_detail_newest")
    if seen is not None and seen != ids[0]:  # a job finished since the last run: open its details, not the old pick
        st.session_state["job_detail"] = ids[0]
    st.session_state["job_detail_newest"] = ids[0]
    what = {j.id: j.description.replace("`", "") for j in done}
    choice = st.selectbox("Details of", ids, key="job_detail", format_func=lambda i: f"{i} · {what[i]}")
    job = next(j for j in done if j.id == choice)
    if job.status == "failed":
        st.error(f"This job failed: {job.error}", icon=":material/error:")
        if job.traceback:
            with st.expander("Technical details (the traceback, for a bug report)"):
                st.code(job.traceback, language="text")
    elif job.status == "interrupted":
        st.warning("This job's worker stopped before the end (killed, or the machine restarted). Resume continues "
                   "after its last finished epoch.", icon=":material/pause_circle:")
    elif job.status == "cancelled":
        st.info("Cancelled. Resume continues after its last finished epoch.", icon=":material/cancel:")
    if job.status in ("interrupted", "cancelled", "failed") and st.button("Resume", icon=":material/play_arrow:",
                                                                          key=f"resume-{job.id}"):
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


through_router()
st.title("Jobs")
st.caption(f"Fine-tuning and training run in a background process on the {device_label().split(' (')[0]}, one "
           "job at a time; this page follows them live. Closing or refreshing the browser does not stop them.")

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
        st.info("Nothing is running. Start a fine-tuning on the **Plan & prune** page after pruning, or from the "
                "shell: `python -m prunekit jobs submit finetune --arg run=runs/<id> --arg epochs=3`.",
                icon=":material/hourglass_empty:")
    for job in sorted(active, key=lambda j: (j.status != "running", j.spec.get("order", 0))):
        active_job(job)
    st.caption(f"Updated {dt.datetime.now().strftime('%H:%M:%S')}" + (f", every {REFRESH_S} s" if active else ""))
    if any_active and not active:
        st.rerun()  # the last job just ended: redraw the whole page once, so the finished list shows it


live()
finished = [j for j in listed if not j.active]
st.subheader(f"Finished ({len(finished)})")
if finished:
    finished_table(finished)
else:
    st.caption("Finished, failed, cancelled and interrupted jobs will be listed here.")
