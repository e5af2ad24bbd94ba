"""Background jobs: training, fine-tuning, scoring, sensitivity and sweeps in a worker process, one job at a time
per device, every state on disk.

>>> job = submit("finetune", {"run": "runs/20261121-091500-resnet20-3f2a1c", "epochs": 3})
>>> get(job.id).status        # queued -> running -> done | failed | cancelled | interrupted
>>> get(job.id).progress      # {"fraction", "epoch", "epochs", "batch", "batches", "loss", "accuracy", "eta_s", ...}
>>> cancel(job.id); resume(job.id)

:mod:`~prunekit.runs.jobs.queue`: the job records on disk and the queue's verbs;
:mod:`~prunekit.runs.jobs.kinds`: the built-in kinds (a new kind is a :class:`JobKind` subclass with
``@KINDS.register``); :mod:`~prunekit.runs.jobs.worker`: the process that runs them. Importing this package
registers the built-in kinds.
"""
from prunekit.runs.jobs import kinds  # noqa: F401  (registers the built-in kinds)
from prunekit.runs.jobs.queue import (
    KINDS,
    RESUMABLE,
    STATUSES,
    Job,
    JobKind,
    cancel,
    ensure_workers,
    get,
    job_kind,
    jobs_root,
    list_jobs,
    resume,
    stopped_twin,
    submit,
)
from prunekit.runs.jobs.worker import Cancelled, work

__all__ = ["Job", "JobKind", "KINDS", "STATUSES", "RESUMABLE", "Cancelled", "job_kind", "jobs_root", "submit", "get",
           "list_jobs", "cancel", "resume", "stopped_twin", "ensure_workers", "work"]
