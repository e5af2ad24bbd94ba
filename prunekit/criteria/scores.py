"""Scores as a tidy table, cached on disk.

>>> df = score(model, "sfm_entropy", probe=train_set, estimator="pooled")
>>> df.columns   # layer, filter, criterion, score, rank
>>> df.attrs     # {"criterion", "params", "info", "key", "cached"}

``rank`` is the filter's place within its layer, 1 = the highest score (the most important), ties broken by
the lower filter index. A result is cached under ``cache_dir()/scores`` keyed by the hash of the model's
weights (and its class), the probe set's identity (:attr:`prunekit.criteria.probe.Probe.key`, for data-driven
criteria), the criterion's name, revision (:attr:`prunekit.criteria.Criterion.revision`) and parameters, and
the scored layers; the same request again is read from the cache instead of computed.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from prunekit.criteria import Criterion, Scores, as_criterion, get_criterion
from prunekit.criteria.probe import ProbeSpec, as_probe
from prunekit.criteria.streaming import Progress
from prunekit.data import cache_dir
from prunekit.errors import DataNotFoundError, UserError
from prunekit.files import write_text_atomic
from prunekit.models.layers import ConvLayer, select_layers

__all__ = ["score", "score_model", "read_scores", "to_frame", "to_tensors", "weights_hash", "COLUMNS"]

COLUMNS = ["layer", "filter", "criterion", "score", "rank"]


def weights_hash(model: nn.Module) -> str:
    """A hex digest of the model's class and state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # bytes, whatever the dtype (bf16 too)
    return h.hexdigest()


def to_frame(scores: Scores, criterion: str) -> pd.DataFrame:
    """:class:`~prunekit.criteria.Scores` -> DataFrame with :data:`COLUMNS`, layers in the given order."""
    frames = []
    for layer, values in scores.items():
        f = pd.DataFrame({"layer": layer, "filter": range(len(values)), "criterion": criterion,
                          "score": values.double().numpy()})
        f["rank"] = f["score"].rank(method="first", ascending=False).astype(int)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def to_tensors(df: pd.DataFrame) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_frame`: a score table -> {layer: float32 (filters,)} in filter order."""
    missing = {"layer", "filter", "score"} - set(df.columns)
    if missing:
        raise UserError(f"a score table needs the columns layer, filter, score; missing {sorted(missing)}")
    return {layer: torch.tensor(rows.sort_values("filter")["score"].to_numpy(), dtype=torch.float32)
            for layer, rows in df.groupby("layer", sort=False)}


def score(
    model: nn.Module,
    criterion: str | Criterion,
    layers: Iterable[ConvLayer | str] | None = None,
    probe: Any = None,
    *,
    cache: bool = True,
    compute: bool = True,
    progress: Progress | None = None,
    **params: Any,
) -> pd.DataFrame | None:
    """Score the filters of ``layers`` (default: every conv) of ``model`` with ``criterion``: the entry point.
    :meth:`Criterion.score` is the step below it (a dict of tensors, no cache); :func:`score_model` is what the
    command line, the jobs and the dashboard call (a named probe set, a fallback criterion).

    Args:
        model: the model (not modified); a conv with C_out filters gets C_out scores.
        criterion: a registered name (:func:`prunekit.list_criteria`; ``params`` are its parameters) or a built
            :class:`Criterion`.
        layers: convs (names or :class:`~prunekit.models.layers.ConvLayer`), default every conv.
        probe: for data-driven criteria, images (N, C, H, W): an :class:`~prunekit.data.ArraySet`, a
            :class:`~prunekit.data.BoxProbeSet`, a :class:`~prunekit.criteria.probe.Probe` or (x, y) batches;
            ignored by weight-only criteria (l1, fpgm, ...).
        cache: read and write ``cache_dir()/scores``. compute: False returns None instead of computing what is not
            cached. progress: ``progress(done, total)`` while computing.

    Returns: the tidy DataFrame, one row per filter (sum of C_out over the layers), columns layer, filter, criterion,
    score, rank (1 = the most important in its layer); ``attrs`` holds the criterion's name, parameters and
    diagnostics (``info``), the cache ``key`` and whether the result was ``cached``.

    >>> df = score(build_model("resnet20"), "l1")       # weight-only: no images needed
    >>> len(df), df["layer"].nunique()                  # ResNet-20's 688 filters in 19 convs
    (688, 19)
    >>> score(model, "sfm_entropy", probe=load_arrays("cifar10", "train").subset(256))
    """
    crit = as_criterion(criterion, params, "score")
    chosen = select_layers(model, layers)
    data = as_probe(probe) if crit.needs_data else None
    key = _request_key(model, crit, chosen, data.key if data is not None else "")
    table = cache_dir() / "scores" / f"{crit.name}-{key}.csv"
    meta_file = table.with_suffix(".json")
    if cache and table.is_file() and meta_file.is_file():
        df = pd.read_csv(table, dtype={"layer": str, "criterion": str})  # layer '0' stays a name
        df.attrs = {**json.loads(meta_file.read_text()), "cached": True}
        return df
    if not compute:
        return None
    result = crit.score(model, chosen, data, progress=progress)
    df = to_frame(result, crit.name)
    meta = {"criterion": crit.name, "params": crit.config, "info": result.info, "key": key}
    if cache:
        table.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(meta_file, json.dumps(meta))
        write_text_atomic(table, df.to_csv(index=False))
    df.attrs = {**meta, "cached": False}
    return df


def _request_key(model: nn.Module, crit: Criterion, layers: list[ConvLayer], probe_key: str) -> str:
    request = {
        "weights": weights_hash(model),
        "probe": probe_key,
        "criterion": crit.name,
        "revision": crit.revision,
        "params": crit.config,
        "layers": [layer.name for layer in layers],
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:24]


def score_model(
    model: nn.Module,
    criterion: str,
    params: dict[str, Any] | None = None,
    *,
    layers: Iterable[ConvLayer | str] | None = None,
    probe: ProbeSpec | None = None,
    fallback: str | None = None,
    allow_slow: bool = True,
    cache: bool = True,
    progress: Progress | None = None,
    unfit: str | None = None,
) -> pd.DataFrame:
    """The filters of ``layers`` (default: every conv) of ``model`` scored by ``criterion`` with ``params``, on the
    probe set ``probe`` names: the one
    path the command line, the jobs and the dashboard score through (same request, same cache entry). From Python,
    :func:`score` is the entry point (any probe images, no fallback).

    fallback: a data-free criterion to use instead when ``criterion`` cannot run here (it reads images and there
    are none, or the model cannot take them, or it is ``slow``, not cached and ``allow_slow`` is False); None raises
    instead (DataNotFoundError without images, else UserError). unfit: why the model cannot take the probe's images
    (None: it can). The table's ``attrs`` add ``requested`` (the criterion asked for) and ``fallback`` (None, or
    why another criterion's scores came back, ending "The filters are ranked by <fallback> instead.": show it to
    the user).
    """
    crit = get_criterion(criterion, **(params or {}))
    try:
        if unfit and crit.needs_data:
            df, why = None, f"{criterion} reads {probe.dataset if probe else 'probe'} images, and {unfit}"
        else:
            df = score(model, crit, layers, _probe_for(crit, probe), cache=cache, progress=progress,
                       compute=allow_slow or not crit.slow)
            why = None if df is not None else f"{criterion} takes minutes and was not started here (score it first)"
    except DataNotFoundError as exc:
        if fallback is None:
            raise
        df, why = None, f"{criterion} reads images and there are none: {exc}"
    if df is None:
        if fallback is None:
            raise UserError(why)
        df = score(model, get_criterion(fallback), layers, None, cache=cache, progress=progress)
    df.attrs.update(requested=criterion, fallback=None if why is None else f"{why.rstrip('.')}. The filters are "
                                                                         f"ranked by {fallback} instead.")
    return df


def _probe_for(crit: Criterion, probe: ProbeSpec | None):
    """The probe a criterion reads (None for a data-free one); DataNotFoundError when it needs one and has none."""
    if not crit.needs_data:
        return None
    if probe is None:
        raise DataNotFoundError(f"{crit.name} reads probe images: name a data set")
    return probe.build(boxes=crit.needs_boxes)


def read_scores(path, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """{conv: float32 (filters,)} from a scores CSV written by ``score`` (columns layer, filter, score).

    UserError naming the file, the layer and the filter numbers when it cannot be read or a row is wrong: a score
    missing or not a finite number, a layer whose filter numbers are not 0..n-1 each once, a row without a layer.
    With ``model``, also when a layer is not one of its convs or its scores are not as many as the conv's filters
    (the scores of another model)."""
    try:
        df = pd.read_csv(path, dtype={"layer": str})  # a layer named 0 stays the name '0'
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: not a readable scores CSV ({type(exc).__name__}: {exc}); write one with "
                        "`python -m prunekit score`") from None
    missing = {"layer", "filter", "score"} - set(df.columns)
    if missing:
        raise UserError(f"{path}: a scores CSV needs the columns layer, filter, score; missing {sorted(missing)}. "
                        "Write one with `python -m prunekit score`")
    df = df.assign(filter=pd.to_numeric(df["filter"], errors="coerce"),
                   score=pd.to_numeric(df["score"], errors="coerce"))
    problems = _table_problems(df)
    if problems:
        raise UserError(f"{path}: {'; '.join(problems[:3])}{' (and more)' if len(problems) > 3 else ''}. Fix these "
                        "rows, or score the model again (`python -m prunekit score`)")
    tensors = to_tensors(df)
    if model is not None:
        _check_layers(path, tensors, model)
    return tensors


def _numbers(word: str, values) -> str:
    """"filter 2" / "filters 3, 5" (at most 10 listed)."""
    values = [int(v) for v in values]
    listed = ", ".join(map(str, values[:10])) + (f", ... ({len(values)} in all)" if len(values) > 10 else "")
    return f"{word}{'s' if len(values) > 1 else ''} {listed}"


def _table_problems(df: pd.DataFrame) -> list[str]:
    """What is wrong with a score table's rows (filter and score already numeric, NaN where not a number)."""
    unnamed = df.index[df["layer"].isna()] + 2  # CSV line numbers (the header is line 1)
    if len(unnamed):
        return [f"{_numbers('line', unnamed)} "
                f"{'have' if len(unnamed) > 1 else 'has'} no layer name"]
    f = df["filter"]
    odd = df.index[f.isna() | (f < 0) | (f != f.round())]
    if len(odd):
        return [f"filter numbers must be whole numbers >= 0; {_numbers('line', odd + 2)} "
                f"{'have' if len(odd) > 1 else 'has'} {df.loc[odd[0], 'filter']!r}"]
    problems = []
    for layer, rows in df.groupby("layer", sort=False):
        filters = rows["filter"].astype(int)
        twice = sorted(set(filters[filters.duplicated()]))
        gaps = sorted(set(range(int(filters.max()) + 1)) - set(filters))
        bad = rows.loc[~np.isfinite(rows["score"].to_numpy(dtype=float)), "filter"]
        if twice:
            problems.append(f"{layer!r} lists {_numbers('filter', twice)} more than once")
        if gaps:
            problems.append(f"{layer!r} has no row for {_numbers('filter', gaps)} (it lists {filters.nunique()} "
                            f"filters, numbered 0 to {int(filters.max())})")
        if len(bad):
            problems.append(f"{layer!r} has no usable score for {_numbers('filter', sorted(bad))} (missing or not a "
                            "finite number)")
    return problems


def _check_layers(path, tensors: dict[str, torch.Tensor], model: nn.Module) -> None:
    """UserError naming the file and the layer when a scored layer is not a conv of ``model`` or has another number
    of filters."""
    convs = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for layer, values in tensors.items():
        if layer not in convs:
            raise UserError(f"{path}: {layer!r} is not a conv of this model (its convs: "
                            f"{', '.join(list(convs)[:6])}{', ...' if len(convs) > 6 else ''}): these are the scores "
                            "of another model. Score this model (`python -m prunekit score`)")
        if len(values) != convs[layer]:
            raise UserError(f"{path}: {layer!r} has {len(values)} scores and the model's conv {convs[layer]} filters: "
                            "these are the scores of another model (or of this one before pruning). Score this "
                            "model (`python -m prunekit score`)")
