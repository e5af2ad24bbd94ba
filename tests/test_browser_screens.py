"""The dashboard as a projector shows it: every page, each section of the Saliency page and each step of the tour in
Debian's Chromium at 1280x720, each screenshotted whole into artifacts/screens/ (git-ignored with artifacts/) and
checked for text that does not fit: the page scrolling sideways, a label, header, tab, metric or menu cut by its
box, a chart's text drawn outside its chart, tick labels drawn on top of each other. The server has runs and jobs of
its own, written by hand (no worker): four runs (one fine-tuned, one with an implausible timing) and two finished
fine-tunings (one failed)."""
import json
import re

import pytest

from tests.conftest import REPO
from tests.sample_runs import write_jobs, write_runs
from tests.test_browser import _drawn, _frames, _idle, chromium_page, serve

pytestmark = pytest.mark.browser

SCREENS = REPO / "artifacts" / "screens"
WIDTH, HEIGHT = 1280, 720

# what does not fit, as sentences: the main area scrolling sideways; an element that clips its own text (ellipsis,
# or overflow hidden with text of its own) holding wider text; a chart's text outside the chart's SVG
CUT_JS = r"""() => {
  const main = document.querySelector('[data-testid=stMain]');
  const found = [];
  if (main.scrollWidth > main.clientWidth + 1)
    found.push(`the page scrolls sideways (${main.scrollWidth} > ${main.clientWidth} px)`);
  const skip = ['.js-plotly-plot', '[data-testid=stDataFrame]', '[data-testid=stCode]', 'pre',
                '[data-testid=stExpander] details:not([open])'].join(', ');
  for (const el of main.querySelectorAll('*')) {
    if (el.closest(skip) || !el.checkVisibility()) continue;
    const style = getComputedStyle(el);
    const ownText = [...el.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    const clips = style.textOverflow === 'ellipsis' || (ownText && ['hidden', 'clip'].includes(style.overflowX));
    if (clips && el.scrollWidth > el.clientWidth + 1 && el.innerText.trim())
      found.push(`cut: "${el.innerText.trim().slice(0, 80)}" (${el.scrollWidth} > ${el.clientWidth} px)`);
  }
  for (const chart of main.querySelectorAll('[data-testid=stPlotlyChart]')) {
    const svg = chart.querySelector('.main-svg');
    if (!svg || !chart.checkVisibility()) continue;
    const box = svg.getBoundingClientRect();
    for (const text of chart.querySelectorAll('svg text')) {
      const b = text.getBoundingClientRect();
      if (!text.textContent.trim() || b.width === 0) continue;
      if (b.left < box.left - 1 || b.right > box.right + 1 || b.top < box.top - 1 || b.bottom > box.bottom + 1)
        found.push(`chart text outside its chart: "${text.textContent.trim().slice(0, 80)}"`);
    }
    // tick labels on top of each other: level ones whose boxes meet, turned ones closer than their font's height
    for (const axis of chart.querySelectorAll('.xaxislayer-above, .yaxislayer-above')) {
      const along = axis.classList.contains('xaxislayer-above') ? 'x' : 'y';
      const ticks = [...axis.querySelectorAll('text')].filter(t => t.textContent.trim())
        .map(t => ({t, b: t.getBoundingClientRect(), px: parseFloat(getComputedStyle(t).fontSize),
                    turned: /rotate\((?!0[,)])/.test(t.getAttribute('transform') || '')}))
        .filter(k => k.b.width > 0)
        .sort((p, q) => along === 'x' ? p.b.left - q.b.left : p.b.top - q.b.top);
      for (let i = 1; i < ticks.length; i++) {
        const [p, q] = [ticks[i - 1], ticks[i]];
        const gap = along === 'x' ? (q.b.left + q.b.right - p.b.left - p.b.right) / 2
                                  : (q.b.top + q.b.bottom - p.b.top - p.b.bottom) / 2;  // between their centres
        const boxesMeet = p.b.right > q.b.left + 1 && q.b.right > p.b.left + 1
                          && p.b.bottom > q.b.top + 1 && q.b.bottom > p.b.top + 1;
        const meet = p.turned || q.turned ? Math.abs(gap) < 0.9 * q.px : boxesMeet;
        if (meet) {
          found.push(`tick labels on top of each other: "${p.t.textContent}" and "${q.t.textContent}"`);
          break;
        }
      }
    }
  }
  return found;
}"""


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    work = tmp_path_factory.mktemp("screens")
    write_runs(work / "runs")
    write_jobs(work / "jobs", work)
    yield from serve(work, "streamlit-screens.log", PRUNEKIT_JOBS_NO_WORKER="1")


@pytest.fixture(scope="module")
def screen(dashboard):
    SCREENS.mkdir(parents=True, exist_ok=True)
    yield from chromium_page(WIDTH, HEIGHT)


def _settled(page) -> None:
    """The run over, no chart still a loading skeleton, every visible chart drawn, the layout painted."""
    _idle(page)
    page.wait_for_function("() => !document.querySelector('[data-testid=stMain] [data-testid=stSkeleton]')",
                           timeout=120_000)
    _drawn(page)
    _frames(page)


def _check(page, name: str, problems: dict) -> None:
    """Record what does not fit at 1280x720 under ``name``, then a screenshot of the whole page (the viewport
    stretched to Streamlit's scrolling container, as tests.test_browser._shot does) into artifacts/screens/."""
    page.mouse.move(0, HEIGHT - 1)  # no chart hovered: its tool bar hidden
    _settled(page)
    found = page.evaluate(CUT_JS)
    if found:
        problems[name] = found
    height = page.evaluate("() => document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": max(HEIGHT, min(int(height) + 120, 12000))})
    _drawn(page)  # charts that came into view drawn, the taller layout painted
    _frames(page)
    page.screenshot(path=str(SCREENS / f"{name}.png"))
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    assert "Traceback" not in page.inner_text("body"), name


def _go(page, link: str, heading: str) -> None:
    """Open a page from the sidebar (the session, and its chosen criterion, stay) and wait for its title."""
    page.locator("[data-testid=stSidebar]").get_by_role("link", name=link).click()
    page.get_by_role("heading", name=heading, exact=True).first.wait_for()
    _idle(page)


def test_the_explore_pages_and_every_saliency_section_fit(dashboard, screen):
    page, problems = screen, {}
    page.goto(dashboard)
    page.get_by_text("Where the cost sits").wait_for()
    _check(page, "model", problems)
    _go(page, "Saliency", "Saliency")
    page.locator("[data-testid=stSelectbox]").filter(has_text="Criterion").click()
    page.get_by_role("option", name="l1 · baseline").click()  # weight-only: scored at once
    page.get_by_text("Score distribution of every layer (688 filters, 19 conv layers)").wait_for()
    tabs = page.get_by_role("tab")
    names = page.evaluate("() => [...document.querySelectorAll('[role=tab]')].map(t => [...t.querySelectorAll("
                          "'p')].map(p => p.innerText).join(' ').replace(/^[a-z_]+ /, ''))")  # after the icon's name
    assert len(names) >= 6, names
    for k, name in enumerate(names):
        tabs.nth(k).click()
        page.get_by_role("tabpanel").filter(has=page.locator("h3")).locator("h3").first.wait_for()
        _check(page, f"saliency-{k + 1}-{re.sub(r'[^a-z]+', '-', name.lower()).strip('-')}", problems)
    _go(page, "Feature maps", "Feature maps")
    _check(page, "feature-maps", problems)
    _go(page, "Correlations", "Correlations")
    _check(page, "correlations", problems)
    assert not problems, json.dumps(problems, indent=1)


def test_the_prune_pages_fit(dashboard, screen):
    page, problems = screen, {}
    page.goto(f"{dashboard}/plan")
    page.get_by_role("heading", name="Plan & prune", exact=True).wait_for()
    _check(page, "plan", problems)
    page.get_by_role("radiogroup", name="Edit the ratios with").get_by_role("radio", name="Table").click()
    page.get_by_role("radiogroup", name="Edit the ratios with").locator("[role=radio][aria-checked=true]").filter(
        has_text="Table").wait_for()
    page.locator("[data-testid=stDataFrame]").first.wait_for(state="visible")
    _check(page, "plan-table", problems)
    _go(page, "Jobs", "Jobs")
    page.get_by_role("heading", name="Finished (2)").wait_for()
    jobs_text = page.inner_text("[data-testid=stMain]")
    _check(page, "jobs", problems)
    _go(page, "Compare runs", "Compare runs")
    page.get_by_text("All runs (4)").wait_for()
    _check(page, "compare", problems)
    assert not problems, json.dumps(problems, indent=1)
    assert "every kind of job" in jobs_text  # the empty state names them all, not fine-tuning only


def test_every_tour_step_fits(dashboard, screen):
    page, problems = screen, {}
    page.goto(f"{dashboard}/tour")
    page.get_by_role("heading", name="Guided tour", exact=True).wait_for()
    for k in range(1, 9):
        page.get_by_role("heading", name=re.compile(rf"^{k}\. ")).first.wait_for()
        _check(page, f"tour-step-{k}", problems)
        if k < 8:
            page.get_by_role("button", name="Next").click()
    assert not problems, json.dumps(problems, indent=1)
