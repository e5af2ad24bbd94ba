"""Pruning plans: per-group ratios, the criterion that picks the filters, exclusions; JSON on disk.

>>> plan = Plan("resnet20", {"layer1.0.conv1": 0.5}, criterion="fpgm")
>>> Plan("resnet20", {"layer1.0.conv1": 0.3}, round_to=8)   # kept filters rounded to a multiple of 8 (11 -> 8)
>>> plan.check(structure(model, (3, 32, 32)))     # UserError if it does not fit this model
>>> Plan.load(plan.save("plan.json"))

A plan maps coupled groups (named by their root conv, see :mod:`prunekit.pruning.prune`) to ratios under the one rule of
:mod:`prunekit.pruning.ratios`. Presets that make plans are in :mod:`prunekit.pruning.presets`; their cost is
:func:`prunekit.pruning.structure.estimate`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from prunekit.criteria import get_criterion
from prunekit.defaults import ROUND_TO
from prunekit.errors import UserError
from prunekit.files import write_text_atomic
from prunekit.models.zoo import model_info
from prunekit.pruning.ratios import check_ratio, check_round_to, validate_ratios
from prunekit.pruning.structure import Structure, signature

__all__ = ["Plan", "PLAN_FORMAT", "excluded_roots"]

PLAN_FORMAT = "prunekit-plan/1"


@dataclass
class Plan:
    """What to prune: ``ratios`` {group root: ratio in [0, 0.95]} (see :func:`prunekit.pruning.prune.coupled_groups`;
    groups not named keep every filter), the criterion (registered name and parameters) whose scores pick the
    filters inside each group, the convs the user ``excluded`` (their whole group keeps its filters), the
    model's ``arch`` and structure ``signature`` (a plan refuses another model), how it was made (``preset``: its
    name and arguments), and ``round_to``: every pruned group's kept filters rounded to a multiple of it
    (:func:`prunekit.pruning.ratios.kept_channels`; 1, the default and what a plan file without the entry means: none)."""

    arch: str
    ratios: dict[str, float]
    criterion: str = "l1"
    criterion_params: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    signature: str = ""
    preset: dict[str, Any] = field(default_factory=dict)
    round_to: int = ROUND_TO

    def __post_init__(self):
        if not isinstance(self.arch, str) or not self.arch:
            raise UserError(f"a plan needs the model's architecture name, got {self.arch!r}")
        if not isinstance(self.ratios, dict):
            raise UserError(f"a plan's ratios must map group roots to numbers, got {type(self.ratios).__name__}")
        self.ratios = {k: check_ratio(k, v) for k, v in self.ratios.items()}
        self.excluded = list(self.excluded)
        self.round_to = check_round_to(self.round_to)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """The plan a JSON object holds (what :meth:`to_dict` wrote); UserError naming the entry that is missing,
        unknown or of the wrong type, a ratio that breaks the rule, an unknown model or criterion, or criterion
        parameters that criterion refuses."""
        if not isinstance(d, dict):
            raise UserError(f"not a prunekit plan: it holds a JSON {_kind(d)}, not an object")
        if d.get("format") != PLAN_FORMAT:
            raise UserError(f"not a prunekit plan: expected a JSON object with format {PLAN_FORMAT!r}, got format "
                            f"{d.get('format')!r}")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known and key != "format":
                raise UserError(f"unknown entry {key!r} (known: {', '.join(known)}); a plan written by hand may have "
                                "a misspelt name")
        for key in ("arch", "ratios"):
            if key not in d:
                raise UserError(f"{key!r} is missing: a plan needs the model's arch and the ratios of its groups")
        _check_entries(d)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UserError(f"a plan must be JSON: {exc}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON to ``path``, atomically (an earlier file there stays whole until replaced)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        """The plan in the JSON file ``path``; UserError starting with the file's name when it is missing, not
        text, or not a valid plan (:meth:`from_dict`)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"plan file {path} not found: write one with `python -m prunekit plan --out FILE`")
        try:
            return cls.from_json(path.read_text())
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a prunekit plan: not a text file (a plan is JSON)") from None
        except UserError as exc:
            raise type(exc)(f"{path}: {exc}") from None

    def check(self, struct: Structure, arch: str | None = None) -> None:
        """ValueError when the plan does not fit the model of ``struct`` (of architecture ``arch``, when given):
        another architecture, another structure (another model or an already pruned one), an unknown or non-root
        layer, a ratio that removes a whole group, an excluded layer that is not a conv or whose group has a
        ratio."""
        if arch is not None and arch != self.arch:
            raise UserError(f"this plan was made for {self.arch}, the model is {arch}: make a plan for {arch}")
        if self.signature and self.signature != signature(struct):
            roots = ", ".join(f"{g.root}({g.channels})" for g in struct.groups[:4])
            raise UserError(f"this plan was made for another model ({self.arch}, structure {self.signature}); "
                             f"the model given has structure {signature(struct)} (groups {roots}, ...): make a "
                             "plan for this model")
        validate_ratios(self.ratios, list(struct.groups), struct.frozen)
        for root in excluded_roots(struct, self.excluded):
            if self.ratios.get(root, 0.0) > 0:
                raise UserError(f"group {root!r} holds an excluded layer but has ratio {self.ratios[root]}")

    def unprunable(self, struct: Structure) -> dict[str, str]:
        """{layer: why its filters stay}: convs whose channels are the model's outputs, the user's exclusions
        and the layers coupled with them, and the linear layers (prunekit removes conv filters only), each named
        the classifier head or by the block it is inside."""
        out = dict(struct.frozen)
        by_root = {g.root: g for g in struct.groups}
        excluded = set(self.excluded)
        for root in excluded_roots(struct, self.excluded):
            for m in by_root[root].members:
                out[m] = "excluded by the user" if m in excluded else \
                    f"coupled with the excluded {sorted(excluded & set(by_root[root].members))[0]!r}"
        for x in struct.layers:
            if not x.conv and x.name not in struct.out_group:  # a linear member (ConvNeXt's) loses outputs
                block = x.name.rpartition(".")[0] or "the model"
                where = "classifier head" if x.name == struct.head else f"inside {block}"
                out[x.name] = f"linear layer ({where}): only conv filters are pruned" + \
                    ("; its inputs shrink with the convs before it" if x.name in struct.reads else "")
        return out


def _kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null", dict: "object"}.get(type(value), "number")


def _check_entries(d: dict[str, Any]) -> None:
    """UserError for a plan entry of the wrong type, a model or criterion that is not registered, or criterion
    parameters that criterion refuses (the ratios are checked by :class:`Plan` itself)."""

    excluded, criterion = d.get("excluded", []), d.get("criterion", "l1")
    if not isinstance(excluded, list) or not all(isinstance(x, str) for x in excluded):
        raise UserError(f"'excluded' must be a list of conv names, got {excluded!r}")
    for key in ("criterion_params", "preset"):
        if not isinstance(d.get(key, {}), dict):
            raise UserError(f"{key!r} must be an object, got {d[key]!r}")
    if not isinstance(d.get("signature", ""), str):
        raise UserError(f"'signature' must be a string, got {d['signature']!r}")
    if not isinstance(criterion, str) or not criterion:
        raise UserError(f"'criterion' must be a criterion's name, got {criterion!r}")
    if isinstance(d["arch"], str) and d["arch"]:
        model_info(d["arch"])  # a registered name or a source's (torchvision:, timm:, factory:): else its error
    get_criterion(criterion, **d.get("criterion_params", {}))  # an unknown name or a bad parameter: its error


def excluded_roots(struct: Structure, exclude) -> set[str]:
    """The roots of the groups holding the convs in ``exclude``; UserError for a name that is not a conv."""
    member_of = dict(struct.out_group)  # members, spread members (GhostNet) too
    convs = {x.name for x in struct.layers if x.conv}
    roots = set()
    for name in exclude:
        if name not in convs:
            raise UserError(f"cannot exclude {name!r}: not a conv of this model")
        if name in member_of:
            roots.add(member_of[name])
    return roots
