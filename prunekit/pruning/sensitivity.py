"""Sensitivity analysis: how much each coupled group alone can lose before the model suffers.

>>> df = sensitivity(model, scores, held_out.subset(SENSITIVITY.n))    # ratios: SENSITIVITY.ratios
>>> df.columns   # group, ratio, kept, accuracy, loss, params, macs

For each prunable group (named by its root, see :func:`prunekit.pruning.prune.coupled_groups`), only that group is
pruned at each ratio with the criterion's ``scores`` (judged by :class:`prunekit.pruning.evaluator.CandidateEvaluator`,
which gives what the physically pruned model gives), and the pruned model is evaluated without fine-tuning on a held-out set. A ratio that would remove every filter of a
group is skipped. Each group's curve starts with a row at ratio 0: the unpruned model. With ``round_to`` > 1 each
ratio keeps what a plan with that rounding keeps (:func:`prunekit.pruning.ratios.kept_channels`), so the curves show what
the plan will prune; ratios that round to the same width share one pruned model (and a ratio that keeps every
filter is the unpruned model). ``kept`` is the group's filters kept; ``params`` and ``macs`` come from the instant
estimate (:func:`prunekit.pruning.plan.estimate`). Results are cached under ``cache_dir()/sensitivity`` keyed by the
weights, the scores, the held-out images, the ratios, the groups and the rounding.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from prunekit.criteria.scores import to_tensors, weights_hash
from prunekit.criteria.streaming import Progress, no_progress
from prunekit.data import ArraySet, cache_dir
from prunekit.defaults import EVAL_BATCH, RECALIBRATION, ROUND_TO, SENSITIVITY
from prunekit.errors import UserError
from prunekit.files import write_text_atomic
from prunekit.pruning.evaluator import CandidateEvaluator
from prunekit.pruning.ratios import RULE, check_ratio, check_round_to, kept_channels
from prunekit.pruning.structure import Structure, estimate, structure

__all__ = ["sensitivity", "read_sensitivity", "check_table", "check_rounding", "expected_minutes", "COLUMNS",
           "REFERENCE"]
COLUMNS = ["group", "ratio", "kept", "accuracy", "loss", "params", "macs"]
REFERENCE = (60, 40_551_040, 1.0)
"""Measured: ResNet-20's curves, 60 pruned models of 40.55M MACs per image, in about 1.0 minute on the 2-core CPU
build machine (SENSITIVITY's images, recalibrated)."""


def expected_minutes(models: int, macs: int) -> float:
    """Roughly how long ``models`` pruned models of ``macs`` MACs per image take on that CPU: :data:`REFERENCE`
    scaled by the work (models x MACs per image; the images evaluated and recalibrated on are the same)."""
    count, ref_macs, minutes = REFERENCE
    return minutes * models * macs / (count * ref_macs)


def sensitivity(
    model: nn.Module,
    scores: dict[str, torch.Tensor] | pd.DataFrame,
    data: ArraySet,
    *,
    ratios=SENSITIVITY.ratios,
    groups: list[str] | None = None,
    recalibrate: ArraySet | None = None,
    round_to: int = ROUND_TO,
    struct: Structure | None = None,
    batch_size: int = EVAL_BATCH,
    cache: bool = True,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Prune each group alone at each of ``ratios`` and evaluate.

    model: on the device to evaluate on (never modified). scores: {conv: (out_channels,)} or a
    :func:`prunekit.score` table. data: the held-out images (uint8 (N, 3, H, W); input size taken from them).
    groups: roots to analyse (default: every prunable group). recalibrate: training images on which every model,
    the unpruned one too, has its BatchNorm statistics re-estimated before it is evaluated
    (:func:`prunekit.pruning.recalibrate.recalibrate_bn`; the damage is then pruning's alone, and it predicts fine-tuned
    accuracy far better than the plain one); None: evaluated as pruned. round_to: kept filters rounded to a multiple
    of it, as a plan with this rounding prunes (1: none). struct: the model's traced structure, when
    the caller holds it (default: traced here). progress: ``progress(done, total)``.
    Returns a DataFrame with :data:`COLUMNS`, accuracy in %, loss the mean cross-entropy; ``attrs`` holds the
    cache ``key`` and whether it was ``cached``.
    """
    ratios = sorted({check_ratio("sensitivity", r) for r in ratios} - {0.0})
    round_to = check_round_to(round_to)
    if not ratios:
        raise UserError(f"give at least one ratio above 0; {RULE}")
    if isinstance(scores, pd.DataFrame):
        scores = to_tensors(scores)
    struct = struct or structure(model, tuple(data.images.shape[1:]))
    by_root = {g.root: g for g in struct.groups}
    chosen = list(by_root) if groups is None else list(groups)
    unknown = [g for g in chosen if g not in by_root]
    if unknown:
        raise UserError(f"unknown groups {unknown}; prunable groups: {', '.join(by_root)}")
    key = _key(model, scores, data, ratios, chosen, recalibrate, round_to)
    table = cache_dir() / "sensitivity" / f"{key}.csv"
    if cache and table.is_file():
        df = pd.read_csv(table)
        df.attrs = {"key": key, "cached": True}
        return df
    work = {g: [r for r in ratios if kept_channels(by_root[g].channels, r, round_to) >= 1] for g in chosen}
    df = pd.DataFrame(_curves(model, scores, data, struct, work, batch_size, recalibrate, round_to,
                              progress or no_progress), columns=COLUMNS)
    if cache:
        table.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(table, df.to_csv(index=False))
    df.attrs = {"key": key, "cached": False}
    return df


def _curves(model, scores, data, struct, work: dict[str, list[float]], batch_size: int, recal: ArraySet | None,
            round_to: int, progress: Progress) -> list[dict]:
    """The rows: per group, the unpruned model (ratio 0), then the group alone pruned at each of its ratios, each
    judged by one :class:`~prunekit.pruning.evaluator.CandidateEvaluator` (prepared once: groups, batches; ratios
    rounded to the same width share one evaluation; the full width is the unpruned one)."""
    ev = CandidateEvaluator(model, tuple(data.images.shape[1:]), held_out=data, train=recal, batch_size=batch_size)

    def measure(ratios: dict[str, float]) -> dict:
        return ev.evaluate(ratios, scores, round_to=round_to, recalibrate=recal is not None)

    base, est0 = measure({}), estimate(struct, {})
    total, done, rows = sum(len(v) for v in work.values()), 0, []
    widths = {x.root: x.channels for x in struct.groups}
    for g, group_ratios in work.items():
        channels = widths[g]
        by_width = {channels: (base, est0)}
        rows.append(_row(g, 0.0, channels, base, est0))
        for r in group_ratios:
            kept = kept_channels(channels, r, round_to)
            if kept not in by_width:
                by_width[kept] = measure({g: r}), estimate(struct, {g: r}, round_to)
            rows.append(_row(g, r, kept, *by_width[kept]))
            done += 1
            progress(done, total)
    return rows


def _row(group: str, ratio: float, kept: int, result: dict, est) -> dict:
    return {"group": group, "ratio": ratio, "kept": kept, "accuracy": result["accuracy"], "loss": result["loss"],
            "params": est.params, "macs": est.macs}


def _key(model: nn.Module, scores: dict[str, torch.Tensor], data: ArraySet, ratios: list[float],
         groups: list[str], recal: ArraySet | None, round_to: int) -> str:
    h = hashlib.sha256(weights_hash(model).encode())
    if recal is not None:  # the recalibration images the models are evaluated after, and how many of them
        sub = recal.subset(RECALIBRATION.n, RECALIBRATION.seed)
        h.update(sub.images.numpy().tobytes() + repr(RECALIBRATION).encode())
    for name in sorted(scores):
        h.update(name.encode())
        h.update(scores[name].detach().float().cpu().contiguous().numpy().tobytes())
    h.update(data.images.numpy().tobytes())
    h.update(data.labels.numpy().tobytes())
    h.update(json.dumps([data.mean, data.std, ratios, groups, round_to]).encode())
    return h.hexdigest()[:24]


def check_table(table: pd.DataFrame, metric: str = "accuracy") -> None:
    """UserError when a sensitivity table lacks the group, ratio or ``metric`` column, or a ratio or a ``metric``
    value is not a finite number (naming the group and the ratios): presets read it as damage, and a NaN would
    never count as damage."""
    for column in ("group", "ratio", metric):
        if column not in table.columns:
            raise UserError(f"the sensitivity table has no {column!r} column (it has {', '.join(map(str, table))}); "
                            "compute the curves again (`python -m prunekit sensitivity`)")
    for column in ("ratio", metric):
        bad = table[~np.isfinite(pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float))]
        if len(bad):
            group, ratios = bad["group"].iloc[0], bad.loc[bad["group"] == bad["group"].iloc[0], "ratio"].tolist()
            raise UserError(f"the sensitivity table's {column} of {group!r} is not a finite number at "
                            f"ratio{'s' if len(ratios) > 1 else ''} {', '.join(map(str, ratios))}; compute the "
                            "curves again (`python -m prunekit sensitivity`)")


def check_rounding(table: pd.DataFrame, struct: Structure, round_to: int) -> None:
    """UserError when a table with a ``kept`` column (every table :func:`sensitivity` writes) was computed with
    another rounding than ``round_to``: its curves would describe widths the plan never keeps. A table without the
    column (written before it existed) cannot be checked and passes."""
    if "kept" not in table.columns:
        return
    channels = {g.root: g.channels for g in struct.groups}
    kept = pd.to_numeric(table["kept"], errors="coerce")
    for group, ratio, got in zip(table["group"], pd.to_numeric(table["ratio"], errors="coerce"), kept):
        if group in channels and ratio > 0 and got != (want := kept_channels(channels[group], ratio, round_to)):
            raise UserError(f"the sensitivity table keeps {got:g} of the {channels[group]} filters of {group!r} at "
                            f"ratio {ratio:g}, where a plan with round_to {round_to} keeps {want}: the curves were "
                            f"computed with another rounding; compute them with the plan's (`python -m prunekit "
                            f"sensitivity --round-to {round_to}`) or plan with theirs")


def read_sensitivity(path) -> pd.DataFrame:
    """The sensitivity table in the CSV ``path`` (written by ``sensitivity``), checked (:func:`check_table`, with
    both metrics); UserError naming the file."""
    try:
        table = pd.read_csv(path, dtype={"group": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: not a readable sensitivity CSV ({type(exc).__name__}: {exc}); write one with "
                        "`python -m prunekit sensitivity`") from None
    try:
        for metric in ("accuracy", "loss"):
            check_table(table, metric)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return table
