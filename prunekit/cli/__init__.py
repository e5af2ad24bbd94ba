"""Command line: ``python -m prunekit
train|finetune|models|datasets|criteria|presets|score|plan|prune|sensitivity|runs|export|jobs|worker``.

The pruning path from the shell: ``score`` (a CSV of per-filter scores) -> ``plan`` (a preset, to a target
fraction of FLOPs or params; a JSON plan) -> ``prune`` (a run directory under the runs root) -> ``finetune``
(the run's pruned model trained further, recorded in the run) -> ``runs``.

Every command prints its result as one JSON line on stdout. A :class:`~prunekit.errors.PrunekitError` (a bad
name, value or file, missing data) prints ``error: <message>`` and exits 2; anything else is a bug and shows its
traceback (exit 1).
"""
from __future__ import annotations

import argparse
import sys

from prunekit.cli import catalog, pruning, training
from prunekit.cli.common import enable_factories
from prunekit.errors import PrunekitError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prunekit", description="Filter saliency and pruning for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (training, pruning, catalog):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        enable_factories(args)  # the user's own model code: imported here, at start, only when named
        return args.func(args)
    except PrunekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
