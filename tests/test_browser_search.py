# ruff: noqa: F811  (server and page are the fixtures imported from tests.test_browser, as pytest passes them)
"""The Plan page's search in a real browser, on the bundled model: a search of a few candidates at -50% FLOPs
draws its candidates against the budget, says what it found, and "Load into the editor" puts the chosen plan into
the ratio editor (the instant estimate changes to the plan's). Every step waits on a state; the screenshot lands in
artifacts/screenshots/plan-search.png."""
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import cifar_root
from tests.test_browser import _estimate, _idle, _open, _shot, page, server  # noqa: F401  (module-scoped fixtures)

pytestmark = pytest.mark.browser


def test_a_search_draws_its_candidates_and_loads_the_chosen_plan_into_the_editor(server, page):
    if cifar_root() is None:
        pytest.skip("needs the CIFAR-10 JPEG copy: the search judges candidates on its training images")
    _open(page, server, "plan", "Plan & prune")
    before = _estimate(page)
    assert "40.55M" in before  # the unpruned ResNet-20: nothing in the editor yet
    main = page.locator("[data-testid=stMain]")
    candidates = main.get_by_role("spinbutton", name="Candidates")
    candidates.fill("4")
    candidates.press("Enter")
    _idle(page)
    main.get_by_role("button", name="Search").click()
    done = main.locator("[data-testid=stAlert]").filter(has_text="Searched 4 candidates")
    done.wait_for(timeout=900_000)
    _idle(page)
    chart = main.locator("[data-testid=stPlotlyChart]").filter(has_text="Accuracy against FLOPs removed")
    chart.locator(".main-svg").first.wait_for()
    assert chart.locator(".scatterlayer .point").count() >= 4  # every candidate judged is a point
    assert "Traceback" not in page.inner_text("body")
    _shot(page, "plan-search")
    main.get_by_role("button", name="Load into the editor").click()
    metric = page.locator("[data-testid=stMetric]").filter(has_text="MACs / image").first
    # a state: the estimate carries a change (the unpruned plan's has none); expect compares textContent, which
    # differs from inner_text, so the text before is no state to wait on
    expect(metric).to_contain_text(re.compile(r"-\d+(\.\d+)?%"), timeout=120_000)
    _idle(page)
    after = _estimate(page)
    removed = float(re.search(r"-(\d+(?:\.\d+)?)%", after).group(1))
    assert 40 <= removed <= 60, after  # about -50% of the MACs, as the FLOPs budget asked (FLOPs = 2 x MACs)
