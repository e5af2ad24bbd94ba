"""How fast the dashboard redraws after a slider move on the default model (target: "well under a second").

Streamlit's AppTest runs the real app (app.py, the sidebar and the page) in this process; each timed step
moves one slider and reruns the script, which is what a browser's slider move triggers on the server (the
browser's own drawing is not included). Measured for the Plan page (a group's ratio: the instant estimate and
the charts) and the Saliency page (the threshold of one layer, with the scores of l1 in memory), against the
first, cold draw of each page (model trace, scores) in the same run: the ratio shows what the caches save.

    python benchmarks/dashboard_redraw.py      # writes benchmarks/results/dashboard_redraw.json
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import RESULTS, write_result  # noqa: E402

TARGET_MS = 500.0  # "well under a second"
REPEATS = 12


def _app(page: str, **session):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page)
    t0 = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page} failed: {at.exception[0].message}")
    return at, cold


def _moves(at, key: str, values: list[float]) -> list[float]:
    times = []
    for i in range(REPEATS):
        slider = at.slider(key=key)
        slider.set_value(values[i % len(values)])
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        if at.exception:
            raise RuntimeError(at.exception[0].message)
    return times


def main() -> None:
    os.environ.setdefault("PRUNEKIT_RUNS", str(REPO / "runs"))
    results = {}
    at, cold = _app("pages/plan.py")
    times = _moves(at, "ratio::layer1.0.conv1", [0.1, 0.3, 0.5, 0.25])
    results["plan_ratio_slider"] = {"cold_s": cold, "median_ms": 1000 * statistics.median(times),
                                    "max_ms": 1000 * max(times)}
    at, cold = _app("pages/saliency.py", sal_criterion="l1", sal_layer="layer1.0.conv1")
    key = next(s.key for s in at.slider if s.key and s.key.startswith("sal_thr_"))
    lo, hi = at.slider(key=key).min, at.slider(key=key).max
    times = _moves(at, key, [lo + (hi - lo) * f for f in (0.2, 0.4, 0.6, 0.8)])
    results["saliency_threshold_slider"] = {"cold_s": cold, "median_ms": 1000 * statistics.median(times),
                                            "max_ms": 1000 * max(times)}
    for r in results.values():
        r["cold_over_redraw"] = r["cold_s"] * 1000 / r["median_ms"]
        r["met"] = r["median_ms"] < TARGET_MS
    out = write_result({"benchmark": "dashboard_redraw", "model": "bundled resnet20 (CIFAR-10)",
                        "target_ms": TARGET_MS, "repeats": REPEATS, "results": results},
                       RESULTS / "dashboard_redraw.json")
    for name, r in results.items():
        print(f"{name}: redraw median {r['median_ms']:.0f} ms (max {r['max_ms']:.0f}), cold {r['cold_s']:.1f} s, "
              f"{'met' if r['met'] else 'MISSED'} ({TARGET_MS:.0f} ms)")
    print(out)


if __name__ == "__main__":
    main()
