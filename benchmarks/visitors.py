"""How long the Plan page's live "Predicted accuracy" takes with one visitor and with two at once, with Streamlit's
garbage collection after every script run (``runner.postScriptGC``) on and off: the setting is decided here.

The real app is served (``streamlit run app.py``) and driven by headless Chromium (Playwright). Each visitor opens the
Plan page through the sidebar, then changes its plan ``--changes`` times (one slider step each, its own slider, so
every plan is new) and, after each change, waits for the page state "computing..." and then for a number in the
"Predicted accuracy" metric: the seconds from the key press to the number are one prediction. A number that does not
come within DEADLINE_S is a lost prediction. The settings alternate (on, off, on, off, ...) on fresh servers in one
run, so the machine's load hits both; the server's peak RSS (VmHWM of it and its children) is read after each phase.

    python benchmarks/visitors.py [--rounds 1] [--changes 2]   # writes benchmarks/results/visitors.json
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.app_server import peak_rss_mb, served  # noqa: E402
from benchmarks.common import RESULTS, cpu_name, load_average, write_result  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DEADLINE_S = 150.0  # per prediction: well above the slowest seen before (62 s); keeps a run on a loaded box short
SETTINGS = {"on": "true", "off": "false"}  # runner.postScriptGC
DATA = os.environ.get("PRUNEKIT_DATA", "/work/shared/data")


async def _idle(page) -> None:
    await page.locator('[data-testid=stApp][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=DEADLINE_S * 1000)


async def _open_plan(browser, url: str):
    """A fresh visitor (its own browser context) on the Plan page, reached through the sidebar's link."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(DEADLINE_S * 1000)
    await page.goto(url)
    await page.locator("[data-testid=stSidebar]").get_by_role("link", name="Plan & prune").click()
    await page.get_by_role("heading", name="Plan & prune", exact=True).first.wait_for()
    await _idle(page)
    return page


async def _predictions(page, slider: int, changes: int) -> tuple[list[float], int]:
    """Move the ratio slider of group number ``slider`` one step ``changes`` times, waiting each time for the predicted accuracy of
    the new plan; returns the seconds per prediction and how many were lost (no number within DEADLINE_S)."""
    metric = page.locator("[data-testid=stMetric]").filter(has_text="Predicted accuracy")
    handle = page.locator("[data-testid=stSlider]").filter(has_text="filters)").nth(slider).get_by_role("slider")
    times, lost = [], 0
    for _ in range(changes):
        await _idle(page)
        await handle.focus()
        t0 = time.perf_counter()
        await handle.press("ArrowRight")
        try:  # the number of the new plan: after its "computing...", within DEADLINE_S of the key press
            await metric.filter(has_text="computing").first.wait_for(timeout=DEADLINE_S * 1000)
            left = DEADLINE_S - (time.perf_counter() - t0)
            await metric.filter(has_text="%").first.wait_for(timeout=max(left, 0.001) * 1000)
            times.append(time.perf_counter() - t0)
        except Exception as exc:  # a Playwright timeout: the number never came
            print(f"  lost a prediction: {type(exc).__name__}")
            lost += 1
    return times, lost


async def _visitors(browser, url: str, sliders: list[int], changes: int) -> tuple[list[float], int]:
    """``len(sliders)`` visitors at once, each moving its own slider: all their seconds per prediction, and lost."""
    pages = [await _open_plan(browser, url) for _ in sliders]
    runs = await asyncio.gather(*(_predictions(p, s, changes) for p, s in zip(pages, sliders)))
    for p in pages:
        await p.context.close()
    return [t for times, _ in runs for t in times], sum(lost for _, lost in runs)


async def _server(gc: str, work: Path, changes: int) -> dict:
    """One fresh server with postScriptGC ``gc``: a warm-up prediction (model, data and scores loaded), then one
    visitor, then two at once; {visitor count: {"seconds", "lost", "peak_rss_mb"}}."""
    from playwright.async_api import async_playwright  # optional dependency: only this benchmark drives a browser

    out = {}
    with served(work, work / f"streamlit-{gc}.log", {"PRUNEKIT_DATA": DATA}, ["--runner.postScriptGC", gc]) as app:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            await _visitors(browser, app.url, [0], 1)  # warm-up, not counted
            for n, sliders in ((1, [1]), (2, [2, 3])):
                seconds, lost = await _visitors(browser, app.url, sliders, changes)
                out[n] = {"seconds": seconds, "lost": lost, "peak_rss_mb": peak_rss_mb(app.proc.pid)}
                print(f"  postScriptGC={gc}, {n} visitor(s): {[round(s, 1) for s in seconds]} s, lost {lost}, "
                      f"peak RSS {out[n]['peak_rss_mb']:.0f} MB")
            await browser.close()
    return out


def summary(rounds: list[tuple[str, dict]]) -> dict:
    """Per setting and visitor count: median and max seconds per prediction, a lost one counted as DEADLINE_S (so
    a figure with lost ones is a lower bound), lost, peak RSS (max over rounds); per setting: two-visitor median /
    one-visitor median."""
    result = {}
    for name in SETTINGS:
        per_n = {}
        for n in (1, 2):
            seen = [r[n] for setting, r in rounds if setting == name]
            lost = sum(r["lost"] for r in seen)
            seconds = [s for r in seen for s in r["seconds"]] + [DEADLINE_S] * lost
            per_n[str(n)] = {"predictions": len(seconds) - lost, "lost": lost,
                             "median_s": round(statistics.median(seconds), 2), "max_s": round(max(seconds), 2),
                             "peak_rss_mb": max(r["peak_rss_mb"] for r in seen)}
        per_n["two_over_one"] = round(per_n["2"]["median_s"] / per_n["1"]["median_s"], 2)
        result[name] = per_n
    return result


def decide(s: dict) -> dict:
    """postScriptGC=false when it clearly lowers what two visitors wait (its two-visitor median at most 2/3 of GC
    on's, no more predictions lost) and keeps the peak memory bounded (at most 1.5 times that with GC on). The
    two/one ratio alone cannot decide: GC on slows one visitor too, and with predictions lost its ratio is a guess."""
    on, off = s["on"], s["off"]
    faster = off["2"]["median_s"] <= on["2"]["median_s"] * 2 / 3 and off["2"]["lost"] <= on["2"]["lost"]
    memory = off["2"]["peak_rss_mb"] / on["2"]["peak_rss_mb"]
    bounded = memory <= 1.5
    return {"postScriptGC": "false" if faster and bounded else "true", "two_visitors_faster_clearly": faster,
            "memory_off_over_on": round(memory, 2), "memory_bounded": bounded,
            "rule": "false when its two-visitor median <= 2/3 of GC on's, no more lost, peak RSS <= 1.5 x GC on's"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="servers per setting, alternating on, off, ...")
    parser.add_argument("--changes", type=int, default=2, help="plan changes per visitor and phase")
    args = parser.parse_args()
    before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="prunekit-visitors-") as tmp:
        for i in range(args.rounds):
            for name, gc in SETTINGS.items():
                print(f"round {i + 1}: postScriptGC={gc}")
                rounds.append((name, asyncio.run(_server(gc, Path(tmp), args.changes))))
    s = summary(rounds)
    result = {"benchmark": "visitors", "page": "Plan & prune, live Predicted accuracy (bundled resnet20)",
              "changes_per_visitor": args.changes, "rounds_per_setting": args.rounds, "order": [n for n, _ in rounds],
              "deadline_s": DEADLINE_S, "cpu": cpu_name(), "cpu_count": os.cpu_count(), "results": s,
              "decision": decide(s), "load_average": load_average(before),
              "raw": [{"setting": n, **{str(k): v for k, v in r.items()}} for n, r in rounds]}
    write_result(result, RESULTS / "visitors.json")
    for name, r in s.items():
        print(f"postScriptGC {name}: 1 visitor median {r['1']['median_s']} s, 2 visitors median {r['2']['median_s']} s "
              f"(max {r['2']['max_s']}, lost {r['2']['lost']}), ratio {r['two_over_one']}, "
              f"peak RSS {r['2']['peak_rss_mb']:.0f} MB")
    print("decision:", result["decision"])


if __name__ == "__main__":
    main()
