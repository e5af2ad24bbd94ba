"""Shared fixtures. Tests that need the CIFAR-10 JPEG copy skip, saying why, when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from prunekit.data import JPEG_ARCHIVE, ArraySet

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
# app.py turns a page's exception into a message; under test it re-raises, so AppTest's `at.exception` sees it
os.environ["PRUNEKIT_APP_RAISE"] = "1"


def cifar_root() -> Path | None:
    """The folder holding cifar10-jpeg.tar.gz: $PRUNEKIT_DATA, else ../shared/data beside the checkout."""
    for candidate in (os.environ.get("PRUNEKIT_DATA"), SHARED_DATA):
        if candidate and (Path(candidate) / JPEG_ARCHIVE).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def cifar_data_root() -> Path:
    root = cifar_root()
    if root is None:
        pytest.skip(f"needs the CIFAR-10 JPEG copy ({JPEG_ARCHIVE}) in $PRUNEKIT_DATA or {SHARED_DATA}; "
                    "it is absent on this machine")
    return root


@pytest.fixture
def one_thread():
    """torch on one thread for the test (steady timings beside other work, and equal results), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_arrays(n: int = 64, classes: int = 10, seed: int = 0) -> ArraySet:
    """A random 32x32 uint8 data set with labels 0..classes-1 in turn."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ArraySet("tiny", images, labels, [str(i) for i in range(classes)], (0.5,) * 3, (0.25,) * 3)
