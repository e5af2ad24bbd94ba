# ruff: noqa: F811  (server and page are the fixtures imported from tests.test_browser, as pytest passes them)
"""Models beyond the registry in a real browser, on a server of its own: a timm RegNet (grouped convs, pruned
by blocks) and, in the slow suite, torchvision's DenseNet-121 (concatenations) and ConvNeXt-Tiny (LayerNorms over
the channels) are picked in the sidebar, scored,
planned, pruned (the self-checked pruning, its run saved) and found on the Compare page; the Feature maps and
Correlations pages draw for them. Every step waits on a state; screenshots land in artifacts/screenshots/zoo-*."""
import pytest

from tests.conftest import cifar_root
from tests.test_browser import _idle, _shot, page, server  # noqa: F401  (module-scoped fixtures)

pytestmark = pytest.mark.browser

MODELS = [
    pytest.param("A timm model", "timm:regnetx_002", id="timm-regnetx_002"),
    pytest.param("A torchvision model", "torchvision:densenet121", id="torchvision-densenet121",
                 marks=pytest.mark.slow),
    pytest.param("A torchvision model", "torchvision:convnext_tiny", id="torchvision-convnext_tiny",
                 marks=pytest.mark.slow),
]


def _nav(page, title: str) -> None:
    """Open a page through the sidebar's link (the session, with its model choice, is kept; a new URL would
    start a new one) and wait for its heading and the end of its run."""
    page.locator("[data-testid=stSidebar]").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for()
    _idle(page)


def _no_error(page) -> None:
    body = page.inner_text("body")
    assert "Traceback" not in body and "unexpected problem" not in body, body[-2000:]


def _pick(page, server, source: str, name: str) -> None:
    """Choose ``source`` in the sidebar, then ``name`` in its searchable list."""
    page.goto(server)
    page.get_by_text("Where the cost sits").wait_for(timeout=300_000)
    _idle(page)
    side = page.locator("[data-testid=stSidebar]")
    side.get_by_text(source).click()
    box = side.get_by_role("combobox", name=source.split(" ")[1] + " model")
    box.wait_for()
    _idle(page)
    box.click()
    box.fill(name.split(":")[1])
    page.get_by_role("option", name=name, exact=True).click()
    page.locator("[data-testid=stMetric]").filter(has_text=f"{name}@32").first.wait_for(timeout=300_000)
    _idle(page)


@pytest.mark.parametrize(("source", "name"), MODELS)
def test_a_zoo_model_is_scored_planned_pruned_and_compared(server, page, source, name):
    if cifar_root() is None:
        pytest.skip("needs the CIFAR-10 JPEG copy: the model takes the data set's input size and classes")
    tag = name.split(":")[1]
    _pick(page, server, source, name)
    _no_error(page)
    _shot(page, f"zoo-{tag}-model")

    _nav(page, "Saliency")
    crit = page.locator("[data-testid=stMain]").get_by_role("combobox", name="Criterion")
    crit.click()
    crit.fill("l1")
    page.get_by_role("option").filter(has_text="l1 ·").first.click()
    page.get_by_text("Score distribution of every layer").wait_for(timeout=300_000)
    _idle(page)
    _no_error(page)
    _shot(page, f"zoo-{tag}-saliency")

    _nav(page, "Plan & prune")
    page.get_by_role("button", name="Apply").click()  # the default preset (uniform) on every prunable group
    page.locator("[data-testid=stAlert]").filter(has_text="applied").or_(
        page.locator("[data-testid=stAlert]").filter(has_text="Error")).first.wait_for(timeout=300_000)
    _idle(page)
    assert page.locator("[data-testid=stAlert]").filter(has_text="applied").count() == 1
    page.get_by_role("button", name="Prune", exact=True).click()
    page.get_by_text("saved (done)").wait_for(timeout=600_000)
    _idle(page)
    _no_error(page)
    notice = page.locator("[data-testid=stAlert]").filter(has_text="saved (done)").inner_text()
    run_id = notice.split("Run ")[1].split(" saved")[0].strip()
    assert "Accuracy after pruning" in page.inner_text("body")
    _shot(page, f"zoo-{tag}-plan")

    _nav(page, "Compare runs")
    page.get_by_text(run_id).first.wait_for()
    _no_error(page)
    _shot(page, f"zoo-{tag}-compare")

    for title in ("Feature maps", "Correlations"):
        _nav(page, title)
        page.locator("[data-testid=stPlotlyChart]").first.wait_for(timeout=300_000)
        _idle(page)
        _no_error(page)
        _shot(page, f"zoo-{tag}-{title.split()[0].lower()}")
