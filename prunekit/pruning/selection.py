"""Which filters go: the one combination of a coupled group's scores and the one choice of the filters a ratio
removes. Pruning (:func:`prunekit.pruning.prune.prune_model`) and every preview (the Feature maps page, the threshold
preset) call these, so a preview shows exactly what pruning removes.

Inside a group, each member conv's scores are min-max normalised within the layer (a constant layer counts as
zeros) and averaged over the members that have scores; the filters with the lowest combined score go, ties to the
lower index. A grouped group (:attr:`prunekit.pruning.prune.Group.blocks`) scores each position of a block by the
mean over its blocks, and the same positions go from every block, as Torch-Pruning's own pruner does.
"""
from __future__ import annotations

import torch

from prunekit.defaults import ROUND_TO
from prunekit.errors import UserError
from prunekit.pruning.ratios import kept_channels

__all__ = ["combined_scores", "group_scores", "lowest", "removed_filters"]


def combined_scores(group, scores: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """float64 (group.channels,): the scores of ``group``'s members (a :class:`prunekit.pruning.prune.Group`), each
    min-max normalised to [0, 1] within its layer (a constant layer counts as zeros; a spread member's averaged over
    the copies of each root filter), averaged over the members that have scores, then over the group's blocks (the
    same position of every block goes: a grouped conv); None when no member has scores. UserError naming the layer
    and the filters when a member's scores are not all finite (a criterion that gave NaN on a dead layer) or are
    not one per filter."""
    spread = dict(group.spread)
    parts = []
    for m in (*group.members, *spread):
        if m in scores:
            roots = spread.get(m)
            s = _checked(m, scores[m], len(roots) if roots else group.filters)
            s = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else torch.zeros_like(s)
            if roots:  # each root filter: the mean of its copies
                s = torch.zeros(group.filters, dtype=s.dtype).index_add_(0, torch.tensor(roots), s) \
                    / (len(roots) // group.filters)
            parts.append(s)
    return torch.stack(parts).mean(0).view(group.blocks, group.channels).mean(0) if parts else None


def _checked(layer: str, values, channels: int | None) -> torch.Tensor:
    """``values`` as float64 (filters,) on the CPU; UserError when they are not finite or not ``channels`` long."""
    s = torch.as_tensor(values).detach().double().cpu().reshape(-1)
    if channels is not None and len(s) != channels:
        raise UserError(f"{layer!r} has {len(s)} scores for its {channels} filters: these are the scores of another "
                        "model (or of this one before pruning); score this model again")
    bad = (~torch.isfinite(s)).nonzero().flatten().tolist()
    if bad:
        which = ", ".join(map(str, bad[:10])) + (f", ... ({len(bad)} in all)" if len(bad) > 10 else "")
        kinds = "/".join(sorted({str(float(v)) for v in s[bad].tolist()}))
        raise UserError(f"the scores of {layer!r} are not finite at filter{'s' if len(bad) > 1 else ''} {which} "
                        f"({kinds}): the criterion gave no usable score there (e.g. a layer whose outputs are all "
                        "zero). Score with another criterion, or exclude the layer from the plan")
    return s


def group_scores(groups, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{group root: float64 (channels,)} :func:`combined_scores` of every group with a scored member (one score per
    position of a block for a grouped group)."""
    out = {}
    for g in groups:
        combined = combined_scores(g, scores)
        if combined is not None:
            out[g.root] = combined
    return out


def lowest(combined: torch.Tensor, n: int) -> list[int]:
    """The indices of the ``n`` lowest entries of ``combined`` (ties to the lower index), sorted."""
    return sorted(torch.argsort(combined, stable=True)[:n].tolist())


def removed_filters(groups, ratios: dict[str, float], scores: dict[str, torch.Tensor], *,
                    round_to: int = ROUND_TO) -> dict[str, list[int]]:
    """{conv: the filter indices pruning by ``ratios`` ({root: ratio}), kept counts rounded to a multiple of
    ``round_to`` (:func:`prunekit.pruning.ratios.kept_channels`), removes} for every member of every group that loses
    filters (the same positions of every block of a grouped group; every copy of a removed channel in a spread
    member); UserError for such a group with no scored member."""
    out: dict[str, list[int]] = {}
    for g in groups:
        n = g.channels - kept_channels(g.channels, ratios.get(g.root, 0.0), round_to)
        if n <= 0:
            continue
        combined = combined_scores(g, scores)
        if combined is None:
            raise UserError(f"no scores for any layer of the group rooted at {g.root!r}: score the model again")
        out.update(g.member_filters(g.filters_of(lowest(combined, n))))
    return out
