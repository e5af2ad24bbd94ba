"""Runs: every pruning kept on disk, one directory each, for the Compare page.

>>> run = prune_run(model, plan, scores, arch="resnet20", num_classes=10, data=test_set.subset(1000))
>>> run.path              # runs/20261121-091500-resnet20-3f2a1c/  (manifest.json, model.safetensors)
>>> list_runs()           # one row per run: status, plan, params/MACs/FLOPs/latency, accuracy before and after

The runs root is an explicit path, else ``$PRUNEKIT_RUNS``, else ``./runs``. ``manifest.json`` holds the model
(architecture, checkpoint and its SHA-256, weights hash), the data, the criterion and its parameters, the plan,
the report before and after (params, MACs, FLOPs, latency in PyTorch eager and ONNX Runtime; channels per layer;
coupled groups), the accuracy before and right after pruning, ``finetune`` (empty until a fine-tuning job fills
it), ``status`` (running / done / failed / interrupted), timestamps and library versions. It is rewritten whole,
atomically (a temporary file, then ``os.replace``), so a reader never sees half a manifest. A run whose manifest says
``running`` but whose process (pid, on this host) is gone is reported ``interrupted``. The pruned model is
``model.safetensors``, which :func:`prunekit.models.checkpoints.load_checkpoint` reloads alone. A model that does not take
the held-out or recalibration images (their size, its outputs against their classes) is refused before a run is
written (:func:`prunekit.models.fits.check_model_data`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
import torch_pruning
import torchvision

from prunekit.criteria.scores import score, to_tensors, weights_hash
from prunekit.criteria.streaming import Progress, no_progress
from prunekit.data import ArraySet
from prunekit.defaults import LATENCY_BATCHES, LATENCY_REPEAT, RECALIBRATION
from prunekit.errors import UserError
from prunekit.files import write_text_atomic
from prunekit.models.checkpoints import save_checkpoint
from prunekit.models.fits import check_model_data
from prunekit.models.heads import outputs_of
from prunekit.models.metrics import held_out_accuracy
from prunekit.models.zoo import model_info
from prunekit.pruning.plan import Plan
from prunekit.pruning.prune import Pruner
from prunekit.pruning.recalibrate import recalibrate_bn
from prunekit.pruning.structure import Structure, structure
from prunekit.runs.latency_model import budget_timing, latency_budget
from prunekit.runs.report import prune_report
from prunekit.runs.runtimes import get_runtime, runtime_names
from prunekit.version import __version__

__all__ = ["Run", "accuracy_summary", "runs_root", "read_manifest", "manifest_problem", "list_runs", "prune",
           "prune_run", "file_sha256", "versions", "utc_now", "process_gone", "MANIFEST", "MODEL_FILE"]

RUN_FORMAT = "prunekit-run/1"
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
STATUSES = ("running", "done", "failed", "interrupted")


def runs_root(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``$PRUNEKIT_RUNS``, else ``./runs``."""
    if path is not None:
        return Path(path).expanduser()
    return Path(os.environ.get("PRUNEKIT_RUNS") or "runs").expanduser()


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (the manifests' timestamps)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux /proc), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return None if fields[0] == "Z" else fields[19]  # a zombie is dead; field 22 of stat is the start time


def _this_process() -> dict[str, Any]:
    """What :func:`read_manifest` needs to tell whether the process owning a run is still alive."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _proc_start(os.getpid())}


def _alive(pid: int, start: str | None) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if Path("/proc").is_dir():
        now = _proc_start(pid)
        return now is not None and (start is None or now == start)  # a reused pid starts later
    return True


def process_gone(proc: dict[str, Any] | None) -> bool:
    """Whether the process recorded in ``proc`` (by :func:`_this_process`) ran on this host and is gone (a run or
    job it owned was interrupted). A process on another host, or none recorded, is not known to be gone."""
    proc = proc or {}
    return "pid" in proc and proc.get("host") == socket.gethostname() and \
        not _alive(int(proc["pid"]), proc.get("start"))


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_pruning": torch_pruning.__version__, "prunekit": __version__}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the run directory ``path``, its ``status`` made ``interrupted`` when it says running
    but its process is gone. ValueError naming the file and the problem when there is none or it is not a run
    manifest: not JSON, not an object, another format, or an entry missing or of the wrong type
    (:func:`manifest_problem`)."""
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{file}: not a readable run manifest ({type(exc).__name__})") from None
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(f"{file}: not a prunekit run manifest: {problem}. Remove the directory, or restore its "
                        f"{MANIFEST} from a backup")
    if manifest.get("status") == "running" and process_gone(manifest.get("process")):
        manifest["status"] = "interrupted"
    return manifest


_OBJECTS = ("model", "data", "recalibration", "sweep", "criterion", "plan", "before", "after", "accuracy", "report",
            "finetune", "process", "versions", "files")  # entries that are a JSON object or null
_NESTED_OBJECTS = (("accuracy", "before"), ("accuracy", "pruned"),
                   ("accuracy", "recalibrated"), ("plan", "ratios"), ("plan", "preset"), ("report", "channels"))
_NUMBERS = (("before", "params"), ("before", "macs"), ("before", "flops"), ("after", "params"), ("after", "macs"),
            ("after", "flops"), ("finetune", "accuracy"), ("accuracy", "before", "accuracy"),
            ("accuracy", "pruned", "accuracy"), ("accuracy", "recalibrated", "accuracy"))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def manifest_problem(manifest: Any) -> str | None:
    """What makes ``manifest`` (parsed JSON) not a run manifest that the listing, the Compare page and fine-tuning
    can read, or None: its format, ``id`` and ``status``, and the type of every entry they read."""
    if not isinstance(manifest, dict):
        return f"it holds a JSON {_kind(manifest).split(' ', 1)[1]}, not an object"
    if manifest.get("format") != RUN_FORMAT:
        return f"its format is {manifest.get('format')!r}, not {RUN_FORMAT!r}"
    for key, ok, want in (("id", lambda v: isinstance(v, str) and v, "a name"),
                          ("status", lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}")):
        if key not in manifest:
            return f"{key!r} is missing"
        if not ok(manifest[key]):
            return f"{key!r} must be {want}, got {manifest[key]!r}"
    for key in ("created", "updated", "finished", "error"):
        if not isinstance(manifest.get(key), (str, type(None))):
            return f"{key!r} must be a string or null, got {_kind(manifest[key])}"
    runtime_entries = [(side, key) for name in runtime_names() for side in ("before", "after")
                       for key in (get_runtime(name).latency_key, get_runtime(name).record_key) if key]
    for path in [(k,) for k in _OBJECTS] + runtime_entries + list(_NESTED_OBJECTS):
        value = _at(manifest, path)
        if not isinstance(value, (dict, type(None))):
            return f"{'.'.join(path)!r} must be an object or null, got {_kind(value)}"
    for path in _NUMBERS:
        value = _at(manifest, path)
        if isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
            return f"{'.'.join(path)!r} must be a number or null, got {value!r}"
    epochs = (manifest.get("finetune") or {}).get("epochs")
    if epochs is not None and not (isinstance(epochs, list) and all(isinstance(r, dict) for r in epochs)):
        return f"'finetune.epochs' must be a list of objects (one per epoch), got {_kind(epochs)}"
    for layer, pair in (_at(manifest, ("report", "channels")) or {}).items():
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, int) for n in pair)):
            return f"'report.channels' must map each conv to [filters before, after], got {pair!r} for {layer!r}"
    return None


def _at(manifest: dict, path: tuple[str, ...]) -> Any:
    """The entry at ``path`` (keys into nested objects), None where a level is missing or null."""
    value: Any = manifest
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class Run:
    """One run directory and its manifest; every change rewrites the manifest atomically."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path, self.manifest = Path(path), manifest

    @classmethod
    def create(cls, root: str | os.PathLike | None = None, *, name: str = "run", **fields: Any) -> Run:
        """A new directory ``<root>/<UTC time>-<name>-<6 hex>`` with a manifest in status ``running``,
        owned by this process; ``fields`` go into the manifest. Characters of ``name`` that some file systems
        refuse (``torchvision:densenet121@32``'s colon) become ``_``."""
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{re.sub(r'[^A-Za-z0-9_.@+-]', '_', name)}-{uuid.uuid4().hex[:6]}"
        path = runs_root(root) / run_id
        path.mkdir(parents=True)
        now = utc_now()
        manifest = {"format": RUN_FORMAT, "id": run_id, "status": "running", "created": now, "updated": now,
                    "finished": None, "error": None, "finetune": None, "versions": versions(),
                    "process": _this_process(),
                    **fields}
        run = cls(path, manifest)
        write_text_atomic(path / MANIFEST, json.dumps(manifest, indent=2))
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        return cls(Path(path), read_manifest(path))

    def start(self) -> None:
        """Mark the run ``running`` again, owned by this process, for a later stage (fine-tuning): its
        ``finished`` and ``error`` are cleared. ValueError when another live process is running it."""
        current = read_manifest(self.path)
        proc = current.get("process") or {}
        if current["status"] == "running" and proc.get("pid") != os.getpid():
            raise UserError(f"run {current['id']} is being run by process {proc.get('pid')} on {proc.get('host')}")
        self.manifest = current
        self.update(status="running", finished=None, error=None, process=_this_process())

    @property
    def status(self) -> str:
        return self.manifest["status"]

    def update(self, **fields: Any) -> None:
        """Set top-level manifest entries (e.g. ``finetune={...}``) and rewrite the manifest."""
        self.manifest.update(fields, updated=utc_now())
        write_text_atomic(self.path / MANIFEST, json.dumps(self.manifest, indent=2))

    def finish(self, status: str = "done", error: str | None = None) -> None:
        if status not in STATUSES[1:]:
            raise UserError(f"a run finishes as one of {STATUSES[1:]}, got {status!r}")
        self.update(status=status, error=error, finished=utc_now())

    @contextmanager
    def failures_recorded(self) -> Iterator[None]:
        """Mark the run ``interrupted`` (Ctrl-C) or ``failed`` (with the error) when the body raises, then
        re-raise."""
        try:
            yield
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM in a worker, or a cancelled job
            self.finish("interrupted", str(exc) or "KeyboardInterrupt")
            raise
        except Exception as exc:
            self.finish("failed", f"{type(exc).__name__}: {exc}")
            raise

    def save_model(self, model: nn.Module, *, arch: str, num_classes: int, meta: dict | None = None) -> Path:
        """Write ``model`` as ``model.safetensors`` in the run directory (reloads alone)."""
        return save_checkpoint(model, self.path / MODEL_FILE, arch=arch, num_classes=num_classes,
                               meta={"run": self.manifest["id"], **(meta or {})})


def list_runs(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run under ``root`` (newest first): run, status, arch, criterion, preset, params / MACs /
    FLOPs / latency (ms, batch 1 and 64: latency_b1, latency_b64 in PyTorch eager, latency_ort_b1, latency_ort_b64
    in ONNX Runtime on the CPU: each runtime's ``prefix``; None when not measured) before and after, ort_error (why a
    run has no ONNX Runtime latency, else None: a runtime's ``error_column``), accuracy before, right after pruning,
    after BN recalibration and after fine-tuning, test_images (how many test images the accuracies before / after pruning /
    recalibrated are measured on) and test_images_finetuned (the fine-tuned one's), sweep and target (for a
    sweep's point, else None), created, error (why it failed, else None), path. Directories without a
    readable manifest are listed with status ``unreadable`` and the reason as their error."""
    root = runs_root(root)
    rows = []
    for path in sorted(root.iterdir() if root.is_dir() else [], reverse=True):
        if not path.is_dir() or not (path / MANIFEST).exists():
            continue
        try:
            m = read_manifest(path)
        except ValueError as exc:
            rows.append({"run": path.name, "status": "unreadable", "error": str(exc), "path": str(path)})
            continue
        before, after = m.get("before") or {}, m.get("after") or {}
        row = {"run": m["id"], "status": m["status"], "arch": (m.get("model") or {}).get("arch"),
               "criterion": (m.get("criterion") or {}).get("name"),
               "preset": ((m.get("plan") or {}).get("preset") or {}).get("name")}
        for key in ("params", "macs", "flops"):
            row[f"{key}_before"], row[key] = before.get(key), after.get(key)
        for runtime in map(get_runtime, runtime_names()):
            for b in map(str, LATENCY_BATCHES):
                row[f"{runtime.prefix}b{b}_before"] = (before.get(runtime.latency_key) or {}).get(b)
                row[f"{runtime.prefix}b{b}"] = (after.get(runtime.latency_key) or {}).get(b)
            if runtime.error_column:
                row[runtime.error_column] = runtime.problem(m)
        summary = accuracy_summary(m)  # accuracy before / pruned / recalibrated and the test images they are on
        row.update((k, summary[k]) for k in ("accuracy_before", "accuracy_pruned", "accuracy_recalibrated"))
        row["accuracy_finetuned"] = (m.get("finetune") or {}).get("accuracy")
        row["test_images"] = summary["test_images"]
        row["test_images_finetuned"] = (((m.get("finetune") or {}).get("data")) or {}).get("test")
        row["sweep"], row["target"] = (m.get("sweep") or {}).get("id"), (m.get("sweep") or {}).get("target")
        row.update(created=m.get("created"), error=m.get("error"), path=str(path))
        rows.append(row)
    return pd.DataFrame(rows)


def prune_run(
    model: nn.Module, plan: Plan, scores: dict[str, torch.Tensor], *, arch: str, num_classes: int,
    input_size: tuple[int, int, int], root: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None, data: ArraySet | None = None, recalibrate: ArraySet | None = None,
    latency_batches=LATENCY_BATCHES, repeat: int = LATENCY_REPEAT, runtimes=None, struct: Structure | None = None,
    sweep: dict | None = None, progress: Progress | None = None, before: dict | None = None, plain: bool = True,
    measured: dict | None = None, pruner: Pruner | None = None,
) -> Run:
    """Prune ``model`` (on the device to measure on; never modified) by ``plan`` with the criterion's
    ``scores`` ({conv: (out_channels,)}), recording everything as a new run under ``root``: the step below
    :func:`prune`, the entry point (which reads the classes and input size from the model and the plan).

    data: held-out images to measure accuracy and loss before, right after pruning and after recalibration
    (None: not measured). recalibrate: training images (uint8 (N, 3, H, W)) on which the pruned model's
    BatchNorm statistics are re-estimated (:func:`prunekit.pruning.recalibrate.recalibrate_bn`, with
    :data:`prunekit.defaults.RECALIBRATION`); the run's model is then the recalibrated one (what fine-tuning
    starts from and export writes; no weight differs) and the manifest's ``recalibration`` says on what. None:
    not recalibrated. latency_batches, repeat, runtimes: :mod:`prunekit.runs.runtimes` (None: every one; a failed ONNX export is recorded,
    never fails the run). checkpoint: the weights' file (its SHA-256 is recorded). struct: the traced structure
    (default: traced here). sweep: which sweep point this is (:mod:`prunekit.runs.sweeps`). progress: six steps.
    before: the unpruned model's accuracy on ``data`` when the caller has it (a sweep measures it once); plain:
    also the accuracy right after pruning (False: only the recalibrated one, when recalibrating). measured: the
    ``accuracy`` entry ({before, pruned, recalibrated}) of an earlier run that removed the same filters from the same
    model, measured on the same ``data`` and recalibration images (a sweep's targets whose kept widths round alike):
    recorded as it is instead of evaluating the same model again. pruner: ``model`` traced for pruning
    (:class:`prunekit.pruning.prune.Pruner`; a sweep traces it once for all its points; default: traced here).
    A refused plan or pruning writes nothing; a later failure marks the run ``failed`` (Ctrl-C: ``interrupted``)."""
    progress = progress or no_progress
    source = _source(model, arch, num_classes, input_size, checkpoint, data, recalibrate)
    struct = struct or structure(model, input_size)
    plan.check(struct, arch)
    pruned, removed = (pruner or Pruner(model, input_size)).prune(plan.ratios, scores, round_to=plan.round_to)
    progress(1, 6)
    run = Run.create(root, name=arch, model=source, data=_images_record(data), recalibration=None, sweep=sweep,
                     criterion={"name": plan.criterion, "params": plan.criterion_params}, plan=plan.to_dict(),
                     before=None, after=None, accuracy=None, report=None, device=str(next(model.parameters()).device))
    with run.failures_recorded():
        accuracy = {"before": before if before is not None or data is None else held_out_accuracy(model, data)}
        progress(2, 6)
        batches, timed = budget_timing(plan, latency_batches, runtimes)  # a latency budget's runtime and batch too
        report = prune_report(model, pruned, plan.ratios, removed, input_size, latency_batches=batches,
                              repeat=repeat, runtimes=timed)
        progress(3, 6)
        pruned = _measure(run, pruned, accuracy, data, recalibrate, plain=plain, measured=measured, progress=progress)
        progress(5, 6)
        run.update(before=report.before, after=report.after, accuracy=accuracy,
                   latency_budget=latency_budget(plan, report.before, report.after),
                   report={"channels": report.to_dict()["channels"], "groups": report.groups, "combine":
                           report.combine, "unprunable": plan.unprunable(struct), "round_to": plan.round_to})
        run.save_model(pruned, arch=arch, num_classes=num_classes, meta={"source_checkpoint": source["checkpoint"],
                       **{f"accuracy_{k}": (v or {}).get("accuracy") for k, v in accuracy.items() if k != "before"}})
        run.update(files={"model": MODEL_FILE})
        progress(6, 6)
    run.finish("done")
    return run


def _source(model: nn.Module, arch: str, num_classes: int, input_size, checkpoint, data: ArraySet | None,
            recalibrate: ArraySet | None) -> dict:
    """What a manifest records of the unpruned model: architecture, classes, input size, file and weights hashes;
    first the model is checked against the images it will see (UserError when it does not take them)."""
    for images, labels in ((data, True), (recalibrate, False)):
        if images is not None:
            check_model_data(model, arch, images, labels=labels, input_size=input_size)
    return {"arch": arch, "num_classes": num_classes, "input_size": list(input_size),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None, "weights": weights_hash(model)}


def _measure(run: Run, pruned: nn.Module, accuracy: dict, data: ArraySet | None, recalibrate: ArraySet | None, *,
             plain: bool, measured: dict | None, progress: Progress) -> nn.Module:
    """:func:`prune_run`'s accuracies right after pruning (when ``plain``) and after recalibration into ``accuracy``
    (``measured``'s when given: nothing evaluated); -> the run's model (recalibrated when asked), contiguous."""
    evaluate = measured is None and data is not None
    pruned = pruned.to(memory_format=torch.channels_last)  # faster convolutions, the same accuracy (measured)
    accuracy.update(pruned=held_out_accuracy(pruned, data) if evaluate and (plain or recalibrate is None) else None,
                    recalibrated=None)
    progress(4, 6)
    if recalibrate is not None:
        pruned = _recalibrate(run, pruned, recalibrate, data if evaluate else None, accuracy)
    if measured is not None:
        accuracy.update(pruned=measured.get("pruned"), recalibrated=measured.get("recalibrated"))
    return pruned.to(memory_format=torch.contiguous_format)  # what the file holds


def _recalibrate(run: Run, pruned: nn.Module, images: ArraySet, held_out: ArraySet | None,
                 accuracy: dict) -> nn.Module:
    """The recalibrated model; its accuracy on ``held_out`` (None: not measured) into ``accuracy``, what it was
    recalibrated on into the manifest."""
    images = images.subset(RECALIBRATION.n, RECALIBRATION.seed)  # drawn once: recalibrate_bn takes all of these
    out, note = recalibrate_bn(pruned, images)
    run.update(recalibration={**_images_record(images), "seed": RECALIBRATION.seed, "note": note})
    accuracy["recalibrated"] = None if held_out is None or note else held_out_accuracy(out, held_out)
    return out


def accuracy_summary(manifest: dict) -> dict:
    """What a run's accuracies are and what they are measured on, for a closing line: accuracy_before,
    accuracy_pruned (right after pruning), accuracy_recalibrated (after BatchNorm recalibration: the one that tracks
    fine-tuned accuracy), each in % or None; test_images (the held-out images all three are on) and
    recalibration_images (the training images BN was re-estimated on, None when it was not)."""
    acc = manifest.get("accuracy") or {}
    recal = manifest.get("recalibration") or {}
    measured = next((v for v in acc.values() if v), None) or {}
    return {**{f"accuracy_{k}": (acc.get(k) or {}).get("accuracy") for k in ("before", "pruned", "recalibrated")},
            "test_images": measured.get("n"),
            "recalibration_images": recal.get("n") if recal and not recal.get("note") else None}


def _images_record(data: ArraySet | None) -> dict | None:
    """What a manifest records of a set of images: the data set's name, how many, a hash of their content."""
    return None if data is None else {
        "name": data.name, "n": len(data),
        "sha256": data.content_hash()}


def prune(model: nn.Module, plan: Plan, scores=None, *, data: ArraySet | None = None,
          recalibrate: ArraySet | None = None, probe=None, checkpoint: str | os.PathLike | None = None,
          root: str | os.PathLike | None = None, **options: Any) -> Run:
    """Prune ``model`` by ``plan`` into a real, smaller model, measured and recorded as a run on disk: the entry
    point, what :func:`prunekit.finetune` and :func:`prunekit.compare` take next.
    :func:`prunekit.pruning.prune.prune_model` is the step below it (the smaller model in memory, nothing measured
    or recorded); :func:`prune_run` is this with the architecture's classes and input size spelt out.

    Args:
        model: the unpruned model, on the device to measure on; never modified. Its input size (C, H, W) is the
            plan's architecture's (:func:`prunekit.models.zoo.model_info`), its classes its outputs there.
        plan: a :class:`~prunekit.pruning.plan.Plan` for this model (:func:`prunekit.plan`).
        scores: the scores of ``plan.criterion`` that pick the filters: the table of :func:`prunekit.score` or
            {conv: float (filters,)}; default: scored here (``probe``: the images a data-driven criterion reads).
        data: held-out images, uint8 (N, C, H, W) with labels (N,): accuracy before, after pruning and after
            recalibration (None: not measured).
        recalibrate: training images the pruned model's BatchNorm statistics are re-estimated on (None: not).
        checkpoint: the file ``model`` was loaded from: recorded with its SHA-256, and the teacher
            :func:`prunekit.finetune` distils from by default (None: a model never saved needs ``teacher=`` there).
        root: the runs folder (default ``$PRUNEKIT_RUNS``, else ``./runs``).
        options: the rest of :func:`prune_run`'s keywords (``runtimes=()`` and ``latency_batches=()`` skip the
            latency timing; ``progress``).

    Returns: the :class:`Run`; ``run.path / "model.safetensors"`` is the pruned model
    (:func:`prunekit.load_checkpoint`), ``run.manifest`` what was measured.

    >>> path = "assets/resnet20_cifar10.safetensors"
    >>> model, header = load_checkpoint(path)
    >>> run = prune(model, plan(model, header["arch"], value=0.5), data=test_set, checkpoint=path)
    >>> pruned, header = load_checkpoint(run.path / "model.safetensors")
    >>> pruned.conv1.out_channels      # 16 filters, half removed
    8
    """
    input_size = model_info(plan.arch).input_size
    if scores is None:
        scores = score(model, plan.criterion, probe=probe, **plan.criterion_params)
    if isinstance(scores, pd.DataFrame):
        scores = to_tensors(scores)
    return prune_run(model, plan, scores, arch=plan.arch, num_classes=outputs_of(model, input_size),
                     input_size=input_size, data=data, recalibrate=recalibrate, checkpoint=checkpoint, root=root,
                     **options)
