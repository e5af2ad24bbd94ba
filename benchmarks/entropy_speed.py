"""Benchmark: every data-driven criterion over all conv layers, one pass each, as a ratio to a plain forward pass.

For ResNet-56 and VGG-16-BN, over probe A of 640 images (5 x 128; the CIFAR-10 copy when it is found, else
random images, which time the same) and a disjoint probe B of as many (``prunekit.analysis.reliability.split_probes``),
in one run: a plain forward pass over A; SFM entropy with each estimator (pooled, the default; gap; spatial);
the other data-driven criteria (taylor, hrank, chip, grad_x_activation; mapex over a box probe of as many
images, against a forward over that probe, for a model that takes its 64x64 canvases; linear_ensembles with 2
masks, which reads the probe once per mask);
and the default SFM entropy's scores on A and B plus their agreement (``prunekit.reliability.reliability``,
uncached), what the dashboard's reliability costs, against the one forward over A. Why pooled costs what it does:
the same streamed pass that only reads the maps at SFM's sites (``read``: hooks, the activation applied) and that
also takes each batch's per-filter range (``read+range``: what pooled does besides counting), the map values one
pass counts, and torch.bincount's speed on one core over the cell indices of the largest map batch (as pooled
counts them): ``floor_over_forward`` is read+range plus that counting spread
over every torch thread, the least any exact per-value counting costs on this CPU. Each is timed ``--repeat``
times, round-robin (a, b, c, a, b, c...), and the median taken (chip, ~50 forwards of linear algebra, once);
the load average is recorded before and after.
Target: SFM entropy at most 1.3x the forward pass, per estimator.

    python benchmarks/entropy_speed.py [--n 640] [--repeat 3] [--threads T]
        [--out benchmarks/results/entropy_speed.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import RESULTS, write_result

from prunekit.criteria import get_criterion
from prunekit.criteria.histograms import cell_indices
from prunekit.criteria.streaming import stream
from prunekit.data import ArraySet, DataNotFoundError, load_arrays, normalization
from prunekit.defaults import PROBE
from prunekit.models.layers import conv_layers
from prunekit.models.metrics import best_device
from prunekit.models.zoo import build_model
from prunekit.criteria.probe import Probe, make_probe
from prunekit.analysis.reliability import reliability, split_probes

TARGET = 1.3
ESTIMATORS = ("pooled", "gap", "spatial")
OTHERS = {"taylor": {}, "hrank": {}, "chip": {}, "grad_x_activation": {},
          "linear_ensembles": {"samples": 2, "joint": True, "budget_s": 1e9}}
ONCE = {"chip"}  # its eigen-decompositions take ~50 forwards: timed in the first round only


def _probes(n: int) -> tuple[Probe, Probe, Probe | None, str]:
    """Probes A and B (disjoint), a box probe of n images for mapex (None without the data), and their source."""
    try:
        data, source = load_arrays("cifar10", "train", download=False), "cifar10 (JPEG copy)"
        boxes = make_probe("cifar10", n, boxes=True)
    except DataNotFoundError:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (2 * n, 3, 32, 32), generator=g, dtype=torch.uint8)
        mean, std = normalization("cifar10")
        data = ArraySet("random", images, torch.zeros(2 * n, dtype=torch.long), ["0"], mean, std)
        source, boxes = "random images", None
    a, b = split_probes(data, n, batch_size=PROBE.batch_size)
    return a, b, boxes, source


def _interleaved_medians(fns: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each function, timed round-robin so that a change in the machine's load during the run
    affects every one of them alike; those in ``ONCE`` only in the first round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeat):
        for key, fn in fns.items():
            if r and key in ONCE:
                continue
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _forward(model, probe: Probe, device) -> None:
    with torch.no_grad():
        for batch in probe.batches(device):
            model(batch.x)


def _accepts(model, probe: Probe, device) -> bool:
    """Whether ``model`` takes the images of ``probe`` (a fixed-size classifier refuses 64x64 canvases)."""
    try:
        with torch.no_grad():
            model(next(iter(probe.batches(device))).x[:1])
        return True
    except RuntimeError:
        return False


def _sfm_pass(model, probe: Probe, fn) -> None:
    """One streamed pass calling ``fn(fmap)`` on every conv's map (B, C, H, W), read at SFM's sites."""
    stream(model, conv_layers(model), probe, lambda layer, fmap, batch: fn(fmap), lambda: None,
           get_criterion("sfm_entropy").reads)


def _read(model, probe: Probe, with_range: bool):
    """The pass that only reads the maps; with_range: each batch's per-filter min and max too (as pooled takes
    them)."""
    def ranges(fmap):
        return fmap.amin((2, 3)).amin(0), fmap.amax((2, 3)).amax(0)

    return lambda: _sfm_pass(model, probe, ranges if with_range else lambda fmap: None)


def _values(model, probe: Probe) -> tuple[int, torch.Tensor]:
    """(map values one pooled pass counts, a copy of the largest map batch (B, C, H, W) it reads)."""
    sizes, largest = [], []

    def fn(fmap):
        sizes.append(fmap.numel())
        if fmap.numel() == max(sizes):
            largest[:] = [fmap.clone()]

    _sfm_pass(model, probe, fn)
    return sum(sizes), largest[0]


def _bincount_ns(fmap: torch.Tensor, repeat: int) -> float:
    """torch.bincount's median ns per value on one thread over the cell indices pooled counts for ``fmap``
    (:func:`prunekit.criteria.histograms.cell_indices`, 32 bins: a ReLU's runs of zeros included)."""
    idx, n, lanes, _, _ = cell_indices(fmap, get_criterion("sfm_entropy").config["bins"])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.bincount(idx, minlength=lanes * n)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(idx) * 1e9


def _timed(model, a: Probe, b: Probe, boxes: Probe | None, device) -> dict:
    """The functions timed for one model, by name."""
    fns = {"forward": lambda: _forward(model, a, device), "sfm_entropy/read": _read(model, a, False),
           "sfm_entropy/read+range": _read(model, a, True)}
    for est in ESTIMATORS:
        fns[f"sfm_entropy/{est}"] = lambda e=est: get_criterion("sfm_entropy", estimator=e).score(model, probe=a)
    for name, params in OTHERS.items():
        fns[name] = lambda n=name, p=params: get_criterion(n, **p).score(model, probe=a)
    fns["sfm_entropy+reliability"] = lambda: reliability(model, "sfm_entropy", a, b, cache=False)
    if boxes is not None and _accepts(model, boxes, device):  # VGG's classifier takes 32x32 images only
        fns["forward_boxes"] = lambda: _forward(model, boxes, device)
        fns["mapex"] = lambda: get_criterion("mapex").score(model, probe=boxes)
    return fns


def _row(t: dict[str, float], layers: int, values: int, bincount_ns: float) -> dict:
    ratio = {k: round(v / t["forward"], 3) for k, v in t.items() if not k.startswith("forward")}
    if "mapex" in t:
        ratio["mapex"] = round(t["mapex"] / t["forward_boxes"], 3)  # against a forward over its own box probe
    counting = t["sfm_entropy/pooled"] - t["sfm_entropy/read+range"]
    floor = t["sfm_entropy/read+range"] + values * bincount_ns * 1e-9 / torch.get_num_threads()
    return {
        "layers": layers,
        "seconds": {k: round(v, 4) for k, v in t.items()},
        "over_forward": ratio,
        "meets_target": {e: ratio[f"sfm_entropy/{e}"] <= TARGET for e in ESTIMATORS},
        "pooled_why": {
            "values_counted": values,
            "counting_ns_per_value": round(counting / values * 1e9, 3),
            "target_leaves_ns_per_value": round((TARGET * t["forward"] - t["sfm_entropy/read+range"]) / values * 1e9,
                                                3),
            "bincount_ns_per_value_one_thread": round(bincount_ns, 3),
            "floor_over_forward": round(floor / t["forward"], 3),
        },
    }


def run(n: int, repeat: int) -> dict:
    device = best_device()
    a, b, boxes, source = _probes(n)
    load_before = os.getloadavg()
    rows = {}
    for name in ("resnet56", "vgg16_bn"):
        model = build_model(name).to(device).eval()
        _forward(model, a, device)  # warm-up
        values, largest = _values(model, a)
        rows[name] = _row(_interleaved_medians(_timed(model, a, b, boxes, device), repeat), len(conv_layers(model)),
                          values, _bincount_ns(largest, 5))
        print(name, rows[name]["over_forward"], rows[name]["pooled_why"], flush=True)
    return {
        "benchmark": "entropy_speed",
        "target_sfm_entropy_over_forward": TARGET,
        "probe_images": n,
        "probe_source": source,
        "passes": "one pass over the probe per criterion (linear_ensembles: one per mask, 2 masks here); "
                  "sfm_entropy+reliability: one pass over A and one over the disjoint B, against one forward over A",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "repeat": repeat,
        "timed_once": sorted(ONCE),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "results": rows,
    }


def probe_cli(run, name: str, repeat: int, doc: str) -> None:
    """The command line of a probe benchmark: --n probe images, --repeat, --threads, --out (default
    benchmarks/results/``name``.json); writes ``run(n, repeat)``'s result there."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n", type=int, default=PROBE.n)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default=str(RESULTS / f"{name}.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    write_result(run(args.n, args.repeat), args.out)


def main() -> None:
    probe_cli(run, "entropy_speed", 3, __doc__)


if __name__ == "__main__":
    main()
