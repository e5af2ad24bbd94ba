"""AppTest of the Guided tour: Next and Previous walk the steps, and every step links to its page."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from pages.tour import STEPS
from tests.apptest_kit import open_page
from tests.conftest import REPO


def _page(**session) -> AppTest:
    return open_page("pages/tour.py", **session)


def _current(at) -> str:
    return at.subheader[0].value


def test_next_moves_to_step_two_and_previous_back():
    at = _page()
    assert not at.exception
    assert _current(at) == "1. Filters and feature maps"
    assert at.button(key="tour_prev").disabled
    at.button(key="tour_next").click().run()
    assert not at.exception
    assert at.session_state["tour_step"] == 1 and _current(at) == "2. Where the cost sits"
    at.button(key="tour_prev").click().run()
    assert at.session_state["tour_step"] == 0 and _current(at) == "1. Filters and feature maps"


def test_the_last_step_cannot_go_further():
    at = _page(tour_step=len(STEPS) - 1)
    assert _current(at) == f"{len(STEPS)}. Compare: the Pareto front"
    assert at.button(key="tour_next").disabled


def test_every_step_links_to_a_registered_page():
    assert 6 <= len(STEPS) <= 8
    registered = (REPO / "app.py").read_text()
    at = _page()
    links = [link.proto.page for link in at.get("page_link")]
    # the current step's link, then one per step in "Show all steps"
    assert links == [Path(s.page).stem for s in (STEPS[0], *STEPS)]  # the page's url path
    for step in STEPS:
        assert f'"{step.page}"' in registered and (REPO / step.page).is_file()
        assert step.tries and 3 <= step.text.count(". ") + 1 <= 6
    assert [s.value for s in at.subheader][1:] == [f"{i + 1}. {s.title}" for i, s in enumerate(STEPS)]


def test_sources_are_cited_by_authors_and_year_and_the_abstracts_note_is_said_once():
    import re

    for step in STEPS:  # "seed 000" is a file name of ours, not a citation
        assert not re.search(r"seed \d{3}", step.source), step.source
    cited = " ".join(s.source for s in STEPS)
    for citation in ("Tang et al. 2023", "Sandor et al. 2020", "Lu et al. 2022", "Cao et al. 2020", "Lin et al. 2020"):
        assert citation in cited
    note = "only the abstracts were available"
    assert any(note in i.value for i in _page().info)
    assert not any(note in i.value for i in _page(tour_step=3).info)


def test_every_step_shows_its_pages_chart(cifar_data_root, monkeypatch):
    import json

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    assert len({s.figure for s in STEPS}) == len(STEPS)  # one chart of its own per step
    for k in range(len(STEPS)):
        at = _page(tour_step=k)
        assert not at.exception
        charts = [c for c in at.get("plotly_chart") if c.proto.id and "tour_fig_current" in c.proto.id]
        (chart,) = charts
        assert json.loads(chart.proto.spec)["data"], STEPS[k].title  # drawn, not empty


def test_a_step_whose_chart_needs_images_says_so_without_them(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    at = _page(tour_step=0)
    assert not at.exception
    assert any("It needs the CIFAR-10 images" in c.value for c in at.caption)
