"""The one rule for pruning ratios, used by plans, presets, pruning, sensitivity and the dashboard's editor.

A ratio is the share of a coupled group's filters to remove: a number in [0, :data:`prunekit.defaults.MAX_RATIO`]
that keeps at least one filter. Pruning ``ratio`` of ``c`` filters keeps ``int(c * (1 - ratio))`` (as Torch-Pruning rounds), so the
largest ratio a group of ``c`` filters takes is :func:`max_ratio` (16 -> 0.9375, 64 -> 0.95).

A plan may also round every pruned group's kept count to a multiple of ``round_to`` (:func:`kept_channels` holds
the rule; :func:`check_round_to` the values it takes): CPUs run convs in blocks of 16 floats (AVX-512) or 8 (AVX2),
and ONNX Runtime's and oneDNN's blocked layouts pad a width that is no multiple of the block, so 45 channels cost
what 48 do.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from prunekit.defaults import MAX_RATIO, ROUND_TO
from prunekit.errors import PruneError, UnknownNameError, UserError

__all__ = ["RULE", "kept_channels", "check_round_to", "max_ratio", "ratio_removing", "check_ratio", "validate_ratios"]

RULE = f"a ratio is a number from 0 to {MAX_RATIO} (the share of a group's filters to remove) and keeps at least " \
       "one filter of its group"


class _Group(Protocol):
    root: str
    members: Sequence[str]
    channels: int


def kept_channels(channels: int, ratio: float, round_to: int = ROUND_TO) -> int:
    """Filters left after pruning ``ratio`` of ``channels``: k = int(channels * (1 - ratio)), as Torch-Pruning.

    With ``round_to`` > 1, a group that loses filters (k < channels) and has at least ``round_to`` of them keeps
    the width nearest k (halves up) among the multiples of ``round_to`` up to ``channels`` and ``channels`` itself,
    so at least ``round_to`` (64 filters, ratio 0.3, round_to 16: k = 44 -> 48; 16 filters, round_to 16: 16
    whatever the ratio; 24 filters, round_to 16, ratio 0.05 / 0.25: k = 22 -> 24 / 18 -> 16). A group narrower than
    ``round_to`` is not rounded (k), ratio 0 keeps every filter, and round_to 1 is k exactly. The kept count never
    grows with the ratio, so a target solved by bisection stays monotone."""
    kept = int(channels * (1 - ratio))
    if round_to <= 1 or kept >= channels or channels < round_to:
        return kept
    down = kept // round_to * round_to
    up = min(channels, down + round_to)
    return up if down == 0 or up - kept <= kept - down else down


def check_round_to(value: Any) -> int:
    """``value`` as an int >= 1 (an integral float such as 16.0 passes), or UserError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
            or value < 1:
        raise UserError(f"round_to must be a whole number >= 1 (kept channels rounded to a multiple of it; 1: no "
                        f"rounding), got {value!r}")
    return int(value)


def ratio_removing(channels: int, n: int) -> float:
    """The ratio (<= MAX_RATIO) that removes exactly ``n`` of ``channels`` filters: n/c where floats allow."""
    r = n / channels
    if channels - kept_channels(channels, r) != n:
        r = (n - 0.5) / channels  # inside the interval ((n-1)/c, n/c] that kept_channels maps to c - n
    return min(r, MAX_RATIO)


def max_ratio(channels: int) -> float:
    """The largest ratio a group of ``channels`` filters takes (at most MAX_RATIO, one filter kept):
    16 -> 0.9375 (15 removed), 64 -> 0.95 (61 removed)."""
    return ratio_removing(channels, channels - max(1, kept_channels(channels, MAX_RATIO)))


def check_ratio(name: str, ratio: Any, channels: int | None = None) -> float:
    """``ratio`` as a float, or UserError naming ``name`` and the value when it breaks the rule (with ``channels``,
    also when it would remove every filter)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) \
            or not 0 <= ratio <= MAX_RATIO:
        raise UserError(f"ratio of {name!r} must be a number in [0, {MAX_RATIO}], got {ratio!r}: {RULE}")
    if channels is not None and kept_channels(channels, ratio) < 1:
        raise UserError(f"ratio {ratio} removes every one of the {channels} filters of {name!r}; lower it to at most "
                        f"{max_ratio(channels):.4g}: {RULE}")
    return float(ratio)


def validate_ratios(ratios: dict[str, float], groups: Sequence[_Group], frozen: dict[str, str] | None = None) -> None:
    """UserError naming the first bad entry of ``ratios`` ({group root: ratio}): a layer that is no group's root
    (PruneError with the reason for a conv of ``frozen``, {conv: why it cannot be pruned}), or a ratio that breaks
    the rule (:func:`check_ratio`)."""
    by_root = {g.root: g for g in groups}
    member_of = {m: g.root for g in groups for m in (*g.members, *dict(getattr(g, "spread", ())))}
    for layer, ratio in ratios.items():
        if layer in (frozen or {}):
            raise PruneError(f"{layer!r} cannot be pruned: {frozen[layer]}; leave it out of the plan")
        if layer not in by_root:
            if layer in member_of:
                raise UserError(f"{layer!r} is coupled with {member_of[layer]!r}: give the ratio to the group's "
                                f"root {member_of[layer]!r}")
            raise UnknownNameError(f"unknown layer {layer!r}; prunable groups: {', '.join(by_root)}")
        check_ratio(layer, ratio, by_root[layer].channels)
