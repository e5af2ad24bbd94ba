"""The on-disk queue: job records (``job.json`` and the files beside it), the kinds of job a submission may name,
and submit, get, list_jobs, cancel, resume.

>>> job = submit("finetune", {"run": "runs/20261121-091500-resnet20-3f2a1c", "epochs": 3})
>>> get(job.id).status        # queued -> running -> done | failed | cancelled | interrupted
>>> cancel(job.id); resume(job.id)

A job is a directory ``<jobs root>/<id>/`` (the root: an explicit path, else ``$PRUNEKIT_JOBS``, else
``<runs root>/.jobs``) holding ``job.json`` (kind, arguments, device, status, timestamps, error, result),
``progress.json`` (written by the worker), ``error.txt`` (the traceback of a failure), a ``cancel`` flag file, and
the job's own files (``model.safetensors`` when a model was handed over, ``train/``, ``scores.csv``,
``sensitivity.csv``). Every file is rewritten whole and atomically, so any process (the dashboard after a refresh
or a restart, the shell) reads a consistent state at any time. A kind of job is a :class:`JobKind` in
:data:`KINDS`; the built-in ones are in :mod:`prunekit.runs.jobs.kinds`.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import torch
import torch.nn as nn

from prunekit.errors import UserError
from prunekit.files import write_text_atomic
from prunekit.models.checkpoints import save_checkpoint
from prunekit.models.metrics import best_device
from prunekit.registry import Registry
from prunekit.runs.records import _kind, _this_process, process_gone, runs_root, utc_now
from prunekit.training.train import read_metrics, start_point

__all__ = ["Job", "JobKind", "KINDS", "STATUSES", "job_kind", "jobs_root", "submit", "get", "list_jobs", "cancel",
           "resume", "stopped_twin", "RESUMABLE", "ensure_workers", "worker_lock"]

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
RESUMABLE = ("interrupted", "cancelled", "failed")  # the statuses resume() queues again
JOB_FILE, PROGRESS_FILE, CANCEL_FILE, ERROR_FILE, MODEL_FILE = (
    "job.json", "progress.json", "cancel", "error.txt", "model.safetensors")


def jobs_root(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``$PRUNEKIT_JOBS``, else ``<runs root>/.jobs`` (absolute)."""
    if path is not None:
        return Path(path).expanduser().absolute()
    env = os.environ.get("PRUNEKIT_JOBS")
    return (Path(env).expanduser() if env else runs_root() / ".jobs").absolute()


class JobKind:
    """A kind of job, registered in :data:`KINDS` under ``name`` (``@KINDS.register`` on a subclass).

    ``requires``: the arguments a job of this kind cannot do without (present and not empty); ``needs_model``:
    whether :func:`submit` must be handed a model (saved into the job with its arch and num_classes). Subclasses
    override :meth:`check` (their own checks of the arguments), :meth:`describe` and :meth:`run`."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    needs_model: ClassVar[bool] = False

    def check(self, args: dict[str, Any], model: nn.Module | None) -> None:
        """UserError naming a bad value of ``args`` and what to do; called by :func:`submit` before anything is
        written (``model``: the one handed over, or None)."""

    def describe(self, args: dict[str, Any]) -> str:
        """What a job of this kind with ``args`` does, in a sentence."""
        return f"{self.name} job"

    def run(self, job: Job, ctx: Any) -> dict[str, Any]:
        """Do ``job`` in the worker; returns its result (JSON-able). ``ctx``: the worker's
        :class:`prunekit.runs.jobs.worker.Context` (``device``; ``steps(done, total)`` and ``batch(info)`` report
        progress and raise :class:`prunekit.runs.jobs.worker.Cancelled` once the job is cancelled)."""
        raise NotImplementedError


KINDS: Registry[type[JobKind]] = Registry("job kind")


def job_kind(name: str) -> JobKind:
    """The kind registered as ``name``; UnknownNameError listing the known ones."""
    return KINDS.get(name)()


@dataclass
class Job:
    """One job as last read from disk. ``status`` is the stored one, except that ``running`` with a dead
    process reads ``interrupted`` and ``queued`` with a cancel flag reads ``cancelled``."""

    path: Path
    spec: dict[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return self.spec["id"]

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def owner(self) -> str:
        """Who queued it: "presenter", "visitor <id>" (the dashboard), or "command line" (no owner recorded)."""
        return self.spec.get("owner") or "command line"

    @property
    def args(self) -> dict[str, Any]:
        return self.spec["args"]

    @property
    def device(self) -> str:
        return self.spec["device"]

    @property
    def status(self) -> str:
        status = self.spec["status"]
        if status == "running" and process_gone(self.spec.get("process")):
            return "interrupted"
        if status == "queued" and (self.path / CANCEL_FILE).exists():
            return "cancelled"
        return status

    @property
    def error(self) -> str | None:
        return self.spec.get("error")

    @property
    def result(self) -> dict[str, Any] | None:
        return self.spec.get("result")

    @property
    def progress(self) -> dict[str, Any]:
        """The last progress written: ``fraction`` (0..1), ``stage``, ``eta_s``, ``elapsed_s``, ``updated`` and,
        for training, ``epoch``, ``epochs``, ``batch``, ``batches``, ``loss``, ``accuracy`` (running train means)."""
        return _read_json(self.path / PROGRESS_FILE) or {}

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows (train_loss, test_accuracy, lr, seconds, images_per_s...) of a training job."""
        file = self.spec.get("metrics_file")
        if not file or not Path(file).is_file():
            return []
        return read_metrics(file)

    def start_point(self) -> dict[str, Any] | None:
        """A training job's epoch 0 ({epoch: 0, test_loss, test_accuracy}: the model before its first epoch), or
        None (not a training job, an older one, or not evaluated yet)."""
        file = self.spec.get("metrics_file")
        return start_point(Path(file).parent) if file else None

    @property
    def traceback(self) -> str | None:
        file = self.path / ERROR_FILE
        return file.read_text() if file.is_file() else None

    @property
    def description(self) -> str:
        """What the job does, in a sentence (its kind's words, with the defaults it runs with)."""
        return job_kind(self.kind).describe(self.args) if self.kind in KINDS else f"{self.kind} job"

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def save(self, **fields: Any) -> Job:
        """Set ``fields`` (and ``updated``: now) in the spec and rewrite ``job.json`` atomically; returns the job."""
        self.spec.update(fields, updated=utc_now())
        write_text_atomic(self.path / JOB_FILE, json.dumps(self.spec, indent=2))
        return self


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _read_spec(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the job directory ``path``'s spec, None); (None, why it is not a job, naming the file); or (None, None)
    when it holds no job file (a job being created)."""
    file = path / JOB_FILE
    try:
        spec = json.loads(file.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{file}: not a prunekit job file: not JSON ({type(exc).__name__}: {exc})"
    problem = _spec_problem(spec)
    return (None, f"{file}: not a prunekit job file: {problem}") if problem else (spec, None)


def _spec_problem(spec: Any) -> str | None:
    """What makes ``spec`` (parsed JSON) not a job's spec, or None."""
    if not isinstance(spec, dict):
        return f"it holds a JSON {_kind(spec).split(' ', 1)[1]}, not an object"
    for key, ok, want in (("id", lambda v: isinstance(v, str) and v, "a name"), ("kind", lambda v: isinstance(v, str),
                          "a string"), ("status", lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
                          ("device", lambda v: isinstance(v, str), "a string"), ("args", lambda v: isinstance(v, dict),
                                                                                  "an object")):
        if key not in spec:
            return f"{key!r} is missing"
        if not ok(spec[key]):
            return f"{key!r} must be {want}, got {spec[key]!r}"
    for key, types in (("process", (dict,)), ("result", (dict,)), ("error", (str,)), ("metrics_file", (str,)),
                       ("order", (int, float)), ("attempts", (int,)), ("owner", (str,))):
        if not isinstance(spec.get(key), (*types, type(None))) or isinstance(spec.get(key), bool):
            return f"{key!r} must be {_kind(types[0]())} or null, got {spec[key]!r}"
    return None


def _unreadable(path: Path, problem: str) -> Job:
    """A stand-in for a job directory whose job file is not a job's: status ``unreadable``, the problem as error."""
    return Job(path, {"id": path.name, "kind": "unreadable", "status": "unreadable", "device": "?", "args": {},
                      "error": f"{problem}. Remove the directory {path}", "order": 0})


# ---- the API the dashboard and the shell use ----------------------------------------------------------------

def submit(
    kind: str,
    args: dict[str, Any],
    *,
    device: str | torch.device | None = None,
    model: nn.Module | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    root: str | os.PathLike | None = None,
    start_worker: bool | None = None,
    owner: str | None = None,
) -> Job:
    """Queue a job of ``kind`` (a name in :data:`KINDS`) with JSON-able ``args``; returns it (``queued``).

    finetune: run (a run directory), epochs; optional lr, batch_size, weight_decay, seed, doconv, subset (train
    images), test_subset (test images after each epoch), data, data_root, or folder (train/ and val/ image
    folders) and image_size; distill_alpha, distill_temperature and teacher (a checkpoint; default the run's
    unpruned model) to distil. train: model (a registered architecture), epochs, and data (a data set) or folder;
    optional lr, batch_size, subset, seed...
    score: criterion, data; optional params, n (probe images). sensitivity: scores (a CSV), data; optional n,
    ratios, round_to. sweep: data, arch, num_classes, input_size and the fields of
    :class:`prunekit.runs.sweeps.SweepSpec`; optional n (held-out images), probe_n, recalibrate. score,
    sensitivity and sweep need ``model`` (saved into the job, with ``arch`` and ``num_classes``).
    device: default the best available. start_worker: default True unless ``$PRUNEKIT_JOBS_NO_WORKER`` is set.
    owner: who queued it (the dashboard's "presenter" or "visitor <id>"; None: the command line or Python).
    UserError, before anything is written, for an unknown kind, a missing argument or one its kind refuses
    (:meth:`JobKind.check`), or the same job already queued or running.
    """
    entry = job_kind(kind)
    _check(entry, args, model, arch, num_classes)
    _refuse_twin(kind, args, root)
    job = _create(kind, args, str(torch.device(device) if device else best_device()), jobs_root(root), model, arch,
                  num_classes, owner)
    if start_worker if start_worker is not None else not os.environ.get("PRUNEKIT_JOBS_NO_WORKER"):
        ensure_workers(root)
    return job


def _check(entry: JobKind, args: dict[str, Any], model: nn.Module | None, arch: str | None,
           num_classes: int | None) -> None:
    """UserError for an argument ``entry`` requires and ``args`` lacks, a model it needs and was not handed, or a
    value it refuses; TypeError for arguments that cannot be stored as JSON."""
    missing = [k for k in entry.requires if args.get(k) in (None, "")]
    if missing:
        raise UserError(f"a {entry.name} job needs {', '.join(missing)}")
    if entry.needs_model and (model is None or arch is None or num_classes is None):
        raise UserError(f"a {entry.name} job needs the model, its arch and num_classes")
    entry.check(args, model)
    json.dumps(args)  # TypeError now, not in the worker


def _create(kind: str, args: dict[str, Any], device: str, base: Path, model: nn.Module | None, arch: str | None,
            num_classes: int | None, owner: str | None) -> Job:
    """A new ``queued`` job directory under ``base`` (with the model, when one was handed over)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    job_id = f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"
    path = base / job_id
    path.mkdir(parents=True)
    if model is not None:
        save_checkpoint(model, path / MODEL_FILE, arch=arch, num_classes=num_classes, meta={"job": job_id})
    now = utc_now()
    return Job(path, {"id": job_id, "kind": kind, "args": args, "device": device, "status": "queued", "created": now,
                      "queued": now, "order": time.time_ns(), "started": None, "finished": None, "attempts": 0,
                      "error": None, "result": None, "process": None, "owner": owner}).save()


def get(job_id: str, root: str | os.PathLike | None = None) -> Job:
    """The job ``job_id`` as it is on disk now; UserError when there is none."""
    path = jobs_root(root) / Path(job_id).name  # a bare id: never a path outside the root
    spec, problem = _read_spec(path)
    if problem:
        raise UserError(f"{problem}: remove the directory {path}")
    if spec is None:
        raise UserError(f"no job {job_id!r} in {jobs_root(root)}")
    return Job(path, spec)


def stopped_twin(kind: str, args: dict[str, Any], root: str | os.PathLike | None = None) -> Job | None:
    """The last submitted interrupted, cancelled or failed job of ``kind`` with the same ``args``, or None: what
    :func:`resume` continues where a new submission would start the same work over (a sweep's finished points,
    a fine-tuning's finished epochs)."""
    same = json.loads(json.dumps(args))
    return next((job for job in list_jobs(root) if job.kind == kind and job.status in RESUMABLE
                 and job.spec.get("args") == same), None)


def _refuse_twin(kind: str, args: dict[str, Any], root) -> None:
    """UserError when a queued or running job of ``kind`` has the same ``args`` (a double click on a button
    queued the same fine-tuning of the same run twice; the second would only redo, or race, the first)."""
    same = json.loads(json.dumps(args))
    for job in list_jobs(root):
        if job.active and job.kind == kind and job.spec.get("args") == same:
            raise UserError(f"the same {kind} job is already {job.status} as {job.id} ({job.description}); follow it "
                            "on the Jobs page, or cancel it there before queueing it again")


def list_jobs(root: str | os.PathLike | None = None) -> list[Job]:
    """Every job under the root, the last submitted (or resumed) first. A directory whose job file is not a job's
    is listed as a job of status ``unreadable`` with the problem as its error (never run); one without a job file
    (being created) is skipped."""
    base = jobs_root(root)
    jobs = []
    for path in base.iterdir() if base.is_dir() else []:
        spec, problem = _read_spec(path) if path.is_dir() else (None, None)
        if spec is not None or problem is not None:
            jobs.append(Job(path, spec) if spec is not None else _unreadable(path, problem))
    return sorted(jobs, key=lambda j: (j.spec.get("order", 0), j.id), reverse=True)


def cancel(job_id: str, root: str | os.PathLike | None = None) -> Job:
    """Ask a queued or running job to stop: a queued one never starts, a running one stops at its next batch
    (it reads ``cancelled``; a training run keeps its last epoch's checkpoint). UserError for a finished job."""
    job = get(job_id, root)
    if not job.active:
        raise UserError(f"job {job_id} is {job.status}: only a queued or running job can be cancelled")
    (job.path / CANCEL_FILE).touch()
    return get(job_id, root)


def resume(job_id: str, root: str | os.PathLike | None = None, *, start_worker: bool | None = None) -> Job:
    """Queue an interrupted, cancelled or failed job again, under its id: training continues after its last finished
    epoch, a sweep (whose sweep id is its job id) keeps the points it finished and makes only the others."""
    job = get(job_id, root)
    if job.status not in RESUMABLE:
        raise UserError(f"job {job_id} is {job.status}: only an interrupted, cancelled or failed job resumes")
    (job.path / CANCEL_FILE).unlink(missing_ok=True)
    job.save(status="queued", queued=utc_now(), order=time.time_ns(), finished=None, error=None, process=None)
    if start_worker if start_worker is not None else not os.environ.get("PRUNEKIT_JOBS_NO_WORKER"):
        ensure_workers(root)
    return get(job_id, root)


def worker_lock(base: Path, device: str, wait_for_dead: float = 0.0) -> IO[str] | None:
    """An open file holding the exclusive lock of ``device``'s worker under ``base`` (it records this process), or
    None when a live process holds it. A holder that is already dead (a killed worker whose threads are still
    exiting) is waited for up to ``wait_for_dead`` seconds."""
    file = base / f"worker-{device.replace(':', '_')}.lock"
    end = time.monotonic() + wait_for_dead
    while True:
        fh = open(file, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            if process_gone(_read_json(file)) and time.monotonic() < end:
                time.sleep(0.05)
                continue
            return None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(_this_process()))
        fh.flush()
        return fh


def ensure_workers(root: str | os.PathLike | None = None) -> list[str]:
    """Start a worker (``python -m prunekit worker``, :func:`prunekit.runs.jobs.worker.work`) for every device with
    queued jobs and no live worker; returns those devices. The worker is detached (its own session), inherits the
    environment, and logs to ``<root>/worker-<device>.log``."""
    base = jobs_root(root)
    started = []
    for device in sorted({j.device for j in list_jobs(base) if j.status == "queued"}):
        probe = worker_lock(base, device, wait_for_dead=5.0)
        if probe is None:
            continue  # a worker holds the device; it will reach the new job
        probe.close()
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        log = open(base / f"worker-{device.replace(':', '_')}.log", "ab")
        subprocess.Popen([sys.executable, "-m", "prunekit", "worker", "--device", device, "--root", str(base)],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                         start_new_session=True, cwd=os.getcwd())
        log.close()
        started.append(device)
    return started
