"""Background jobs: training, fine-tuning, scoring and sensitivity in a worker process, one job at a time per
device, every state on disk.

>>> job = submit("finetune", {"run": "runs/20261121-091500-resnet20-3f2a1c", "epochs": 3})
>>> get(job.id).status        # queued -> running -> done | failed | cancelled | interrupted
>>> get(job.id).progress      # {"fraction", "epoch", "epochs", "batch", "batches", "loss", "accuracy", "eta_s", ...}
>>> cancel(job.id); resume(job.id)

A job is a directory ``<jobs root>/<id>/`` (the root: an explicit path, else ``$PRUNEKIT_JOBS``, else
``<runs root>/.jobs``) holding ``job.json`` (kind, arguments, device, status, timestamps, error, result),
``progress.json`` (rewritten at most every :data:`PROGRESS_EVERY` seconds), ``error.txt`` (the traceback of a
failure), a ``cancel`` flag file, and the job's own files (``model.safetensors`` when a model was handed over,
``train/``, ``scores.csv``, ``sensitivity.csv``). Every file is rewritten whole and atomically, so any process
(the dashboard after a refresh or a restart, the shell) reads a consistent state at any time.

The worker (``python -m prunekit worker --device D``) is a process of its own, started by :func:`submit`
detached from its caller: a crash, an out-of-memory error or a kill there never takes the dashboard down. It
holds an exclusive lock per device (so one job runs per device, the rest wait in submission order), runs the
queued jobs of its device one after another, and exits when none is left. A job that raises is marked
``failed`` with its error, and the next job runs. A job whose worker died reads as ``interrupted`` (its pid is
gone); :func:`resume` queues it again, and training continues after the last finished epoch.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from prunekit.defaults import FINETUNE_RECIPE, HELD_OUT, PROBE, ROUND_TO, SENSITIVITY
from prunekit.errors import UserError, unknown_name
from prunekit.files import write_text_atomic
from prunekit.runs.records import _kind, _this_process, process_gone, runs_root, utc_now
from prunekit.training.train import read_metrics, start_point

__all__ = ["Job", "Cancelled", "KINDS", "STATUSES", "jobs_root", "submit", "get", "list_jobs", "cancel", "resume",
           "ensure_workers", "work"]

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
JOB_FILE, PROGRESS_FILE, CANCEL_FILE, ERROR_FILE, MODEL_FILE = (
    "job.json", "progress.json", "cancel", "error.txt", "model.safetensors")
PROGRESS_EVERY = 0.5  # seconds between progress.json rewrites
IDLE_EXIT = 3.0  # seconds a worker waits for a new job before it exits


class Cancelled(KeyboardInterrupt):
    """Raised inside a job when its ``cancel`` flag is seen; a run it was writing reads ``interrupted``."""


def jobs_root(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``$PRUNEKIT_JOBS``, else ``<runs root>/.jobs`` (absolute)."""
    if path is not None:
        return Path(path).expanduser().absolute()
    env = os.environ.get("PRUNEKIT_JOBS")
    return (Path(env).expanduser() if env else runs_root() / ".jobs").absolute()


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
        kind = KINDS.get(self.kind)
        return kind.describe(self.args) if kind and kind.describe else f"{self.kind} job"

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


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
                       ("order", (int, float)), ("attempts", (int,))):
        if not isinstance(spec.get(key), (*types, type(None))) or isinstance(spec.get(key), bool):
            return f"{key!r} must be {_kind(types[0]())} or null, got {spec[key]!r}"
    return None


def _unreadable(path: Path, problem: str) -> Job:
    """A stand-in for a job directory whose job file is not a job's: status ``unreadable``, the problem as error."""
    return Job(path, {"id": path.name, "kind": "unreadable", "status": "unreadable", "device": "?", "args": {},
                      "error": f"{problem}. Remove the directory {path}", "order": 0})


def _write(job: Job, **fields: Any) -> Job:
    job.spec.update(fields, updated=utc_now())
    write_text_atomic(job.path / JOB_FILE, json.dumps(job.spec, indent=2))
    return job


# ---- the kinds of job: each checks its arguments at submit time and runs in the worker -----------------------

@dataclass(frozen=True)
class _Kind:
    run: Callable[[Job, _Context], dict[str, Any]]
    required: tuple[str, ...]
    describe: Callable[[dict[str, Any]], str] | None = None  # the job in a sentence, from its arguments
    needs_model: bool = False


class _Context:
    """What a running job reports through: ``steps(done, total)`` for scoring and sensitivity, ``batch(info)``
    for training (:func:`prunekit.training.train.fit`'s ``on_batch``). Both raise :class:`Cancelled` once the job's
    cancel flag exists, and write ``progress.json`` at most every :data:`PROGRESS_EVERY` seconds."""

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

    def batch(self, info: dict[str, Any]) -> None:
        step = (info["epoch"] - 1) * info["batches"] + info["batch"]
        self.report(step / (info["epochs"] * info["batches"]), stage="training", **info)


def _config(args: dict[str, Any], recipe: Callable[..., Any]):
    """The training recipe of a job's arguments (TrainConfig checks every value: UserError naming a bad one)."""
    fields = {k: args[k] for k in ("lr", "batch_size", "weight_decay", "seed", "doconv", "label_smoothing",
                                   "schedule", "distill_alpha", "distill_temperature", "precision") if k in args}
    return recipe(args["epochs"], **fields)


def _check_inputs(kind: str, args: dict[str, Any], model: nn.Module | None) -> None:
    """UserError now, at submit time, for a training or fine-tuning job whose hyper-parameters are out of range, or a
    sensitivity job whose scores file is unreadable or not the model's."""
    from prunekit.runs.finetune import finetune_config
    from prunekit.criteria.scores import read_scores
    from prunekit.training.train import TrainConfig

    if kind == "finetune":
        _config(args, finetune_config)
    elif kind == "train":
        _config(args, lambda epochs, **kw: TrainConfig(epochs=epochs, **kw))
    elif kind == "sensitivity" and model is not None:
        read_scores(args["scores"], model)


def _finetune(job: Job, ctx: _Context) -> dict[str, Any]:
    from prunekit.data import DataRequest
    from prunekit.runs.finetune import FINETUNE_DIR, finetune_config, finetune_run

    a = job.args
    _write(job, metrics_file=str(Path(a["run"]) / FINETUNE_DIR / "metrics.jsonl"))
    run = finetune_run(a["run"], _config(a, finetune_config), data=DataRequest.from_args(a), device=ctx.device,
                       progress=False, on_batch=ctx.batch, teacher=a.get("teacher"))
    entry = run.manifest["finetune"]
    return {"run": str(run.path), "accuracy": entry["accuracy"], "epochs": len(entry["epochs"])}


def _train(job: Job, ctx: _Context) -> dict[str, Any]:
    from prunekit.data import DataRequest, resolve_splits
    from prunekit.training.train import TrainConfig, train_new

    a = job.args
    config = _config(a, lambda epochs, **kw: TrainConfig(epochs=epochs, **kw))  # checked at submit time too
    splits = resolve_splits(DataRequest.from_args(a), seed=config.seed)
    out = job.path / "train"
    _write(job, metrics_file=str(out / "metrics.jsonl"))
    rows = train_new(a["model"], splits, config, out, device=ctx.device, meta={"job": job.id, "device": job.device},
                     on_batch=ctx.batch, progress=False, pretrained=bool(a.get("pretrained")))
    return {"checkpoint": str(out / "model.safetensors"), "test_accuracy": rows[-1]["test_accuracy"]}


def _job_model(job: Job, ctx: _Context, *, labels: bool | None = None) -> nn.Module:
    """The model handed to the job, on its device; with ``labels`` not None first checked against the job's data
    set (:func:`prunekit.models.fits.check_model_data`: its input size, with ``labels`` its outputs against the
    classes)."""
    from prunekit.models.checkpoints import load_checkpoint
    from prunekit.models.fits import check_model_data

    model, header = load_checkpoint(job.path / MODEL_FILE)
    if labels is not None:
        check_model_data(model, header["arch"], job.args["data"], labels=labels)
    return model.to(ctx.device).eval()


def _score(job: Job, ctx: _Context) -> dict[str, Any]:
    from prunekit.criteria import criterion_class
    from prunekit.criteria.probe import ProbeSpec
    from prunekit.criteria.scores import score_model

    a = job.args
    probe = ProbeSpec(a["data"], int(a.get("n") or PROBE.n), data_root=a.get("data_root"))
    crit = criterion_class(a["criterion"])
    model = _job_model(job, ctx, labels=crit.needs_labels if crit.needs_data else None)
    df = score_model(model, a["criterion"], a.get("params"), probe=probe, progress=ctx.steps)
    df.to_csv(job.path / "scores.csv", index=False)
    return {"scores": str(job.path / "scores.csv"), "filters": len(df), "key": df.attrs["key"]}


def _sensitivity(job: Job, ctx: _Context) -> dict[str, Any]:
    from prunekit.data import held_out_set, load_arrays
    from prunekit.criteria.scores import read_scores
    from prunekit.pruning.sensitivity import sensitivity

    a = job.args
    model = _job_model(job, ctx, labels=True)
    scores = read_scores(a["scores"], model)  # before the data: a bad file fails at once
    data = held_out_set(a["data"], int(a.get("n") or SENSITIVITY.n), a.get("data_root"))
    recal = None if a.get("recalibrate") is False else load_arrays(a["data"], "train", a.get("data_root"))
    table = sensitivity(model, scores, data, ratios=a.get("ratios") or SENSITIVITY.ratios, recalibrate=recal,
                        round_to=a.get("round_to", ROUND_TO), progress=ctx.steps)
    table.to_csv(job.path / "sensitivity.csv", index=False)
    return {"sensitivity": str(job.path / "sensitivity.csv"), "rows": len(table)}


def _sweep(job: Job, ctx: _Context) -> dict[str, Any]:
    from prunekit.data import DataNotFoundError, held_out_set, load_arrays
    from prunekit.criteria.probe import ProbeSpec
    from prunekit.runs.sweeps import SweepSpec, run_sweep

    a, spec_fields = job.args, ("criteria", "targets", "preset", "by", "finetune_epochs", "finetune_subset",
                                   "round_to", "runtimes")
    spec = SweepSpec(**{k: a[k] for k in spec_fields if k in a})
    n = int(a.get("n", HELD_OUT.n))
    try:
        train = load_arrays(a["data"], "train", a.get("data_root")) if a.get("recalibrate", True) else None
    except DataNotFoundError:
        train = None
    held_out = held_out_set(a["data"], n, a.get("data_root")) if n else None
    runs = run_sweep(_job_model(job, ctx), a["arch"], spec, num_classes=int(a["num_classes"]),
                     input_size=tuple(a["input_size"]), held_out=held_out, train=train,
                     probe=ProbeSpec(a["data"], int(a.get("probe_n") or PROBE.n), data_root=a.get("data_root")),
                     progress=ctx.steps)
    return {"runs": [str(r.path) for r in runs], "sweep": runs[0].manifest["sweep"]["id"] if runs else None}


def _distilled(a: dict[str, Any]) -> str:
    """", distilled from <teacher>: alpha A, T T" for a fine-tuning job that distils, else ""."""
    alpha = a.get("distill_alpha", FINETUNE_RECIPE["distill_alpha"])
    if not alpha:
        return ""
    teacher = f"`{_run_name(a['teacher'])}`" if a.get("teacher") else "the unpruned model"
    temperature = a.get("distill_temperature", FINETUNE_RECIPE["distill_temperature"])
    return f", distilled from {teacher}: alpha {alpha}, T {temperature}"


def _run_name(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


KINDS: dict[str, _Kind] = {
    "finetune": _Kind(_finetune, ("run", "epochs"), lambda a: (
        f"Fine-tune run `{_run_name(a['run'])}` for {a['epochs']} epochs "
        f"(lr {a.get('lr', FINETUNE_RECIPE['lr'])}{_distilled(a)})")),
    "train": _Kind(_train, ("model", "epochs"), lambda a: (
        f"Train {a['model']} on {a.get('data') or a.get('folder')} for {a['epochs']} epochs")),
    "score": _Kind(_score, ("criterion", "data"), lambda a: (
        f"Score every filter with {a['criterion']} ({a.get('n') or PROBE.n} probe images)"), True),
    "sensitivity": _Kind(_sensitivity, ("scores", "data"), lambda a: (
        f"Sensitivity analysis on {a.get('n') or SENSITIVITY.n} test images"), True),
    "sweep": _Kind(_sweep, ("criteria", "targets", "data", "arch", "num_classes", "input_size"), lambda a: (
        f"Sweep {', '.join(a['criteria'])} at {len(a['targets'])} targets ({a.get('preset', 'uniform')})"), True),
}


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
) -> Job:
    """Queue a job of ``kind`` (a key of :data:`KINDS`) with JSON-able ``args``; returns it (``queued``).

    finetune: run (a run directory), epochs; optional lr, batch_size, weight_decay, seed, doconv, subset (train
    images), test_subset (test images after each epoch), data, data_root, or folder (train/ and val/ image
    folders) and image_size; distill_alpha, distill_temperature and teacher (a checkpoint; default the run's
    unpruned model) to distil. train: model (a registered architecture), epochs, and data (a data set) or folder;
    optional lr, batch_size, subset, seed...
    score: criterion, data; optional params, n (probe images). sensitivity: scores (a CSV), data; optional n,
    ratios. score and sensitivity need ``model`` (saved into the job, with ``arch`` and ``num_classes``).
    device: default the best available. start_worker: default True unless ``$PRUNEKIT_JOBS_NO_WORKER`` is set.
    ValueError for an unknown kind, a missing argument, a training hyper-parameter out of range or a bad scores
    file.
    """
    from prunekit.models.metrics import best_device

    if kind not in KINDS:
        raise unknown_name("job kind", kind, KINDS)
    missing = [k for k in KINDS[kind].required if args.get(k) in (None, "")]
    if missing:
        raise UserError(f"a {kind} job needs {', '.join(missing)}")
    if kind == "train" and not (args.get("data") or args.get("folder")):
        raise UserError("a train job needs data (a data set's name) or folder (holding train/ and val/ image folders)")
    if KINDS[kind].needs_model and (model is None or arch is None or num_classes is None):
        raise UserError(f"a {kind} job needs the model, its arch and num_classes")
    _check_inputs(kind, args, model)
    json.dumps(args)  # TypeError now, not in the worker, for arguments that cannot be stored
    _refuse_twin(kind, args, root)
    device = str(torch.device(device) if device else best_device())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    job_id = f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"
    path = jobs_root(root) / job_id
    path.mkdir(parents=True)
    if model is not None:
        from prunekit.models.checkpoints import save_checkpoint

        save_checkpoint(model, path / MODEL_FILE, arch=arch, num_classes=num_classes, meta={"job": job_id})
    now = utc_now()
    job = _write(Job(path, {"id": job_id, "kind": kind, "args": args, "device": device, "status": "queued",
                            "created": now, "queued": now, "order": time.time_ns(), "started": None, "finished": None,
                            "attempts": 0,
                            "error": None, "result": None, "process": None}))
    if start_worker if start_worker is not None else not os.environ.get("PRUNEKIT_JOBS_NO_WORKER"):
        ensure_workers(root)
    return job


def get(job_id: str, root: str | os.PathLike | None = None) -> Job:
    """The job ``job_id`` as it is on disk now; ValueError when there is none."""
    path = jobs_root(root) / Path(job_id).name  # a bare id: never a path outside the root
    spec, problem = _read_spec(path)
    if problem:
        raise UserError(f"{problem}: remove the directory {path}")
    if spec is None:
        raise UserError(f"no job {job_id!r} in {jobs_root(root)}")
    return Job(path, spec)


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
    (it reads ``cancelled``; a training run keeps its last epoch's checkpoint). ValueError for a finished job."""
    job = get(job_id, root)
    if not job.active:
        raise UserError(f"job {job_id} is {job.status}: only a queued or running job can be cancelled")
    (job.path / CANCEL_FILE).touch()
    return get(job_id, root)


def resume(job_id: str, root: str | os.PathLike | None = None, *, start_worker: bool | None = None) -> Job:
    """Queue an interrupted, cancelled or failed job again (training continues after its last finished epoch)."""
    job = get(job_id, root)
    if job.status not in ("interrupted", "cancelled", "failed"):
        raise UserError(f"job {job_id} is {job.status}: only an interrupted, cancelled or failed job resumes")
    (job.path / CANCEL_FILE).unlink(missing_ok=True)
    _write(job, status="queued", queued=utc_now(), order=time.time_ns(), finished=None, error=None, process=None)
    if start_worker if start_worker is not None else not os.environ.get("PRUNEKIT_JOBS_NO_WORKER"):
        ensure_workers(root)
    return get(job_id, root)


def _lock_file(root: Path, device: str) -> Path:
    return root / f"worker-{device.replace(':', '_')}.lock"


def _try_lock(file: Path, wait_for_dead: float = 0.0):
    """An open file holding the exclusive lock, or None when a live process holds it. A holder that is already
    dead (a killed worker whose threads are still exiting) is waited for up to ``wait_for_dead`` seconds."""
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
    """Start a worker for every device with queued jobs and no live worker; returns those devices. The worker
    is detached (its own session), inherits the environment, and logs to ``<root>/worker-<device>.log``."""
    base = jobs_root(root)
    started = []
    for device in sorted({j.device for j in list_jobs(base) if j.status == "queued"}):
        probe = _try_lock(_lock_file(base, device), wait_for_dead=5.0)
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


def _next(base: Path, device: str) -> Job | None:
    queued = [j for j in list_jobs(base) if j.device == device and j.spec["status"] == "queued"]
    return min(queued, key=lambda j: j.spec.get("order", 0)) if queued else None  # submission (or resume) order


def _run_one(job: Job) -> None:
    if (job.path / CANCEL_FILE).exists():
        _write(job, status="cancelled", finished=utc_now(), error="cancelled before it started")
        return
    (job.path / ERROR_FILE).unlink(missing_ok=True)
    _write(job, status="running", started=utc_now(), attempts=job.spec["attempts"] + 1, process=_this_process())
    try:
        result = KINDS[job.kind].run(job, _Context(job))
    except Cancelled as exc:
        _write(job, status="cancelled", finished=utc_now(), error=str(exc))
    except KeyboardInterrupt:
        _write(job, status="interrupted", finished=utc_now(), error="the worker was stopped")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a job is recorded, and the next job runs
        write_text_atomic(job.path / ERROR_FILE, traceback.format_exc())
        _write(job, status="failed", finished=utc_now(), error=f"{type(exc).__name__}: {exc}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    else:
        _write(job, status="done", finished=utc_now(), result=result)


def work(device: str, root: str | os.PathLike | None = None, *, idle_exit: float = IDLE_EXIT) -> int:
    """The worker loop for ``device``: run its queued jobs in order, exit after ``idle_exit`` seconds without
    one. Returns at once (0) when another worker holds the device. SIGTERM stops it like Ctrl-C: the running
    job is marked ``interrupted``."""
    base = jobs_root(root)
    base.mkdir(parents=True, exist_ok=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    while True:
        lock = _try_lock(_lock_file(base, device))
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
