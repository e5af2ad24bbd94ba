"""What the Compare page needs from the runs on disk: the accuracy-vs-cost points (a latency in PyTorch eager or
ONNX Runtime), their Pareto front, the unpruned baselines, one run's channels, latencies per runtime and fine-tuning
curve, its downloadable files and its report as a zip.

>>> runs = list_runs()
>>> points = comparison(runs, "flops", "finetuned")   # run, x, accuracy, stage, ..., pareto
>>> report_zip(runs.loc[0, "path"])                    # bytes of a zip: manifest, plan, channels, fine-tuning
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from prunekit.defaults import LATENCY_BATCHES
from prunekit.errors import UserError
from prunekit.runs.finetune import FINETUNE_DIR
from prunekit.runs.records import MANIFEST, MODEL_FILE, list_runs, read_manifest
from prunekit.runs.runtimes import get_runtime, runtime_labels, runtime_names

__all__ = ["axes", "COSTS", "STAGES", "axis", "latency_frame", "pareto_front", "compare", "comparison",
           "latency_suspects", "baselines", "sweep_progress", "channels_frame", "finetune_frame", "run_files", "report_zip"]

COSTS = {"flops": "FLOPs", "params": "parameters",
         **{f"latency_b{b}": f"latency, batch {b} (ms)" for b in LATENCY_BATCHES}}
"""The costs to pick; a latency is then read in one of the registered runtimes (:func:`axis`)."""


def axis(cost: str, runtime: str | None = None) -> str:
    """The :func:`prunekit.runs.records.list_runs` column of ``cost`` (a key of :data:`COSTS`) in ``runtime`` (a
    registered runtime's name; default: the first registered): its latency columns start with the runtime's ``prefix`` (``latency_b1`` in ONNX
    Runtime is ``latency_ort_b1``); FLOPs and parameters are the same in every runtime."""
    runtime = runtime_names()[0] if runtime is None else runtime
    if cost not in COSTS or runtime not in runtime_names():
        raise UserError(f"cost must be one of {list(COSTS)} and runtime one of {runtime_names()}, got {cost!r}, "
                        f"{runtime!r}")
    return cost.replace("latency_", get_runtime(runtime).prefix, 1)


def axes() -> dict[str, str]:
    """The x axes: {a column of :func:`prunekit.runs.records.list_runs`: its label}: FLOPs, parameters and each
    latency of :data:`COSTS` in each registered runtime."""
    labels = runtime_labels()
    return {"flops": "FLOPs", "params": "parameters",
            **{axis(cost, runtime): f"{labels[runtime]} {COSTS[cost]}" for runtime in labels
               for cost in COSTS if cost.startswith("latency_")}}


STAGES = {"finetuned": "after fine-tuning (else recalibrated, else right after pruning)",
          "recalibrated": "after BN recalibration (else right after pruning)", "pruned": "right after pruning"}
FALLBACK = {"finetuned": ("finetuned", "recalibrated", "pruned"), "recalibrated": ("recalibrated", "pruned"),
            "pruned": ("pruned",)}
LABEL = {"finetuned": "fine-tuned", "recalibrated": "recalibrated", "pruned": "pruned"}


SPEEDUP_SLACK = 1.5
"""A speedup above this many times the run's MAC reduction, or below 1 / this, is not what pruning does: suspect."""


def _speedup_check(speedup: float, macs_factor: float) -> str | None:
    """Why ``speedup`` (before / after) is implausible for a model with ``macs_factor`` times fewer MACs, else
    None (None too when either is unknown)."""
    if np.isnan(speedup) or not np.isfinite(macs_factor):
        return None
    if speedup > SPEEDUP_SLACK * macs_factor or speedup < 1 / SPEEDUP_SLACK:
        return (f"{speedup:.3g}x for {macs_factor:.3g}x fewer MACs: one of the two timings was taken while the "
                "machine was busy; trust the other runtime or batch size, or prune again on a quiet machine")
    return None


def latency_frame(manifest: dict) -> pd.DataFrame:
    """A run's latencies, one row per runtime and batch size it was timed at: runtime (its label), batch,
    before, after (ms, NaN when not measured), speedup (before / after), check (why that speedup is implausible
    for the run's MAC reduction, :data:`SPEEDUP_SLACK`; else None) and note (why ONNX Runtime has no figure: the
    export failed or disagreed, else None)."""
    before, after = manifest.get("before") or {}, manifest.get("after") or {}
    macs_factor = (before.get("macs") or np.nan) / (after.get("macs") or np.nan)
    rows = []
    for runtime in map(get_runtime, runtime_names()):
        b, a = before.get(runtime.latency_key) or {}, after.get(runtime.latency_key) or {}
        note = runtime.problem(manifest)
        for batch in sorted(set(b) | set(a), key=int) or ([] if note is None else ["-"]):
            t0, t1 = b.get(batch, np.nan), a.get(batch, np.nan)
            speedup = t0 / t1 if t1 and not np.isnan(t0 + t1) else np.nan
            rows.append({"runtime": runtime.label, "batch": batch, "before": t0, "after": t1, "speedup": speedup,
                         "check": _speedup_check(speedup, macs_factor), "note": note})
    return pd.DataFrame(rows, columns=["runtime", "batch", "before", "after", "speedup", "check", "note"])


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Boolean mask (``df``'s index) of the rows on the Pareto front of low ``x`` (a cost) and high ``y``
    (an accuracy): no other row has x <= and y >= with one of them strict. Rows with a missing or non-finite
    x or y are never on it; equal rows are all on it."""
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=np.float64)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=np.float64)
    valid = np.isfinite(xs) & np.isfinite(ys)
    cx, cy = xs[valid][None, :], ys[valid][None, :]  # candidates that may dominate
    dominated = ((cx <= xs[:, None]) & (cy >= ys[:, None]) & ((cx < xs[:, None]) | (cy > ys[:, None]))).any(1)
    return pd.Series(valid & ~dominated, index=df.index, name="pareto")


def comparison(runs: pd.DataFrame, x: str = "flops", stage: str = "finetuned") -> pd.DataFrame:
    """The points of the accuracy-vs-cost chart from :func:`prunekit.runs.records.list_runs`'s table: one row per run
    that has ``x`` and an accuracy, columns run, arch, criterion, preset, sweep and target (a sweep's point; else
    None), x, accuracy, stage ('fine-tuned', 'recalibrated' or 'pruned': where the accuracy comes from), n (test
    images that accuracy is measured on), suspect (why the latency is suspect, :func:`latency_suspects`; else None),
    pareto (suspect points are never on the front).
    A sweep's points, sorted by x within (sweep, criterion), are its curves.

    x: a key of :func:`axes`; stage: a key of :data:`STAGES`: the accuracy of that stage where a run has one,
    else of the stage before it (:data:`FALLBACK`)."""
    if x not in axes() or stage not in STAGES:
        raise UserError(f"x must be one of {list(axes())} and stage one of {list(STAGES)}, got {x!r}, {stage!r}")
    cols = ["run", "arch", "criterion", "preset", "sweep", "target", "x", "accuracy", "stage", "n", "suspect",
            "pareto"]
    if runs.empty or x not in runs:
        return pd.DataFrame(columns=cols)
    accuracy = pd.Series(np.nan, index=runs.index)
    label = pd.Series(None, index=runs.index, dtype=object)
    n = pd.Series(np.nan, index=runs.index)
    for step in FALLBACK[stage]:
        column = f"accuracy_{step}"
        values = _column(runs, column)
        take = accuracy.isna() & values.notna()
        accuracy, label = accuracy.where(~take, values), label.where(~take, LABEL[step])
        n = n.where(~take, _column(runs, "test_images_finetuned" if step == "finetuned" else "test_images"))
    out = runs[["run", "arch", "criterion", "preset"]].assign(
        sweep=runs["sweep"] if "sweep" in runs else None, target=runs["target"] if "target" in runs else None,
        x=pd.to_numeric(runs[x], errors="coerce"), accuracy=accuracy, stage=label, n=n,
        suspect=latency_suspects(runs, x) if x.startswith("latency") else None)
    out = out[out["x"].notna() & out["accuracy"].notna()]
    front = pareto_front(out[out["suspect"].isna()], "x", "accuracy").reindex(out.index, fill_value=False)
    return out.assign(pareto=front)[cols].reset_index(drop=True)


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(runs[name], errors="coerce") if name in runs else pd.Series(np.nan, index=runs.index)


SUSPECT_FACTOR = 5.0
"""A run's latency per MAC this many times off the median of the runs of its architecture is suspect."""


def latency_suspects(runs: pd.DataFrame, x: str) -> pd.Series:
    """Why each run's latency ``x`` (a latency key of :func:`axes`, in any runtime) is suspect, else None: its
    milliseconds per MAC in that runtime are more than :data:`SUSPECT_FACTOR` times above or below the median of the
    runs of the same architecture in that runtime
    (a timing taken while the machine was busy with other work, e.g. 615 ms where its siblings took 3 ms). Needs
    at least three timed runs of an architecture; fewer are never flagged."""
    per_mac = _column(runs, x) / _column(runs, "macs")
    arch = runs["arch"] if "arch" in runs else pd.Series(None, index=runs.index)
    median = per_mac.groupby(arch).transform(lambda v: v.median() if v.notna().sum() >= 3 else np.nan)
    factor = per_mac / median
    off = (factor > SUSPECT_FACTOR) | (factor < 1 / SUSPECT_FACTOR)
    return pd.Series([f"{f:.3g}x the median time per MAC of the {a} runs: timed on a busy machine?" if o else None
                      for f, a, o in zip(factor, arch, off)], index=runs.index, dtype=object)


def baselines(runs: pd.DataFrame, x: str = "flops") -> pd.DataFrame:
    """The unpruned models the runs started from: one row per distinct (arch, ``x`` before, accuracy before, test
    images it is measured on), columns arch, x, accuracy, n (test images, NaN when unrecorded), runs (how many runs
    started from it). Runs without both values are left out."""
    cols = ["arch", "x", "accuracy", "n", "runs"]
    if runs.empty or f"{x}_before" not in runs:
        return pd.DataFrame(columns=cols)
    base = runs.assign(x=pd.to_numeric(runs[f"{x}_before"], errors="coerce"),
                       accuracy=pd.to_numeric(runs["accuracy_before"], errors="coerce"),
                       n=_column(runs, "test_images").fillna(-1))
    base = base.dropna(subset=["x", "accuracy"])
    base = base.groupby(["arch", "x", "accuracy", "n"], as_index=False).size().rename(columns={"size": "runs"})
    return base.assign(n=base["n"].where(base["n"] >= 0))[cols]


def sweep_progress(runs: pd.DataFrame) -> pd.DataFrame:
    """How far each sweep in :func:`prunekit.runs.records.list_runs`'s table got: one row per (sweep, criterion) its
    spec asks for, columns sweep, criterion, done (its targets with a finished run), total (the targets its spec
    asks for; NaN for a sweep whose manifests do not record its spec) and partial (done < total: the sweep was
    stopped, or still runs). A sweep resumed under its id (:func:`prunekit.runs.sweeps.run_sweep`) fills the same
    rows."""
    cols = ["sweep", "criterion", "done", "total", "partial"]
    if runs.empty or "sweep" not in runs or runs["sweep"].isna().all():
        return pd.DataFrame(columns=cols)
    rows = []
    for sweep_id, group in runs[runs["sweep"].notna()].groupby("sweep", sort=False):
        spec = _sweep_spec(group["path"])
        finished = group[group["status"] == "done"]
        done = finished.groupby("criterion")["target"].nunique().to_dict()
        for criterion in spec.get("criteria") or sorted(group["criterion"].dropna().unique()):
            total = len(spec["targets"]) if spec.get("targets") else np.nan
            rows.append({"sweep": sweep_id, "criterion": criterion, "done": int(done.get(criterion, 0)),
                         "total": total, "partial": bool(done.get(criterion, 0) < total)})
    return pd.DataFrame(rows, columns=cols)


def _sweep_spec(paths: pd.Series) -> dict:
    """The spec ({criteria, targets, ...}) a sweep's runs record, from the first readable manifest; {} when none
    records it (a sweep made before manifests held it)."""
    for path in paths:
        try:
            spec = (read_manifest(path).get("sweep") or {}).get("spec")
        except ValueError:
            continue
        if isinstance(spec, dict):
            return spec
    return {}


def channels_frame(manifest: dict) -> pd.DataFrame:
    """One row per conv of a run's report: layer, before, after, removed (filters), in the model's order."""
    channels = (manifest.get("report") or {}).get("channels") or {}
    rows = [(layer, int(b), int(a), int(b) - int(a)) for layer, (b, a) in channels.items()]
    return pd.DataFrame(rows, columns=["layer", "before", "after", "removed"])


def finetune_frame(manifest: dict) -> pd.DataFrame:
    """The fine-tuning metrics of a run, one row per finished epoch (epoch, train_loss, train_accuracy,
    test_loss, test_accuracy, lr, seconds, images_per_s); empty when it was not fine-tuned."""
    return pd.DataFrame((manifest.get("finetune") or {}).get("epochs") or [])


def _inside(run_dir: Path, relative: str) -> Path | None:
    """``run_dir / relative`` if it is a regular file that resolves inside ``run_dir``, else None."""
    root = run_dir.resolve()
    path = (run_dir / relative).resolve()
    return path if path.is_file() and path.is_relative_to(root) else None


def run_files(run_dir: str | os.PathLike) -> dict[str, Path]:
    """The run's model files that exist: {'pruned': model.safetensors, 'fine-tuned':
    finetune/model.safetensors}; only regular files inside ``run_dir`` (a link out of it is not offered)."""
    run_dir = Path(run_dir)
    candidates = {"pruned": MODEL_FILE, "fine-tuned": f"{FINETUNE_DIR}/{MODEL_FILE}"}
    return {label: path for label, rel in candidates.items() if (path := _inside(run_dir, rel)) is not None}


def report_zip(run_dir: str | os.PathLike, charts: dict[str, str] | None = None) -> bytes:
    """A zip of one run's report: manifest.json, plan.json, channels.csv (per conv: before, after, removed),
    finetune.csv (per epoch, when fine-tuned) and ``charts`` ({file stem: standalone HTML}) as
    ``charts/<stem>.html``. ValueError when the run's manifest is unreadable."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, (run_dir / MANIFEST).read_text())
        zf.writestr("plan.json", json.dumps(manifest.get("plan") or {}, indent=2))
        zf.writestr("channels.csv", channels_frame(manifest).to_csv(index=False))
        tuned = finetune_frame(manifest)
        if not tuned.empty:
            zf.writestr("finetune.csv", tuned.to_csv(index=False))
        for stem, html in (charts or {}).items():
            zf.writestr(f"charts/{Path(stem).name}.html", html)
    return buffer.getvalue()


def compare(runs=None, *, x: str = "flops", stage: str = "finetuned",
            root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Accuracy against cost, one row per run, with the Pareto front marked: the entry point. :func:`comparison` is
    the same on a :func:`prunekit.runs.records.list_runs` table (what the Compare page draws from).

    Args:
        runs: which runs: None (every run under ``root``), a table of :func:`prunekit.list_runs` rows (what
            :func:`prunekit.sweep` returns), or a list of :class:`~prunekit.runs.records.Run` objects or their
            directories (what :func:`prunekit.prune` returns).
        x: the cost, a key of :func:`axes` (``"flops"``, ``"params"``, ``"latency_b1"``, ``"latency_ort_b64"``, ...).
        stage: the accuracy, a key of :data:`STAGES` (``"finetuned"``, ``"recalibrated"``, ``"pruned"``); a run
            without it counts the stage before.
        root: the runs folder for ``runs=None`` (default ``$PRUNEKIT_RUNS``, else ``./runs``).

    Returns: a DataFrame (R rows, one per run with both numbers), columns run, arch, criterion, preset, sweep,
    target, x, accuracy (%), stage, n (test images), suspect, pareto (bool).

    >>> table = compare([prune(model, plan(model, "resnet20", value=v), data=test) for v in (0.3, 0.5)])
    >>> table[["criterion", "x", "accuracy", "pareto"]]
    >>> compare(x="latency_b1", stage="recalibrated", root="runs")     # every run in runs/
    """
    if runs is None:
        runs = list_runs(root)
    elif not isinstance(runs, pd.DataFrame):
        paths = [str(getattr(run, "path", run)) for run in runs]
        tables = [list_runs(folder) for folder in dict.fromkeys(str(Path(p).parent) for p in paths)]
        runs = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        runs = runs[runs["path"].isin(paths)] if not runs.empty else runs
    return comparison(runs, x, stage)
