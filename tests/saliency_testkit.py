"""Shared pieces of the saliency tests: tiny models whose feature maps are known, random probe sets, and a
fixture that keeps torch on one thread for the length of one test.

Why one thread: on a 2-core machine shared with a training job, MKL's multi-threaded LAPACK (SVD and
eigendecompositions of 128 x 128 matrices and up) spins in OpenMP barriers and runs 100-1000x slower. The
fixture restores the previous thread count after each test, so nothing outside these tests changes.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunekit.data import ArraySet


@pytest.fixture(autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_arrays(n: int = 16, size: int = 32, seed: int = 0) -> ArraySet:
    """n random uint8 images (n, 3, size, size) with labels in 0..9."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ArraySet("random", images, labels, [str(i) for i in range(10)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def identity_tap(channels: int) -> nn.Sequential:
    """A 1x1 conv with identity weights and nothing after it: its feature map is exactly its input
    (B, channels, H, W), so a test can hand a criterion any feature maps it likes."""
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None])
    return nn.Sequential(conv)


class SmallNet(nn.Module):
    """conv-BN-ReLU x2 (distinct ReLU modules, not in place), a max pool, a residual block, a classifier;
    (B, 3, 16, 16) -> (B, 10). The distinct ReLUs let a reference read activations and gradients directly."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.act3 = nn.ReLU()
        self.fc = nn.Linear(8, 10)
        for bn in (self.bn1, self.bn2, self.bn3):  # non-trivial running statistics and affine parameters
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.3, 0.3)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.bn2(self.conv2(x))))
        x = self.act3(self.bn3(self.conv3(x)) + x)
        return self.fc(x.mean((2, 3)))


def probe_batches(x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split (x, y) into consecutive batches of the given sizes."""
    assert sum(sizes) == len(x)
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    return out
