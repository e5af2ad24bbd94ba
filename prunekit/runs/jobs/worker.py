"""The worker: the process that runs the queued jobs of one device, one after another, reporting their progress
and stopping a job at its cancel flag.

The worker (``python -m prunekit worker --device D``, started by :func:`prunekit.runs.jobs.queue.submit`) is a
process of its own, detached from its caller: a crash, an out-of-memory error or a kill there never takes the
dashboard down. It holds an exclusive lock per device (so one job runs per device, the rest wait in submission
order), runs the queued jobs of its device one after another, and exits when none is left. A job that raises is
marked ``failed`` with its error, and the next job runs. A job whose worker died reads as ``interrupted`` (its pid
is gone); :func:`prunekit.runs.jobs.queue.resume` queues it again, and training continues after the last finished
epoch.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from prunekit.files import write_text_atomic
from prunekit.runs.jobs.queue import (
    CANCEL_FILE,
    ERROR_FILE,
    PROGRESS_FILE,
    Job,
    job_kind,
    jobs_root,
    list_jobs,
    worker_lock,
)
from prunekit.runs.records import _this_process, utc_now

__all__ = ["Cancelled", "Context", "work"]

PROGRESS_EVERY = 0.5  # seconds between progress.json rewrites
IDLE_EXIT = 3.0  # seconds a worker waits for a new job before it exits


class Cancelled(KeyboardInterrupt):
    """Raised inside a job when its ``cancel`` flag is seen; a run it was writing reads ``interrupted``."""


class Context:
    """What a running job reports through: ``steps(done, total)`` for scoring and sensitivity, ``batch(info)``
    for training (:func:`prunekit.training.train.fit`'s ``on_batch``). Both raise :class:`Cancelled` once the job's
    cancel flag exists, and write ``progress.json`` at most every :data:`PROGRESS_EVERY` seconds. ``device``: the
    job's torch device."""

    def __init__(self, job: Job):
        self.job, self.device = job, torch.device(job.device)
        self.t0, self.f0, self.last = time.monotonic(), None, 0.0

    def _check(self) -> None:
        if (self.job.path / CANCEL_FILE).exists():
            raise Cancelled("cancelled by the user")

    def report(self, fraction: float, force: bool = False, **fields: Any) -> None:
        self._check()
        now = time.monotonic()
        if self.f0 is None:
            self.f0 = fraction  # a resumed job starts part-way: its ETA counts from here
        if not force and now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        elapsed = now - self.t0
        done = fraction - self.f0
        eta = elapsed / done * (1 - fraction) if done > 0 else None
        write_text_atomic(self.job.path / PROGRESS_FILE, json.dumps(
            {"fraction": fraction, "elapsed_s": elapsed, "eta_s": eta, "updated": utc_now(), **fields}))

    def steps(self, done: int, total: int) -> None:
        self.report(done / max(total, 1), force=done >= total, stage=self.job.kind, done=done, total=total)

    def points(self, done: int, total: int) -> None:
        """:meth:`steps` for coarse work (a sweep's points): every one written, none skipped for being too soon
        after the last (a resumed sweep counts off its finished points in a burst)."""
        self.report(done / max(total, 1), force=True, stage=self.job.kind, done=done, total=total)

    def batch(self, info: dict[str, Any]) -> None:
        step = (info["epoch"] - 1) * info["batches"] + info["batch"]
        self.report(step / (info["epochs"] * info["batches"]), stage="training", **info)


def _next(base: Path, device: str) -> Job | None:
    queued = [j for j in list_jobs(base) if j.device == device and j.spec["status"] == "queued"]
    return min(queued, key=lambda j: j.spec.get("order", 0)) if queued else None  # submission (or resume) order


def _run_one(job: Job) -> None:
    """Run ``job`` by its kind and record how it ended: done (with its result), failed (its error and traceback),
    cancelled, or interrupted (the worker was stopped: re-raised)."""
    if (job.path / CANCEL_FILE).exists():
        job.save(status="cancelled", finished=utc_now(), error="cancelled before it started")
        return
    (job.path / ERROR_FILE).unlink(missing_ok=True)
    job.save(status="running", started=utc_now(), attempts=job.spec["attempts"] + 1, process=_this_process())
    try:
        result = job_kind(job.kind).run(job, Context(job))
    except Cancelled as exc:
        job.save(status="cancelled", finished=utc_now(), error=str(exc))
    except KeyboardInterrupt:
        job.save(status="interrupted", finished=utc_now(), error="the worker was stopped")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a job is recorded, and the next job runs
        write_text_atomic(job.path / ERROR_FILE, traceback.format_exc())
        job.save(status="failed", finished=utc_now(), error=f"{type(exc).__name__}: {exc}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    else:
        job.save(status="done", finished=utc_now(), result=result)


def work(device: str, root: str | os.PathLike | None = None, *, idle_exit: float = IDLE_EXIT) -> int:
    """The worker loop for ``device``: run its queued jobs in order, exit after ``idle_exit`` seconds without
    one. Returns at once (0) when another worker holds the device. SIGTERM stops it like Ctrl-C: the running
    job is marked ``interrupted``."""
    base = jobs_root(root)
    base.mkdir(parents=True, exist_ok=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    while True:
        lock = worker_lock(base, device)
        if lock is None:
            return 0
        with lock:
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < idle_exit:
                job = _next(base, device)
                if job is None:
                    time.sleep(0.2)
                    continue
                _run_one(job)
                idle_since = time.monotonic()
        if _next(base, device) is None:  # a job queued while the lock was being let go is not left behind
            return 0
