"""The product speaks of the product: no tracked file's name or text refers to a work item by its number (the
word for a work item followed by a number, in any case, with or without a space, "#", "_" or "-" between): a
reader does not know what that item was. The word alone (a tool's name, "an ... with the data") is not such a
reference. This file builds its examples from parts, so that it passes its own check."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ITEM = "iss" + "ue"  # the word, in parts: this file's own text passes the check
# the word (or its plural) as a word start (not "tissue"), then a number after optional spaces, "_", "#" or "-"
PROCESS_WORD = re.compile(rf"(?<![a-z]){ITEM}s?[ _#-]*[0-9]+", re.IGNORECASE)


def _tracked() -> list[str]:
    """Every tracked path, relative to the repository root (empty outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [p for p in out.decode().split("\0") if p]


def _offences(path: str) -> list[str]:
    """'path' if the name holds a process word, and 'path:line: text' for each line of text that does (binary files
    and files missing from the working tree: their name only)."""
    found = [path] if PROCESS_WORD.search(path) else []
    file = ROOT / path
    if not file.is_file():
        return found
    data = file.read_bytes()
    if b"\0" in data[:8192]:
        return found
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if PROCESS_WORD.search(line):
            found.append(f"{path}:{n}: {line.strip()[:120]}")
    return found


def test_no_process_words_in_tracked_files():
    paths = _tracked()
    if not paths:
        pytest.skip("not a git checkout")
    offences = [o for p in paths for o in _offences(p)]
    assert not offences, "process words (say what is meant instead):\n" + "\n".join(offences)


@pytest.mark.parametrize("text", [f"{ITEM} 12", f"{ITEM.title()} #3", f"{ITEM.upper()}13",
                                  f"experiments/{ITEM}16_x.py", f"see {ITEM}-7", f"({ITEM}s 4 and 16)"])
def test_pattern_catches_process_words(text):
    assert PROCESS_WORD.search(text)


@pytest.mark.parametrize("text", [f"t{ITEM} 3", f"{ITEM}s", f"the {ITEM}s tool lists 12 items",
                                  f"an {ITEM} with the data"])
def test_pattern_leaves_other_words(text):
    assert not PROCESS_WORD.search(text)
