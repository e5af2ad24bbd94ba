# ruff: noqa: F811  (server and page are the fixtures imported from tests.test_browser, as pytest passes them)
"""The Plan page's table in a real browser, on a server of its own (a fresh session: what the other browser tests
left on the page does not matter): a ratio typed in the table reaches the package's check as typed (the editor used
to clamp 1.5 to 0.59 or 0.50 and -1 to 0.95) and is refused quoting it, the plan unchanged."""
import pytest

from tests.test_browser import _estimate, _idle, _open, _shot, page, server  # noqa: F401  (module-scoped fixtures)

pytestmark = pytest.mark.browser


def _type_first_ratio(page, typed: str) -> None:
    """Type ``typed`` into the plan table's first ratio cell. The grid is a canvas: select the first row's group
    cell, move right to its ratio, open the cell editor (a state, waited for); a click that landed while the grid
    was still being drawn selects nothing, so the selection is made again, at most three times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    editor = page.locator("[data-testid=stDataFrame]:visible").first  # the table tab's editor, not a hidden one
    cell = page.locator("input.gdg-input")
    for attempt in range(3):
        editor.wait_for(state="visible")
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
    # the editor must not clamp the value (1.5 became 0.59 or 0.50, -1 became 0.95)
    _open(page, server, "plan", "Plan & prune")
    page.get_by_role("tab", name="Table").click()
    page.locator("[data-testid=stDataFrame]:visible").first.wait_for()
    before = _estimate(page)  # whatever plan an earlier test left
    _type_first_ratio(page, typed)
    alert = page.locator("[data-testid=stAlert]").filter(has_text="Typed in the table")
    alert.wait_for()
    _idle(page)
    assert f"got {typed}" in alert.inner_text() and "The previous plan stays" in alert.inner_text()
    assert _estimate(page) == before  # the plan did not change
    _shot(page, f"plan-table-refused{typed}")
