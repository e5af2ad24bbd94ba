"""The dashboard in a real browser: `streamlit run app.py` driven by Playwright in Debian's Chromium.

The flow a user takes: open the app, score with a criterion, move a ratio and see the estimate change, prune,
fine-tune one epoch on a small subset as a background job, find the run on the Compare page. Screenshots of every
page land in artifacts/screenshots/ (kept by CI as test artifacts). The server gets its own runs and jobs folders.
Without /usr/bin/chromium the test fails in CI (.ci/run installs it) and skips, saying how to install it, elsewhere.
"""
import os
import re

import pytest
from playwright.sync_api import expect

from benchmarks.app_server import AppDidNotStart, served
from tests.conftest import REPO, cifar_root

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "artifacts" / "screenshots"
pytestmark = pytest.mark.browser


def serve(work, log_name: str = "streamlit.log", app_args: tuple[str, ...] = (), **extra_env: str):
    """Generator: `streamlit run app.py [-- app_args]` on a free port (benchmarks/app_server.served), its runs and
    jobs folders under ``work``, ``extra_env`` set; yields its URL once it answers, stops it after. Its output goes
    to artifacts/``log_name``."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run should have installed Debian's chromium")
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {"OMP_NUM_THREADS": "1", **extra_env}
    if cifar_root() is not None:
        env["PRUNEKIT_DATA"] = str(cifar_root())
    try:
        with served(work, SHOTS.parent / log_name, env, app_args=app_args) as app:
            yield app.url
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("dashboard"))


def chromium_page(width: int, height: int):
    """Generator: a Playwright page in Debian's Chromium (headless) with a ``width`` x ``height`` viewport."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(90_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def page(server):
    yield from chromium_page(1440, 900)


def test_a_page_opened_by_its_url_on_a_fresh_server_comes_with_the_app(server, page):
    # the first request of this module's server: Streamlit would run pages/compare.py alone (its old pages-folder
    # mode), without app.py's sidebar and navigation; the page reruns itself through the router
    page.goto(f"{server}/compare")
    # never a blank page: the first run of a fresh server (PyTorch imported) says what it is doing, and
    # Streamlit's status widget ("Running...", with Stop) shows that work is going on (toolbarMode "viewer")
    page.locator("[data-testid=stMain]").get_by_text("Starting prunekit").or_(
        page.get_by_role("heading", name="Compare runs", exact=True)).first.wait_for()
    page.locator("[data-testid=stStatusWidget]").wait_for(state="visible")
    page.get_by_role("heading", name="Compare runs", exact=True).wait_for()
    _idle(page)
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_role("link", name="Guided tour").wait_for()
    links = [x.split("\n")[-1] for x in sidebar.get_by_role("link").all_inner_texts()]  # after the icon's name
    assert "Plan & prune" in links and not any("shared" in x or "agreement" in x for x in links), links
    assert page.locator("[data-testid=stSidebarNav]").count() == 0  # Streamlit's list of the files in pages/
    sidebar.get_by_text("Bundled default").wait_for()  # the app's sidebar
    assert "Starting prunekit" not in page.inner_text("body")  # the start-up note is gone once the page is drawn


def test_home_shows_the_default_model_card(server, page):
    page.goto(server)
    page.get_by_text("Where the cost sits").wait_for()
    page.locator("[data-testid=stPlotlyChart]").first.wait_for()  # the cost chart, not its loading skeleton
    _idle(page)
    _drawn(page)
    page.screenshot(path=str(SHOTS / "model.png"), full_page=True)
    body = page.inner_text("body")
    assert "Model & data" in body and "ResNet-20" in body
    assert "0.27M" in body and "40.55M" in body
    assert "Traceback" not in body
    page.get_by_role("heading", name="Data", exact=True).scroll_into_view_if_needed()
    _frames(page)
    page.screenshot(path=str(SHOTS / "model-data.png"))


def _shot(page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls an inner container, so the viewport is stretched to it."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight")
    page.set_viewport_size({"width": 1440, "height": max(900, min(int(height) + 120, 12000))})
    _frames(page)
    _drawn(page)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1440, "height": 900})


def _idle(page) -> None:
    """Wait until the script run is over: Streamlit marks its root with data-test-script-state="notRunning".
    Call it after waiting for something the run draws (a heading, a message), so that a run that has not started
    yet is not taken for one that is over."""
    page.locator('[data-testid=stApp][data-test-script-state="notRunning"]').wait_for(state="attached",
                                                                                      timeout=300_000)


def _drawn(page) -> None:
    """Wait until every plotly chart shown on the page (not those in a closed expander or another tab) has drawn
    its SVG."""
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stPlotlyChart]')]"
                           ".filter(c => c.checkVisibility()).every(c => c.querySelector('.main-svg'))",
                           timeout=120_000)


def _frames(page) -> None:
    """Wait until the browser has laid out and painted the current state (two animation frames)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _open(page, server, path: str, heading: str) -> None:
    page.goto(f"{server}/{path}")
    page.get_by_role("heading", name=heading, exact=True).first.wait_for()
    _idle(page)


def _estimate(page) -> str:
    return page.locator("[data-testid=stMetric]").filter(has_text="MACs / image").first.inner_text()


def test_score_plan_prune_finetune_compare(server, page):
    if cifar_root() is None:
        pytest.skip("needs the CIFAR-10 JPEG copy: scoring by entropy and fine-tuning read images")
    # score with a criterion (the default: SFM entropy, 640 probe images), see its reliability and stability
    _open(page, server, "saliency", "Saliency")
    page.get_by_role("button", name="Score every filter with sfm_entropy").click()
    page.get_by_text("Score distribution of every layer (688 filters, 19 conv layers)").wait_for(timeout=300_000)
    _idle(page)
    _shot(page, "saliency")
    body = page.inner_text("body")
    assert "Traceback" not in body and "Reliability (median Spearman)" in body  # beside the criterion
    page.get_by_role("tab").filter(has_text="Stability").click()  # the page shows one section at a time
    page.get_by_role("button", name="Score the epoch-1 checkpoint with sfm_entropy").click()
    page.get_by_text("The black dashes are the final model's Spearman").wait_for(timeout=300_000)
    _idle(page)
    page.get_by_role("heading", name="Rank stability: epoch 1 vs final weights").scroll_into_view_if_needed()
    page.locator(".legend").get_by_text("noise floor: two probe samples").first.wait_for()  # the chart is drawn
    page.screenshot(path=str(SHOTS / "saliency-stability.png"))

    # move a ratio: the instant estimate changes
    _open(page, server, "plan", "Plan & prune")
    before = _estimate(page)
    assert "40.55M" in before
    slider = page.locator("[data-testid=stMain]").get_by_role("slider").first  # not the sidebar's
    slider.focus()
    for _ in range(10):  # 10 steps of 0.05: ratio 0.5 for the first group
        slider.press("ArrowRight")
    metric = page.locator("[data-testid=stMetric]").filter(has_text="MACs / image").first
    # a state: the estimate carries a change (expect compares textContent, not the inner_text read before)
    expect(metric).to_contain_text(re.compile(r"-\d+(\.\d+)?%"), timeout=60_000)
    _idle(page)
    after = _estimate(page)
    assert after != before and "40.55M" not in after, after
    # the predicted accuracy of the new plan arrives from the background (a state, waited for)
    predicted = page.locator("[data-testid=stMetric]").filter(has_text="Predicted accuracy").filter(has_text="%")
    predicted.first.wait_for(timeout=300_000)
    assert "pts" in predicted.first.inner_text()
    _idle(page)
    _shot(page, "plan")

    # prune: the run and its accuracy right after pruning
    page.get_by_role("button", name="Prune", exact=True).click()
    page.get_by_text("saved (done)").wait_for(timeout=300_000)
    _idle(page)
    run_id = page.locator("[data-testid=stAlert]").filter(has_text="saved (done)").inner_text().split("Run ")[1]
    run_id = run_id.split(" saved")[0].strip()
    assert "Accuracy after pruning" in page.inner_text("body")

    # fine-tune one epoch on 256 images (tested on 1000) as a background job, followed on the Jobs page
    page.get_by_role("spinbutton", name="Epochs").fill("1")
    page.get_by_role("spinbutton", name="Train images (0 = all)").fill("256")
    page.get_by_role("spinbutton", name="Test images (0 = all)").fill("1000")
    page.get_by_role("button", name="Queue fine-tuning").click()
    page.get_by_text("Fine-tuning queued as job").wait_for()
    _shot(page, "plan-pruned")
    _open(page, server, "jobs", "Jobs")
    _shot(page, "jobs-running")
    page.get_by_role("heading", name="Finished (1)").wait_for(timeout=600_000)
    # the finished job's details (its training curves) render in a later part of the run than the heading: wait for
    # them, not a time (the result's words are in the table's canvas, which the DOM does not show)
    page.locator("[data-testid=stPlotlyChart]").last.wait_for(timeout=300_000)
    _idle(page)
    _shot(page, "jobs")

    # the run, fine-tuned, on the Compare page
    _open(page, server, "compare", "Compare runs")
    page.get_by_text(run_id).first.wait_for()
    body = page.inner_text("body")
    assert "All runs (1)" in body and "Traceback" not in body

    # a sweep queued from the Compare page: l1 at two targets, drawn as one curve once its job is done
    page.get_by_text("Draw new curves").click()
    page.get_by_role("textbox", name="Fractions of FLOPs to remove").fill("0.3, 0.6")
    page.get_by_role("button", name="Queue the sweep").click()
    page.get_by_text("Sweep queued as job").wait_for()
    _open(page, server, "jobs", "Jobs")
    page.get_by_role("heading", name="Finished (2)").wait_for(timeout=600_000)
    _open(page, server, "compare", "Compare runs")
    page.get_by_text("All runs (5)").wait_for()  # the fine-tuned run and the sweep's four points (sfm_entropy, l1)
    page.locator(".legend").get_by_text("l1", exact=True).first.wait_for()  # one entry per criterion
    _shot(page, "compare")


@pytest.mark.parametrize(("path", "heading"), [("feature_maps", "Feature maps"), ("correlations", "Correlations"),
                                               ("tour", "Guided tour")])
def test_every_other_page_opens_readable(server, page, path, heading):
    _open(page, server, path, heading)
    body = page.inner_text("body")
    assert "Traceback" not in body and "unexpected problem" not in body
    _shot(page, path)
