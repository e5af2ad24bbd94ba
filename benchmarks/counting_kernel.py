"""Benchmark: would a fused counting kernel bring SFM's pooled entropy to its 1.3x target? Measured per option.

The default SFM entropy ("pooled") counts every value of every conv's map into fine cells per batch
(:mod:`prunekit.criteria.histograms`): today the batch's per-filter range (two torch reductions), one float32
temporary of the batch's size and four passes over it (shift, scale, truncate to int32 in place, add the counter
offsets), then torch.bincount on worker threads. Each option below counts the same cells, int32 (C, cells + 1) per
batch, with the same float32 arithmetic, in fewer passes:

- ``today``: :meth:`prunekit.criteria.histograms.PooledCounts.add` as it is.
- ``numba``: one ``numba.njit(parallel=True)`` loop over the filters: per filter its range, then cell index and
  count in one pass into 4 copies of the counters (as ``LANES``); needs the numba package, compiled at first use.
- ``torch_compile_cells``: the range by torch; the cell indices (shift, scale, truncate, offsets) as one
  ``torch.compile`` kernel per map shape, counted by today's :func:`~prunekit.criteria.histograms.count_indices`.
- ``torch_compile_graph``: the same with torch.bincount inside the compiled graph (one counting thread).
- ``cpp_inline``: a C++ op built by ``torch.utils.cpp_extension.load_inline`` (g++, the Python headers, ninja):
  as numba's loop, the filters spread over torch's threads by ``at::parallel_for``.

A kernel that meets a value outside [0, cells] (NaN, an infinite scale) counts nothing and today's code counts that
batch instead (which refuses it, as before). For ResNet-56 and VGG-16-BN over the probe of
``benchmarks/entropy_speed.py`` (640 images, 5 x 128; its helpers imported), in one run: a plain forward pass, the
pass that only reads the maps (``read``) and that also takes their range (``read+range``), and the whole SFM
entropy with each option patched into ``PooledCounts.add``, timed ``--repeat`` times round-robin, the median
taken, as ratios to the forward. Per option: whether its per-batch counts equal today's exactly over every map of
the probe and over edge maps (ReLU zeros, a constant filter, values at lo and hi, huge and tiny ranges, signed
zeros, an infinite scale, NaN; lo and hi compared by torch.equal, for which -0.0 == 0.0), whether the final scores
are bit-identical, and its build / compile cost (first pass over the probe minus the median one).
Each timing also records process CPU seconds (``over_forward_cpu``): the work done, less inflated than wall time
by waiting on a loaded machine. The machine (cpu_name), torch threads and the load average before and after are
recorded.
Target: the pooled SFM entropy at most 1.3x the forward pass on both models. ``decision`` gives, per option, its
ratios, whether it meets the target on both models, whether it is exact, and what it needs to install; its verdict
says which met the rule (<= 1.3x on both, identical counts) and that the run cannot tell where the machine had
more runnable threads than CPUs or an option timed below the read-only pass (less work: noise). The script adopts
nothing: an option goes into the product only by hand, when it also installs with ``make app`` / ``make test``.

    python benchmarks/counting_kernel.py [--n 640] [--repeat 5] [--threads T]
        [--out benchmarks/results/counting_kernel.json]
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch
from common import cpu_name, load_average
from entropy_speed import TARGET, _forward, _probes, _read, _sfm_pass, probe_cli

from prunekit.criteria import get_criterion
from prunekit.criteria.histograms import (LANES, MAX_COUNTERS, MAX_LANE_COUNTERS, SUB, PooledCounts, _offsets,
                                          count_indices)
from prunekit.models.layers import conv_layers
from prunekit.models.metrics import best_device
from prunekit.models.zoo import build_model

OPTIONS = ("today", "numba", "torch_compile_cells", "torch_compile_graph", "cpp_inline")
INSTALL = {  # what each option needs on a fresh machine beyond `make app` / `make test` today
    "today": "nothing",
    "numba": "the numba wheel from the package registry (a line in requirements.txt); pins numpy < 2.6 today",
    "torch_compile_cells": "nothing to install (torch); a C++ compiler at run time, and a compile per map shape",
    "torch_compile_graph": "nothing to install (torch); a C++ compiler at run time, and a compile per map shape",
    "cpp_inline": "g++ and the Python headers (on the machine), ninja (apt here, not in requirements.txt: the "
                  "PyPI 'ninja' wheel would be needed), a build of the op at first use",
}
CPP_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

// per filter c of x float32 (B, C, HW): lo, hi (C,) its range, and counts int32 (C, cells + 1): how many values
// fall in cell trunc((x - lo) * scale), scale = cells / (hi - lo) (0 for a constant filter), float32 arithmetic as
// torch does it; counts empty when a value is NaN or falls outside [0, cells]
std::vector<torch::Tensor> pooled_counts(torch::Tensor x, int64_t cells) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous() && x.dim() == 3, "x: float32 (B, C, HW)");
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2), n = cells + 1, L = 4, V = 16, CHUNK = 256;
  auto out = torch::zeros({C, n}, torch::kInt32);
  auto lo = torch::empty({C}, torch::kFloat32), hi = torch::empty({C}, torch::kFloat32);
  const float* xp = x.data_ptr<float>();
  float *lp = lo.data_ptr<float>(), *hp = hi.data_ptr<float>();
  int32_t* op = out.data_ptr<int32_t>();
  const float top = static_cast<float>(cells);
  std::atomic<bool> bad{false};
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    std::vector<int32_t> lanes(L * n), idx(CHUNK);
    for (int64_t c = c0; c < c1; ++c) {
      float mn[V], mx[V];  // V running minima / maxima: a loop the compiler vectorizes
      std::fill(mn, mn + V, INFINITY);
      std::fill(mx, mx + V, -INFINITY);
      for (int64_t b = 0; b < B; ++b) {
        const float* p = xp + (b * C + c) * HW;
        for (int64_t j = 0; j < HW; ++j) {
          const int64_t k = j % V;
          mn[k] = p[j] < mn[k] ? p[j] : mn[k];
          mx[k] = p[j] > mx[k] ? p[j] : mx[k];
        }
      }
      const float l = *std::min_element(mn, mn + V), h = *std::max_element(mx, mx + V);
      const float span = h - l, s = span > 0.f ? top / span : 0.f;
      lp[c] = l;
      hp[c] = h;
      std::fill(lanes.begin(), lanes.end(), 0);
      int ok = 1;
      for (int64_t b = 0; b < B; ++b) {
        const float* p = xp + (b * C + c) * HW;
        for (int64_t j0 = 0; j0 < HW; j0 += CHUNK) {
          const int64_t m = std::min(CHUNK, HW - j0);
          for (int64_t j = 0; j < m; ++j) {
            const float v = (p[j0 + j] - l) * s;
            const int in = (v >= 0.f) & (v <= top);
            ok &= in;
            idx[j] = static_cast<int32_t>(in ? v : 0.f);
          }
          int64_t j = 0;
          for (; j + L <= m; j += L)
            for (int64_t k = 0; k < L; ++k) ++lanes[k * n + idx[j + k]];
          for (; j < m; ++j) ++lanes[idx[j]];
        }
      }
      if (!ok) bad = true;
      for (int64_t k = 0; k < n; ++k) op[c * n + k] = lanes[k] + lanes[n + k] + lanes[2 * n + k] + lanes[3 * n + k];
    }
  });
  if (bad) out = torch::empty({0}, torch::kInt32);
  return {out, lo, hi};
}
"""


def _range_scale(fmap: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """lo, hi (C,), scale float32 (C,) and cells of ``fmap`` (B, C, H, W), by the torch ops of
    :func:`prunekit.criteria.histograms.cell_indices` (the same values, bit for bit)."""
    c = fmap.shape[1]
    cells = max(1, min(SUB, MAX_COUNTERS // (c * bins))) * bins
    lo = fmap.amin((2, 3)).amin(0)
    hi = fmap.amax((2, 3)).amax(0)
    span = (hi - lo).float()
    scale = torch.where(span > 0, cells / span, torch.zeros_like(span))
    return lo, hi, scale, cells


def _fused(kernel):
    """count(fmap, bins) -> (int32 (C, cells + 1), lo, hi (C,)), or None where ``kernel(x (B, C, HW) float32,
    cells)`` -> (counts, lo, hi) cannot count ``fmap`` (B, C, H, W): another dtype or device, or a value outside
    [0, cells] (the kernel returns None). Its lo and hi are torch's amin / amax (equal, a zero's sign aside)."""
    def count(fmap, bins):
        if fmap.dtype != torch.float32 or fmap.device.type != "cpu":
            return None
        c = fmap.shape[1]
        cells = max(1, min(SUB, MAX_COUNTERS // (c * bins))) * bins  # as cell_indices
        return kernel(fmap.contiguous().view(fmap.shape[0], c, -1), cells)
    return count


def _numba_kernel(numba):
    """The numba loop: per filter (in parallel) its range, then the cell of each value, counted into 4 copies of
    the counters; float32 arithmetic as torch's."""
    @numba.njit(parallel=True, boundscheck=False)
    def counts_loop(x, cells, out, lo, hi, bad):
        nb, nc, hw = x.shape
        n, top, v = cells + 1, np.float32(cells), 16
        for c in numba.prange(nc):
            mn, mx = np.full(v, np.inf, np.float32), np.full(v, -np.inf, np.float32)
            for b in range(nb):
                for j in range(hw):
                    mn[j % v] = x[b, c, j] if x[b, c, j] < mn[j % v] else mn[j % v]
                    mx[j % v] = x[b, c, j] if x[b, c, j] > mx[j % v] else mx[j % v]
            lo[c], hi[c] = mn.min(), mx.max()
            span = hi[c] - lo[c]
            sc = top / span if span > 0 else np.float32(0)
            lanes, idx, ok = np.zeros((4, n), np.int32), np.empty(hw, np.uint32), True
            for b in range(nb):
                for j in range(hw):
                    t = (x[b, c, j] - lo[c]) * sc
                    inside = (t >= 0) & (t <= top)
                    ok &= inside
                    idx[j] = np.uint32(t) if inside else np.uint32(0)
                for j in range(hw):
                    lanes[j & 3, idx[j]] += 1
            bad[c] = not ok
            for k in range(n):
                out[c, k] = lanes[0, k] + lanes[1, k] + lanes[2, k] + lanes[3, k]

    def kernel(x, cells):
        c = x.shape[1]
        out, lo, hi = np.zeros((c, cells + 1), np.int32), np.empty(c, np.float32), np.empty(c, np.float32)
        bad = np.zeros(c, np.bool_)
        numba.set_num_threads(torch.get_num_threads())
        counts_loop(x.numpy(), cells, out, lo, hi, bad)
        return None if bad.any() else (torch.from_numpy(out), torch.from_numpy(lo), torch.from_numpy(hi))
    return kernel


def _numba_option() -> tuple:
    """(count or None, info): numba's version and first compile, or why it is unavailable."""
    try:
        import numba  # optional dependency: measured here, not a dependency of prunekit
    except ImportError as e:
        return None, {"available": False, "why": f"{type(e).__name__}: {e}"}
    count = _fused(_numba_kernel(numba))
    t0 = time.perf_counter()
    try:
        count(torch.rand(2, 3, 4, 4), 32)
    except Exception as e:  # numba's typing and lowering errors have no common base class
        return None, {"available": False, "version": numba.__version__, "why": f"{type(e).__name__}: {e}"[:500]}
    return count, {"available": True, "version": numba.__version__, "threading_layer": numba.threading_layer(),
                   "build_s": round(time.perf_counter() - t0, 2)}


def _cells_graph(fmap, lo, scale, offsets):
    """int32 (B*C*H*W,): today's cell indices of ``fmap`` (B, C, H, W) with their counter offsets (1, C, H, W)."""
    t = (fmap.float() - lo.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)
    return (t.to(torch.int32) + offsets).reshape(-1)


def _bincount_graph(fmap, lo, scale, offsets, n: int):
    """int64 (n,): the counts of :func:`_cells_graph`'s indices, torch.bincount in the same graph."""
    return torch.bincount(_cells_graph(fmap, lo, scale, offsets), minlength=n)


def _compile_option(whole: bool) -> tuple:
    """(count, info): the cell indices compiled by torch.compile (one kernel per map shape), then counted by
    count_indices; ``whole``: torch.bincount inside the compiled graph."""
    torch._dynamo.config.recompile_limit = 64  # one compiled kernel per map shape (VGG-16-BN has 5)
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # a cold compile, in a folder removed at exit
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="prunekit-inductor-")
        atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)
    graph = torch.compile(_bincount_graph if whole else _cells_graph, dynamic=False)

    def count(fmap, bins):
        if fmap.device.type != "cpu":
            return None
        lo, hi, scale, cells = _range_scale(fmap, bins)
        c, h, w = fmap.shape[1:]
        n = c * (cells + 1)
        lanes = LANES if LANES * n <= MAX_LANE_COUNTERS else 1
        args = (fmap, lo.float(), scale, _offsets(c, h, w, cells, lanes, fmap.device))
        try:
            counted = graph(*args, lanes * n) if whole else count_indices(graph(*args), lanes * n)
        except RuntimeError:  # a negative index (NaN, an infinite scale): today's code refuses it the same way
            return None
        return counted.view(lanes, n).sum(0).view(c, -1).to(torch.int32), lo, hi
    return count, {"available": True, "build_s": None,
                   "note": "compiled at each new map shape: see first_pass_extra_s (a fresh inductor cache, shared by "
                           "both compiled options)"}


def _cpp_option() -> tuple:
    """(count or None, info): the op built cold in a fresh folder (build seconds), and whether a build finds
    ninja necessary (tried again with ninja reported missing)."""
    from torch.utils import cpp_extension  # start-up time: the C++ toolchain only for this option
    info = {"ninja_on_path": shutil.which("ninja"), "ninja_python_package": bool(importlib.util.find_spec("ninja")),
            "gxx": shutil.which("g++")}
    found = cpp_extension.is_ninja_available
    cpp_extension.is_ninja_available = lambda: False
    try:
        with tempfile.TemporaryDirectory() as folder:
            cpp_extension.load_inline("prunekit_cells_noninja", CPP_SOURCE, functions=["pooled_counts"],
                                      build_directory=folder)
        info["builds_without_ninja"] = True
    except RuntimeError as e:
        info["builds_without_ninja"], info["without_ninja"] = False, str(e).splitlines()[0][:200]
    finally:
        cpp_extension.is_ninja_available = found
    folder = tempfile.mkdtemp(prefix="prunekit-cells-")  # a cold build, removed at exit
    atexit.register(shutil.rmtree, folder, True)
    t0 = time.perf_counter()
    try:
        mod = cpp_extension.load_inline("prunekit_cells", CPP_SOURCE, functions=["pooled_counts"],
                                        extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"],
                                        build_directory=folder)
    except (RuntimeError, OSError) as e:
        return None, {**info, "available": False, "why": f"{type(e).__name__}: {e}"[:500]}
    info.update(available=True, build_s=round(time.perf_counter() - t0, 2))

    def kernel(x, cells):
        counts, lo, hi = mod.pooled_counts(x, cells)
        return (counts, lo, hi) if counts.numel() else None
    return _fused(kernel), info


def _options() -> tuple[dict, dict]:
    """({option: count function, None for today's code}, {option: info}); an option that cannot be built is
    left out of the first and says why in the second."""
    counts, infos = {"today": None}, {"today": {"available": True}}
    builders = {"numba": _numba_option, "torch_compile_cells": lambda: _compile_option(False),
                "torch_compile_graph": lambda: _compile_option(True), "cpp_inline": _cpp_option}
    for name, build in builders.items():
        count, infos[name] = build()
        print(name, infos[name], flush=True)
        if count is not None:
            counts[name] = count
    return counts, infos


@contextlib.contextmanager
def _patched(count):
    """PooledCounts.add counting with ``count`` (today's code where it returns None); as it is for None."""
    today = PooledCounts.add

    def add(self, fmap):
        got = count(fmap, self.bins)
        if got is None:
            return today(self, fmap)
        self.parts.append(got)

    if count is not None:
        PooledCounts.add = add
    try:
        yield
    finally:
        PooledCounts.add = today


def _edge_maps() -> list[torch.Tensor]:
    """Maps (B, C, H, W) at the edges: ReLU zeros, a constant filter, values only at lo and hi, negative values,
    huge and tiny ranges, -0.0 beside 0.0 at the bottom of the range, a range so small its scale is infinite, a
    NaN (the last two: today's code refuses them)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 7, 5, generator=g)
    relu, const, two = x.relu(), x.clone(), x.clone()
    const[:, 3] = 1.5
    two[:, 2] = torch.where(two[:, 2] > 0, 3.0, -1.0)
    huge, tiny, zeros = x * 1e30, 1.0 + x * 1e-6, x.relu()
    zeros[0] *= -0.0  # the range starts at zero, some zeros signed
    inf_scale = torch.zeros_like(x)
    inf_scale[0, 1, 0, 0] = 1e-40  # a denormal span: cells / span overflows
    nan = x.clone()
    nan[1, 0, 2, 2] = float("nan")
    return [relu, const, two, x - 5, huge, tiny, zeros, inf_scale, nan]


def _outcome(count, fmap: torch.Tensor, bins: int):
    """(counts, lo, hi) of ``fmap`` by ``count`` (today's where None), or the type of the error it raises."""
    part = PooledCounts(bins)
    try:
        with _patched(count):
            part.add(fmap)
    except RuntimeError as e:
        return type(e).__name__
    return part.parts[0]


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _identity(model, probe, counts: dict, bins: int) -> dict:
    """{option: {maps, identical, edge_maps, edge_identical, scores_identical}}: per-batch counts against today's
    over every map one pass over ``probe`` reads and the edge maps, and the final scores."""
    rows = {k: {"maps": 0, "identical": 0, "edge_maps": 0, "edge_identical": 0} for k in counts}

    def compare(fmap, kind):
        ref = _outcome(None, fmap, bins)
        for name, count in counts.items():
            rows[name][kind] += 1
            rows[name][kind.replace("maps", "identical")] += _same(ref, _outcome(count, fmap, bins))

    _sfm_pass(model, probe, lambda fmap: compare(fmap, "maps"))
    for fmap in _edge_maps():
        compare(fmap, "edge_maps")
    crit = get_criterion("sfm_entropy")
    ref = crit.score(model, probe=probe)
    for name, count in counts.items():
        with _patched(count):
            got = crit.score(model, probe=probe)
        rows[name]["scores_identical"] = all(torch.equal(ref[k], got[k]) for k in ref)
    return rows


def _medians(fns: dict, repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and process-CPU seconds of each function, timed round-robin (as entropy_speed's
    _interleaved_medians, plus the CPU time: the work done, which waiting on a loaded machine does not inflate)."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
    return ({k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()})


def _model_row(name: str, probe, counts: dict, repeat: int, device) -> dict:
    """Timings, ratios to the forward, first-pass cost and exactness of every option on one model."""
    model = build_model(name).to(device).eval()
    _forward(model, probe, device)  # warm-up
    crit = get_criterion("sfm_entropy")
    fns = {"forward": lambda: _forward(model, probe, device), "read": _read(model, probe, False),
           "read+range": _read(model, probe, True)}
    first = {}
    for option, count in counts.items():
        def score(c=count):
            with _patched(c):
                crit.score(model, probe=probe)
        t0 = time.perf_counter()
        score()  # compiles what the option compiles for this model's map shapes
        first[option], fns[option] = time.perf_counter() - t0, score
    t, cpu = _medians(fns, repeat)
    same = _identity(model, probe, counts, crit.config["bins"])
    row = {"layers": len(conv_layers(model)), "seconds": {k: round(v, 4) for k, v in t.items()},
           "over_forward": {k: round(v / t["forward"], 3) for k, v in t.items() if k != "forward"},
           "cpu_seconds": {k: round(v, 4) for k, v in cpu.items()},
           "over_forward_cpu": {k: round(v / cpu["forward"], 3) for k, v in cpu.items() if k != "forward"},
           "first_pass_s": {k: round(v, 3) for k, v in first.items()},
           "first_pass_extra_s": {k: round(v - t[k], 3) for k, v in first.items()}, "exact": same}
    print(name, row["over_forward"], row["over_forward_cpu"], flush=True)
    return row


def _decision(rows: dict, infos: dict, load: dict) -> dict:
    """Per option: its wall and CPU-time ratios, whether each meets the target on both models, whether it is exact
    everywhere, what it needs to install; the verdict, with the load the wall ratios were taken under."""
    per = {}
    for option, info in infos.items():
        if not info.get("available"):
            per[option] = {"available": False, "why": info.get("why")}
            continue
        wall = {m: r["over_forward"][option] for m, r in rows.items()}
        cpu = {m: r["over_forward_cpu"][option] for m, r in rows.items()}
        exact = all(e["identical"] == e["maps"] and e["edge_identical"] == e["edge_maps"] and e["scores_identical"]
                    for e in (r["exact"][option] for r in rows.values()))
        per[option] = {"over_forward": wall, "meets_target_both": all(v <= TARGET for v in wall.values()),
                       "over_forward_cpu": cpu, "meets_target_both_cpu": all(v <= TARGET for v in cpu.values()),
                       "bit_identical": exact, "installs": INSTALL[option]}
    fit = [k for k, v in per.items() if k != "today" and v.get("meets_target_both") and v.get("bit_identical")]
    cpu_fit = [k for k, v in per.items() if v.get("meets_target_both_cpu") and v.get("bit_identical")]
    busy = max(load["before"][0], load["after"][0]) > os.cpu_count()
    # an option faster than the pass that only reads the maps did less work than its own part of the pass: noise
    impossible = sorted({m for m, r in rows.items() for k in counts_of(r) if r["over_forward"][k] <
                         r["over_forward"]["read"]})
    verdict = (f"wall time: {fit or 'no option'} reached <= {TARGET}x on both models with bit-identical counts; CPU "
               f"time: {cpu_fit or 'no option'}. Load average {load['before'][0]} -> {load['after'][0]} on "
               f"{os.cpu_count()} CPUs" + ("; more runnable threads than CPUs: the wall ratios are not a quiet "
                                           "machine's" if busy else "")
               + (f"; on {impossible} an option timed below the read-only pass, which does less: too loaded to tell"
                  if impossible else ""))
    credible = fit and not busy and not impossible
    return {"options": per, "adopted": None, "verdict": verdict + (
        "; adopt only what also installs with make app / make test and falls back (tested)" if credible else
        "; nothing adopted: the product keeps today's code")}


def counts_of(row: dict) -> list[str]:
    """The options timed in one model's row (its over_forward keys less the reference passes)."""
    return [k for k in row["over_forward"] if k in OPTIONS]


def run(n: int, repeat: int) -> dict:
    device = best_device()
    a, _, _, source = _probes(n)
    counts, infos = _options()
    before = os.getloadavg()
    rows = {name: _model_row(name, a, counts, repeat, device) for name in ("resnet56", "vgg16_bn")}
    load = load_average(before)
    return {
        "benchmark": "counting_kernel",
        "target_sfm_entropy_over_forward": TARGET,
        "probe_images": n,
        "probe_source": source,
        "device": str(device),
        "cpu_name": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "repeat": repeat,
        "loadavg": load,
        "options": infos,
        "results": rows,
        "decision": _decision(rows, infos, load),
    }


def main() -> None:
    probe_cli(run, "counting_kernel", 5, __doc__)


if __name__ == "__main__":
    main()
