# ruff: noqa: F811  (server and page are the fixtures imported from tests.test_browser, as pytest passes them)
"""The Plan page's table in a real browser, on a server of its own (a fresh session: what the other browser tests
left on the page does not matter): a ratio typed in the table reaches the package's check as typed (the editor used
to clamp 1.5 to 0.59 or 0.50 and -1 to 0.95) and is refused quoting it, the plan unchanged, and the page stays on
the table (it used to jump back to the sliders)."""
import pytest

from tests.test_browser import _estimate, _idle, _open, _shot, page, server  # noqa: F401  (module-scoped fixtures)

pytestmark = pytest.mark.browser

CHOSEN = "[role=radio][aria-checked=true]"


def _editors(page):
    """The segmented control that picks the plan's editor (sliders or table): a radio group."""
    return page.get_by_role("radiogroup", name="Edit the ratios with")


def _choose_table(page) -> None:
    """Pick the table editor: wait until its radio is the checked one, the page idle and the table drawn."""
    _editors(page).get_by_role("radio", name="Table").click()
    _editors(page).locator(CHOSEN).filter(has_text="Table").wait_for()
    _idle(page)
    page.locator("[data-testid=stDataFrame]").first.wait_for(state="visible")


def _type_first_ratio(page, typed: str) -> None:
    """Type ``typed`` into the plan table's first ratio cell. The grid is a canvas: select the first row's group
    cell, move right to its ratio, open the cell editor (a state, waited for); a click that landed while the grid
    was still being drawn selects nothing, so the selection is made again, at most three times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    editor = page.locator("[data-testid=stDataFrame]").first
    cell = page.locator("input.gdg-input")
    for attempt in range(3):
        box = editor.bounding_box()
        page.mouse.click(box["x"] + 40, box["y"] + 35 + 17)  # the first row's group cell (read-only)
        page.keyboard.press("ArrowRight")  # its ratio
        page.keyboard.press("Enter")  # edit: the grid opens its cell editor
        try:
            cell.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    cell.fill(typed)
    cell.press("Enter")


@pytest.mark.parametrize("typed", ["1.5", "-1"])
def test_a_ratio_typed_in_the_plan_table_is_refused_as_typed(server, page, typed):
    # the editor must not clamp the value (1.5 became 0.59 or 0.50, -1 became 0.95), nor leave the table
    _open(page, server, "plan", "Plan & prune")
    assert page.locator("[class*=st-key-ratio]").count() > 0  # ResNet-20's 12 groups open on the sliders
    _choose_table(page)
    before = _estimate(page)  # whatever plan an earlier test left
    _type_first_ratio(page, typed)
    alert = page.locator("[data-testid=stAlert]").filter(has_text="Typed in the table")
    alert.wait_for()
    _idle(page)
    assert f"got {typed}" in alert.inner_text() and "The previous plan stays" in alert.inner_text()
    assert _estimate(page) == before  # the plan did not change
    assert _editors(page).locator(CHOSEN).inner_text().strip() == "Table"  # still on the table, which is drawn
    assert page.locator("[data-testid=stDataFrame]").first.is_visible()
    assert page.locator("[class*=st-key-ratio]").count() == 0  # no per-group slider drawn
    _shot(page, f"plan-table-refused{typed}")
