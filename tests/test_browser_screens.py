"""The dashboard as a projector shows it: every page, each section of the Saliency page and each step of the tour in
Debian's Chromium at 1280x720, each screenshotted whole into artifacts/screens/ (git-ignored with artifacts/) and
checked for text that does not fit: the page scrolling sideways, a label, header, tab, metric or menu cut by its
box, a chart's text drawn outside its chart, tick labels drawn on top of each other, a table scrolling sideways or
a table's header or cell cut (the Compare page's table in each of its views). The server has runs and jobs of
its own, written by hand (no worker): five runs (one fine-tuned, one with an implausible timing, one failed) and two
finished fine-tunings (one failed)."""
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


# what does not fit in a table (a canvas grid, which CUT_JS cannot see into), as sentences: the table scrolling
# sideways, a header or a cell whose text is wider than its column (or, in rows that wrap, taller than its row)
TABLE_JS = r"""() => {
  // the grid is a canvas: its columns (title, px width), row height, theme and cells are read from its React props,
  // every cell's text (as drawn: formatted) is measured in the grid's font and wrapped as the grid wraps it
  const found = [];
  const ctx = document.createElement('canvas').getContext('2d');
  const width = (font, text) => { ctx.font = font; return ctx.measureText(text).width; };
  const lines = (font, text, room) => {  // greedy word wrap; a word wider than the room breaks, as in the grid
    let n = 0;
    for (const para of text.split('\n')) {
      let line = '';
      for (const word of para.split(' ')) {
        if (line && width(font, `${line} ${word}`) > room) { n += Math.ceil(width(font, line) / room); line = word; }
        else line = line ? `${line} ${word}` : word;
      }
      n += Math.max(1, Math.ceil(width(font, line) / room));
    }
    return n;
  };
  for (const frame of document.querySelectorAll('[data-testid=stMain] [data-testid=stDataFrame]')) {
    if (!frame.checkVisibility()) continue;
    const scroller = frame.querySelector('.dvn-scroller');
    const key = scroller && Object.keys(scroller).find(k => k.startsWith('__reactFiber'));
    let fiber = key && scroller[key], grid = null;
    for (let i = 0; fiber && i < 40 && !grid; i++, fiber = fiber.return) {
      const p = fiber.memoizedProps;
      if (p && Array.isArray(p.columns) && p.theme && p.rowHeight !== undefined) grid = p;
    }
    const head = [...frame.querySelectorAll('th')].map(t => t.innerText.trim());
    if (!grid) { found.push(`a table's columns cannot be read (${head.join(', ')})`); continue; }
    const t = {cellHorizontalPadding: 8, cellVerticalPadding: 3, lineHeight: 1.4, headerIconSize: 18, ...grid.theme};
    const body = `${t.baseFontStyle} ${t.fontFamily}`, header = `${t.headerFontStyle} ${t.fontFamily}`;
    const rowHeight = typeof grid.rowHeight === 'number' ? grid.rowHeight : 35;
    const glyph = (() => { ctx.font = body; const m = ctx.measureText('ABCi09jgqpy');
                           return m.actualBoundingBoxAscent + m.actualBoundingBoxDescent; })();
    const fitLines = Math.max(1, Math.floor((rowHeight - t.cellVerticalPadding - glyph) / (t.lineHeight * glyph)) + 1);
    const wraps = rowHeight > 64;  // Streamlit lets the grid wrap text in rows above 4 rem
    if (scroller.scrollWidth > scroller.clientWidth + 1)
      found.push(`table (${head.join(', ')}) scrolls sideways: ${scroller.scrollWidth} > ${scroller.clientWidth} px`);
    for (const col of grid.columns) {  // a header: its title, and the edit icon of an editable column
      const icon = col.icon ? t.headerIconSize + t.cellHorizontalPadding : 0;
      const room = col.width - 2 * t.cellHorizontalPadding - icon;
      if (width(header, col.title) > room + 1) found.push(`table header cut: "${col.title}" (${col.width} px wide)`);
    }
    for (let r = 0; r < Math.min(grid.rows, 500); r++) {  // every row, on screen or not, as the grid draws it
      grid.columns.forEach((col, c) => {
        const cell = grid.getCellContent([c, r]), text = cell && cell.displayData;
        if (typeof text !== 'string' || !text.trim()) return;
        const room = col.width - 2 * t.cellHorizontalPadding;
        const cut = wraps ? lines(body, text, room) > fitLines
                          : text.includes('\n') || width(body, text) > room + 1;
        if (cut) found.push(`table cell cut: "${text.slice(0, 80)}" (column "${col.title}", ${col.width} px` +
                            (wraps ? `, ${fitLines} lines` : '') + ')');
      });
    }
  }
  return found;
}"""


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """(the server's folder of runs and jobs, the id of its fine-tuned run)."""
    work = tmp_path_factory.mktemp("screens")
    tuned = write_runs(work / "runs")[0]
    write_jobs(work / "jobs", work)
    return work, tuned


@pytest.fixture(scope="module")
def dashboard(samples):
    yield from serve(samples[0], "streamlit-screens.log", PRUNEKIT_JOBS_NO_WORKER="1")


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
    found = page.evaluate(CUT_JS) + page.evaluate(TABLE_JS)
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


def _choose(page, control: str, option: str) -> None:
    """Pick ``option`` of the segmented control labelled ``control`` (a radio group) and wait until it is picked."""
    group = page.get_by_role("radiogroup", name=control)
    group.get_by_role("radio", name=option).click()
    group.locator("[role=radio][aria-checked=true]").filter(has_text=option).wait_for()
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


def test_the_prune_pages_fit(samples, dashboard, screen):
    page, problems = screen, {}
    page.goto(f"{dashboard}/plan")
    page.get_by_role("heading", name="Plan & prune", exact=True).wait_for()
    _check(page, "plan", problems)
    _choose(page, "Edit the ratios with", "Table")
    page.locator("[data-testid=stDataFrame]").first.wait_for(state="visible")
    _check(page, "plan-table", problems)
    _go(page, "Jobs", "Jobs")
    page.get_by_role("heading", name="Finished (2)").wait_for()
    jobs_text = page.inner_text("[data-testid=stMain]")
    _check(page, "jobs", problems)
    _go(page, "Compare runs", "Compare runs")
    page.get_by_text("All runs (5)").wait_for()
    _check(page, "compare", problems)
    for view in ("cost", "origin and status"):  # the runs table's other columns
        _choose(page, "Columns", view)
        _check(page, f"compare-{view.replace(' ', '-')}", problems)
    picker = page.get_by_role("combobox", name="Run (or click a dot above)")
    picker.click()
    picker.fill(samples[1])  # the fine-tuned run: its fine-tuning curve
    page.get_by_role("option", name=re.compile(samples[1])).click()
    page.locator("[data-testid=stPlotlyChart]").nth(2).wait_for()
    _check(page, "compare-fine-tuned", problems)
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
