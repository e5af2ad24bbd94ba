"""The package's shape: imports run one way (no cycle between modules, function-level imports included, and none
between subpackages), an import inside a function only for a documented reason, and no function over 60 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "prunekit"
MAX_FUNCTION_LINES = 60
# An import inside a function is allowed for these reasons only, each stated in a comment on the import's line or
# the line above it: "optional dependency" (a package a user may not have, or a heavy one only this path needs) or
# "start-up time" (keeps `import prunekit` and the command line fast).
REASONS = ("optional dependency", "start-up time")
# The subpackages' order: a module may import from its own layer and the layers before it, never after.
LAYERS = [("defaults", "errors", "registry", "params", "files", "distributed", "version", "lru", "text"), ("data",),
          ("models",), ("criteria",), ("pruning", "analysis", "training"), ("runs",), ("cli", "__main__", "__init__")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported prunekit module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("prunekit"):
                assert child.level == 0, f"{path}:{child.lineno}: a relative import (write prunekit.… in full)"
                for alias in child.names:  # "from prunekit.runs import jobs" imports the module prunekit.runs.jobs
                    sub = f"{child.module}.{alias.name}"
                    found.append((sub if _is_module(sub) else child.module, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.startswith("prunekit"))
            visit(child, inner)

    visit(tree, False)
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    """module -> the prunekit modules it imports (a package's __init__ counts as the package)."""
    return {module_name(p): {m for m, _, _ in imports(p) if m != module_name(p)} for p in PACKAGE.rglob("*.py")}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_find_cycle_finds_a_hand_made_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    edges = graph()
    # prunekit/__init__.py re-exports the public API; nothing inside the package imports it
    importers = sorted(m for m, targets in edges.items() if "prunekit" in targets and m != "prunekit")
    assert not importers, f"modules importing the top-level package (a cycle through the public API): {importers}"
    edges = {m: {t for t in targets if t != "prunekit"} for m, targets in edges.items() if m != "prunekit"}
    # a subpackage's __init__ that re-exports its modules points down into them; a module reaching the __init__
    # of its own subpackage would close a loop
    assert (cycle := find_cycle(edges)) is None, "import cycle: " + " -> ".join(cycle)


def layer_of(module: str) -> int:
    head = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module}: its folder is in no layer of tests/test_layout.py's LAYERS")


def test_subpackages_import_one_way():
    wrong = [f"{m} imports {t}" for m, targets in graph().items() if m != "prunekit"
             for t in targets if t != "prunekit" and layer_of(t) > layer_of(m)]
    assert not wrong, "imports against the layers' order (" + " < ".join("/".join(x) for x in LAYERS) + "):\n" + \
        "\n".join(sorted(wrong))


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every import statement inside a function of ``path``, prunekit's or another package's."""
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    out.append((node.lineno, lines[node.lineno - 1]))
    return sorted(set(out))


def _reason(path: Path, line: int) -> bool:
    lines = path.read_text().splitlines()
    near = " ".join(lines[max(0, line - 2):line]).lower()
    return any(r in near for r in REASONS)


def test_function_level_imports_say_why():
    undocumented = [f"{p.relative_to(ROOT)}:{line}: {text.strip()}" for p in sorted(PACKAGE.rglob("*.py"))
                    for line, text in function_level_imports(p) if not _reason(p, line)]
    assert not undocumented, ("imports inside a function without a reason (" + " / ".join(REASONS) +
                              ") in a comment on or above them:\n" + "\n".join(undocumented))


def test_the_reason_check_can_fail(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import json\n\n\ndef g():\n    # optional dependency\n    import onnx\n")
    assert [line for line, _ in function_level_imports(f) if not _reason(f, line)] == [2]


@pytest.mark.parametrize("folder", ["prunekit", "pages", "benchmarks", "experiments"])
def test_no_function_over_60_lines(folder):
    long = []
    for p in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
