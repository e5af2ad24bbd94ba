"""Every default lives in prunekit/defaults.py: a literal copy of one elsewhere in the sources fails here."""
from __future__ import annotations

import ast
from pathlib import Path

from prunekit.defaults import FALLBACK_CRITERION, MAX_RATIO, SWEEP, TARGET_BY
from prunekit.pruning.presets import BY
from prunekit.runs.sweeps import SweepSpec
from tests.conftest import REPO

SOURCES = ("prunekit", "pages", "benchmarks", "experiments")
HOME = REPO / "prunekit" / "defaults.py"
SIZES = {"batch_size", "image_size"}  # parameters whose value is a default of defaults.py (EVAL_BATCH, PROBE...)
LOADERS = {"DeviceLoader", "FolderLoader"}  # their second argument is a batch size


def _parameter_defaults(node: ast.arguments) -> list[tuple[str, ast.expr]]:
    """(name, default) of each parameter that has a default."""
    positional = node.posonlyargs + node.args
    pairs = list(zip((a.arg for a in positional[len(positional) - len(node.defaults):]), node.defaults))
    return pairs + [(a.arg, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]


def _is_int(node: ast.expr | None) -> bool:
    """An int literal other than 1 (a batch of one input is the unit latency is timed on, no tunable default)."""
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value != 1


def typed_defaults(source: str) -> list[tuple[int, str]]:
    """(line, what) of each default typed as a literal in ``source`` (Python text): the float MAX_RATIO, an int
    given to a ``batch_size`` / ``image_size`` parameter (its default or a keyword argument), an int batch size
    given to a loader."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and type(node.value) is float and node.value == MAX_RATIO:
            found.append((node.lineno, f"{MAX_RATIO} (MAX_RATIO)"))
        elif isinstance(node, ast.arguments):
            found += [(d.lineno, f"{name}={d.value}") for name, d in _parameter_defaults(node)
                      if name in SIZES and _is_int(d)]
        elif isinstance(node, ast.keyword) and node.arg in SIZES and _is_int(node.value):
            found.append((node.value.lineno, f"{node.arg}={node.value.value}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in LOADERS \
                and len(node.args) > 1 and _is_int(node.args[1]):
            found.append((node.lineno, f"{node.func.id if isinstance(node.func, ast.Name) else node.func.attr}"
                                       f"(..., {node.args[1].value})"))
    return sorted(found)


def test_no_default_is_typed_outside_defaults_py():
    files = sorted(f for folder in SOURCES for f in (REPO / folder).rglob("*.py") if f != HOME)
    assert len(files) > 50  # the scan reads the sources (not an empty glob)
    copies = [f"{f.relative_to(REPO)}:{line}: {what}" for f in files
              for line, what in typed_defaults(f.read_text(encoding="utf-8"))]
    assert not copies, "defaults typed again (read them from prunekit/defaults.py):\n" + "\n".join(copies)


def test_the_scan_catches_a_typed_default(tmp_path: Path):
    typed = tmp_path / "typed.py"
    typed.write_text("def f(x, batch_size=64, *, image_size=224):\n"
                     "    cap = 0.95\n"
                     "    return evaluate(x, DeviceLoader(x, 500, train=False), batch_size=250)\n")
    assert [line for line, _ in typed_defaults(typed.read_text())] == [1, 1, 2, 3, 3]
    named = "def f(x, batch_size=EVAL_BATCH):\n    return DeviceLoader(x, batch_size), MAX_RATIO, 0.9, 256\n"
    assert typed_defaults(named) == []


def test_sweep_defaults_make_a_sweep():
    spec = SweepSpec(criteria=(FALLBACK_CRITERION,), targets=SWEEP.targets)
    assert (spec.preset, spec.by, spec.finetune_epochs) == (SWEEP.preset, TARGET_BY, SWEEP.finetune_epochs)
    assert TARGET_BY in BY and 0 < max(SWEEP.targets) < MAX_RATIO
