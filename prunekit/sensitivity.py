"""Sensitivity analysis: how much each coupled group alone can lose before the model suffers.

>>> df = sensitivity(model, scores, held_out.subset(1000), ratios=(0.1, 0.3, 0.5, 0.7, 0.9))
>>> df.columns   # group, ratio, accuracy, loss, params, macs

For each prunable group (named by its root, see :func:`prunekit.prune.coupled_groups`), only that group is
pruned (physically, by :func:`prunekit.prune.prune_model` with the criterion's ``scores``) at each ratio, and the
pruned model is evaluated without fine-tuning on a held-out set. A ratio that would remove every filter of a
group is skipped. Each group's curve starts with a row at ratio 0: the unpruned model. ``params`` and ``macs``
come from the instant estimate (:func:`prunekit.plan.estimate`). Results are cached under
``cache_dir()/sensitivity`` keyed by the weights, the scores, the held-out images, the ratios and the groups.
"""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import torch
import torch.nn as nn

from .criteria.streaming import Progress, no_progress
from .data import ArraySet, DeviceLoader, cache_dir
from .files import write_text_atomic
from .metrics import evaluate
from .plan import estimate, structure
from .prune import kept_channels, prune_model
from .scores import to_tensors, weights_hash

__all__ = ["sensitivity", "DEFAULT_RATIOS", "COLUMNS"]

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COLUMNS = ["group", "ratio", "accuracy", "loss", "params", "macs"]


def sensitivity(
    model: nn.Module,
    scores: dict[str, torch.Tensor] | pd.DataFrame,
    data: ArraySet,
    *,
    ratios=DEFAULT_RATIOS,
    groups: list[str] | None = None,
    batch_size: int = 256,
    cache: bool = True,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Prune each group alone at each of ``ratios`` and evaluate.

    model: on the device to evaluate on (never modified). scores: {conv: (out_channels,)} or a
    :func:`prunekit.score` table. data: the held-out images (uint8 (N, 3, H, W); input size taken from them).
    groups: roots to analyse (default: every prunable group). progress: ``progress(done, total)``.
    Returns a DataFrame with :data:`COLUMNS`, accuracy in %, loss the mean cross-entropy; ``attrs`` holds the
    cache ``key`` and whether it was ``cached``.
    """
    ratios = sorted({float(r) for r in ratios})
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ValueError(f"ratios must be in (0, 1), got {ratios}")
    if isinstance(scores, pd.DataFrame):
        scores = to_tensors(scores)
    input_size = tuple(data.images.shape[1:])
    struct = structure(model, input_size)
    by_root = {g.root: g for g in struct.groups}
    chosen = list(by_root) if groups is None else list(groups)
    unknown = [g for g in chosen if g not in by_root]
    if unknown:
        raise ValueError(f"unknown groups {unknown}; prunable groups: {', '.join(by_root)}")
    key = _key(model, scores, data, ratios, chosen)
    table = cache_dir() / "sensitivity" / f"{key}.csv"
    if cache and table.is_file():
        df = pd.read_csv(table)
        df.attrs = {"key": key, "cached": True}
        return df
    device = next(model.parameters()).device
    loader = DeviceLoader(data, batch_size, train=False, device=device)
    base = evaluate(model, loader)
    est0 = estimate(struct, {})
    work = {g: [r for r in ratios if kept_channels(by_root[g].channels, r) >= 1] for g in chosen}
    total, done = sum(len(v) for v in work.values()), 0
    progress = progress or no_progress
    rows = []
    for g, group_ratios in work.items():
        rows.append({"group": g, "ratio": 0.0, "accuracy": base["accuracy"], "loss": base["loss"],
                     "params": est0.params, "macs": est0.macs})
        for r in group_ratios:
            pruned, _ = prune_model(model, {g: r}, scores, input_size)
            result = evaluate(pruned, loader)
            est = estimate(struct, {g: r})
            rows.append({"group": g, "ratio": r, "accuracy": result["accuracy"], "loss": result["loss"],
                         "params": est.params, "macs": est.macs})
            done += 1
            progress(done, total)
    df = pd.DataFrame(rows, columns=COLUMNS)
    if cache:
        table.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(table, df.to_csv(index=False))
    df.attrs = {"key": key, "cached": False}
    return df


def _key(model: nn.Module, scores: dict[str, torch.Tensor], data: ArraySet, ratios: list[float],
         groups: list[str]) -> str:
    h = hashlib.sha256(weights_hash(model).encode())
    for name in sorted(scores):
        h.update(name.encode())
        h.update(scores[name].detach().float().cpu().contiguous().numpy().tobytes())
    h.update(data.images.numpy().tobytes())
    h.update(data.labels.numpy().tobytes())
    h.update(json.dumps([data.mean, data.std, ratios, groups]).encode())
    return h.hexdigest()[:24]
