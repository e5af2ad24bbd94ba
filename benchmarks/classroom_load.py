"""A class on the dashboard: N viewers at once on a classroom-mode server, for S seconds; are redraws quick, does
every predicted accuracy come, can a latecomer still get in, does the server's memory stay bounded, and does no job
get queued without the presenter's key?

The real app is served in classroom mode (``streamlit run app.py -- --classroom`` on 127.0.0.1, a presenter's key
that no viewer has). The viewers speak the app's websocket protocol as browser tabs do (benchmarks/st_client.py:
page runs, widget values, the fragments' timed reruns) but draw nothing, so that on one machine the figures are the
server's and not those of 30 renderers beside it; in a classroom every viewer draws on their own machine. A warm-up
viewer first visits every page and gets one prediction (the cold start: PyTorch, the model, the scores; timed, not
counted). Then the viewers arrive together on the home page and, until S seconds have passed, each switches pages in
turn (Model & data, Saliency, Plan & prune, Compare runs; each viewer starting elsewhere in the cycle), reading each
page for THINK_S seconds on average (--think) before the next click, and, on Plan & prune, moves its own group's
ratio slider one step (1 to STEPS steps and back, never to 0) and waits for the plan's predicted accuracy. Every
wait is on a state: the run that the page switch or the move started being over (its ``script_finished``), a number
(or "failed") in the "Predicted accuracy" metric; each wait is bounded (--action-limit, --prediction-limit) and one
that runs out is an error. When S seconds are up, a new visitor opens the home page in a real browser (headless
Chromium: the page's own files and its first run) while the class is still at work. Recorded: per page, the redraw
latency p50/p95 (the request -> its run over); predictions requested and delivered; errors (exceptions drawn,
connections the server ended, failed predictions, timeouts); the new visitor's first page load; the server's peak
RSS (VmHWM from /proc) and CPU seconds; the jobs before and after; the load average before and after; each target
met or not.

    python benchmarks/classroom_load.py [--viewers 30] [--seconds 120] [--out benchmarks/results/classroom_load.json]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.app_server import cpu_seconds, peak_rss_mb, served  # noqa: E402
from benchmarks.common import RESULTS, cpu_name, load_average, write_result  # noqa: E402
from benchmarks.st_client import RunTimeout, Viewer  # noqa: E402
from prunekit.runs import jobs  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
HOME, PLAN = "Model & data", "Plan & prune"
PAGES = [HOME, "Saliency", PLAN, "Compare runs"]  # each sidebar link is named as its page's heading
SLIDER = "Plan & prune: ratio slider"  # the redraw after a slider step, recorded beside the page switches
STEPS = 6
VIEWERS_ARE = "websocket clients speaking the app's protocol (benchmarks/st_client.py), drawing nothing"
THINK_S = 5.0  # a student reads a page for a few seconds before the next click (0.5x-1.5x of it, per click)
TARGETS = {"p95_redraw_s": 2.0, "new_visitor_s": 5.0}
DATA = os.environ.get("PRUNEKIT_DATA", "/work/shared/data")
IDLE = '[data-testid=stApp][data-test-script-state="notRunning"]'


@dataclass
class Tally:
    """What every viewer saw, gathered in one place (the viewers share one event loop)."""

    redraw: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in [*PAGES, SLIDER]})
    arrival: list[float] = field(default_factory=list)
    requested: int = 0
    delivered: int = 0
    prediction_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: {"exceptions": 0, "unexpected_problem": 0,
                                                            "failed_predictions": 0, "timeouts": 0})
    details: list[str] = field(default_factory=list)

    def error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        if len(self.details) < 30:
            self.details.append(f"{kind}: {what}")


@dataclass
class Limits:
    action_s: float  # a redraw (a page switch, a slider step, a first load)
    prediction_s: float  # a predicted accuracy after its slider step
    think_s: float = 0.0  # a viewer's pause after each action, on average (uniform in 0.5x-1.5x of it)


def _timeout():
    from playwright.async_api import TimeoutError as PlaywrightTimeout  # optional dependency: benchmark only

    return PlaywrightTimeout


def _problems(viewer: Viewer, seen: int, tally: Tally, where: str) -> int:
    """Count what went wrong since the viewer's first ``seen`` exceptions: an exception the app drew, a connection
    the server ended (a browser would say "unexpected problem"); the number of exceptions seen now."""
    for text in viewer.exceptions[seen:]:
        tally.error("exceptions", f"{where}: {text}")
    if viewer.closed:
        tally.error("unexpected_problem", f"{where}: {viewer.closed}")
    return len(viewer.exceptions)


async def _switch(viewer: Viewer, page: str, tally: Tally, limit: float) -> bool:
    """Open ``page`` as its sidebar link does; the redraw lasts until the run it started is over. False when the
    connection is gone."""
    try:
        tally.redraw[page].append(await viewer.open(page, limit))
    except RunTimeout:
        tally.error("timeouts", f"opening {page}")
    except ConnectionError:
        return False
    return True


def _shown(viewer: Viewer) -> bool:
    return bool(re.search(r"\d%|failed", viewer.metric("Predicted accuracy") or ""))


async def _step(viewer: Viewer, slider: int, steps: int, tally: Tally, limits: Limits) -> None:
    """Move the ratio slider of group ``slider`` by ``steps``: the redraw lasts until the run that the move started
    is over; then the plan's predicted accuracy is asked for, and delivered when a number shows."""
    sliders = viewer.sliders("filters)")
    if not sliders:
        tally.error("exceptions", "Plan & prune drew no ratio slider")
        return
    t0 = time.perf_counter()
    try:
        tally.redraw[SLIDER].append(await viewer.move(sliders[slider % len(sliders)], steps, limits.action_s))
    except RunTimeout:
        tally.error("timeouts", "the slider's redraw")
        return
    except ConnectionError:
        return
    tally.requested += 1
    try:
        await viewer.wait_for(_shown, max(limits.prediction_s - (time.perf_counter() - t0), 1))
    except RunTimeout:
        tally.error("timeouts", "a predicted accuracy")
        return
    except ConnectionError:
        return
    if "failed" in viewer.metric("Predicted accuracy"):
        tally.error("failed_predictions", "a predicted accuracy failed")
    else:
        tally.delivered += 1
        tally.prediction_s.append(time.perf_counter() - t0)


async def _viewer(url: str, index: int, tally: Tally, limits: Limits, stop: asyncio.Event) -> None:
    """One viewer: arrive on the home page, then work until ``stop``."""
    try:
        async with Viewer(url) as viewer:
            tally.arrival.append(await viewer.open(None, limits.action_s))
            await _work(viewer, index, tally, limits, stop)
    except RunTimeout:
        tally.error("timeouts", "a viewer's first page load")
    except OSError as e:
        tally.error("unexpected_problem", f"a viewer's connection: {e}")


async def _work(viewer: Viewer, index: int, tally: Tally, limits: Limits, stop: asyncio.Event) -> None:
    """Switch pages in turn (from page ``index`` of the cycle) until ``stop``, stepping the viewer's own slider
    (group ``index`` of ResNet-20's 12) on every visit to Plan & prune; a pause to read before each click."""
    seen, position, direction, visit = 0, 0, 1, index
    pace = random.Random(index)
    while not stop.is_set() and not viewer.closed:
        await asyncio.sleep(pace.uniform(0.5, 1.5) * limits.think_s)  # the viewer reads before the next click
        visit += 1
        page = PAGES[visit % len(PAGES)]
        if page == HOME and visit == index + 1:
            continue  # already there
        if await _switch(viewer, page, tally, limits.action_s) and page == PLAN:
            if not 1 <= position + direction <= STEPS:
                direction = -direction
            await _step(viewer, index, direction, tally, limits)
            position += direction
        seen = _problems(viewer, seen, tally, page)


async def _alone(url: str, limits: Limits) -> tuple[float, Tally]:
    """The warm-up viewer: every page and one prediction, alone on the fresh server; its seconds and tally."""
    tally = Tally()
    t0 = time.perf_counter()
    async with Viewer(url) as viewer:
        await viewer.open(None, limits.prediction_s * 4)
        for page in PAGES[1:]:
            await _switch(viewer, page, tally, limits.prediction_s * 4)  # the cold start: scores computed once
        await _switch(viewer, PLAN, tally, limits.action_s)
        await _step(viewer, 11, 1, tally, Limits(limits.action_s, limits.prediction_s * 2))
        _problems(viewer, 0, tally, "warm-up")
    return time.perf_counter() - t0, tally


async def _newcomer(url: str, limit: float) -> float:
    """A new visitor in a real browser (headless Chromium): the seconds until the home page's heading is drawn and
    its run is over, the page's own files (JavaScript, styles) fetched too."""
    from playwright.async_api import async_playwright  # optional dependency: only the browser benchmarks need it

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = await (await browser.new_context(viewport={"width": 1280, "height": 720})).new_page()
        t0 = time.perf_counter()
        await page.goto(url, timeout=limit * 1000)
        await page.get_by_role("heading", name=HOME, exact=True).wait_for(timeout=limit * 1000)
        await page.locator(IDLE).wait_for(state="attached", timeout=limit * 1000)
        seconds = time.perf_counter() - t0
        await browser.close()
    return seconds


async def _class(url: str, viewers: int, seconds: float, limits: Limits) -> dict:
    """Warm up, then ``viewers`` viewers for ``seconds``, then a new visitor (a real browser) while they go on."""
    warm_s, warm = await _alone(url, limits)
    print(f"warm-up {warm_s:.1f} s (delivered {warm.delivered}/{warm.requested})", flush=True)
    tally, stop = Tally(), asyncio.Event()
    tasks = [asyncio.create_task(_viewer(url, i, tally, limits, stop)) for i in range(viewers)]
    await asyncio.sleep(seconds)  # the class at work for the measured time (the benchmark's length, no wait)
    try:
        newcomer = await _newcomer(url, limits.action_s)
    except _timeout():
        newcomer = None
        tally.error("timeouts", "the new visitor's first page load")
    stop.set()
    await asyncio.gather(*tasks)
    return {"warm_up_s": round(warm_s, 1), "warm_up_errors": warm.errors, "tally": tally, "new_visitor_s": newcomer}


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by nearest rank, rounded to 0.01 s; None without values."""
    if not values:
        return None
    ranked = sorted(values)
    return round(ranked[min(len(ranked) - 1, max(0, int(-(-q * len(ranked) // 100)) - 1))], 2)


def summary(run: dict, peak_mb: float, jobs_before: set[str], jobs_after: list) -> dict:
    """The figures and the targets: every page's p95 redraw <= 2 s, every prediction delivered, the new visitor in
    <= 5 s, no error, no job queued without the key."""
    tally: Tally = run["tally"]
    pages = {name: {"n": len(s), "p50_s": percentile(s, 50), "p95_s": percentile(s, 95),
                    "max_s": round(max(s), 2) if s else None} for name, s in tally.redraw.items()}
    p95s = [v["p95_s"] for v in pages.values() if v["p95_s"] is not None]
    new = [j for j in jobs_after if j.id not in jobs_before]
    without_key = [f"{j.id} ({j.owner})" for j in new if j.owner != "presenter"]
    errors = sum(tally.errors.values())
    newcomer = run["new_visitor_s"]
    targets = {
        "p95_redraw_s": {"target": f"<= {TARGETS['p95_redraw_s']} s on every page", "value": max(p95s, default=None),
                         "met": bool(p95s) and max(p95s) <= TARGETS["p95_redraw_s"]},
        "predictions_delivered": {"target": "all", "value": f"{tally.delivered}/{tally.requested}",
                                  "met": tally.requested > 0 and tally.delivered == tally.requested},
        "new_visitor_s": {"target": f"<= {TARGETS['new_visitor_s']} s", "value": newcomer and round(newcomer, 2),
                          "met": newcomer is not None and newcomer <= TARGETS["new_visitor_s"]},
        "errors": {"target": 0, "value": errors, "met": errors == 0},
        "jobs_without_key": {"target": 0, "value": len(without_key), "met": not without_key},
    }
    return {"redraw": pages, "arrival": {"n": len(tally.arrival), "p50_s": percentile(tally.arrival, 50),
                                         "p95_s": percentile(tally.arrival, 95)},
            "predictions": {"requested": tally.requested, "delivered": tally.delivered,
                            "p50_s": percentile(tally.prediction_s, 50), "p95_s": percentile(tally.prediction_s, 95)},
            "errors": tally.errors, "error_details": tally.details, "new_visitor_s": newcomer and round(newcomer, 2),
            "peak_rss_mb": peak_mb, "jobs": {"before": len(jobs_before), "after": len(jobs_after),
                                             "queued_without_key": without_key},
            "warm_up_s": run["warm_up_s"], "warm_up_errors": run["warm_up_errors"], "targets": targets,
            "all_targets_met": all(t["met"] for t in targets.values())}


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=30, help="viewers at once (websocket clients)")
    parser.add_argument("--seconds", type=float, default=120, help="how long the class works")
    parser.add_argument("--action-limit", type=float, default=60, help="seconds a redraw may take before it is an "
                        "error (a timeout)")
    parser.add_argument("--prediction-limit", type=float, default=150, help="seconds a predicted accuracy may take")
    parser.add_argument("--think", type=float, default=THINK_S, help="seconds a viewer reads before each click, on "
                        "average (0: click again as soon as the page is drawn, a saturation test)")
    parser.add_argument("--port", type=int, default=None, help="the server's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "classroom_load.json")
    args = parser.parse_args()
    limits = Limits(args.action_limit, args.prediction_limit, args.think)
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="prunekit-classroom-") as tmp:
        work = Path(tmp)
        env = {"PRUNEKIT_DATA": DATA, "PRUNEKIT_PRESENTER_KEY": secrets.token_urlsafe(12),
               "PRUNEKIT_UPLOADS": str(work / "uploads")}
        jobs_before = {j.id for j in jobs.list_jobs(work / "jobs")}
        own, t0 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
        with served(work, work / "streamlit.log", env, app_args=["--classroom"], port=args.port) as app:
            run = asyncio.run(_class(app.url, args.viewers, args.seconds, limits))
            peak, server_cpu = peak_rss_mb(app.proc.pid), cpu_seconds(app.proc.pid)
        wall, viewers_cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - own
        result = summary(run, peak, jobs_before, jobs.list_jobs(work / "jobs"))
        # where the machine's time went: the server, and the viewers (this process) beside it
        result["cpu_seconds"] = {"wall": round(wall, 1), "server": server_cpu, "viewers": round(viewers_cpu, 1)}
    result = {"benchmark": "classroom_load", "viewers": args.viewers, "seconds": args.seconds,
              "model": "bundled resnet20 on CIFAR-10", "viewers_are": VIEWERS_ARE, "pages": PAGES,
              "limits_s": vars(limits), **result,
              "cpu": cpu_name(), "cpu_count": os.cpu_count(), "load_average": load_average(before)}
    write_result(result, args.out)
    for name, t in result["targets"].items():
        print(f"{name}: {t['value']} (target {t['target']}): {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
