"""AppTest: the Plan page's search view on the bundled ResNet-20: the preset menu leaves the search to its own view,
Search runs it in the background with the edited plan placed among the candidates, the final chart marks the
chosen plan and the budget, and "Load into the editor" makes the searched plan the one the sliders edit, recorded
as the search's."""
import json

from pages.ui.search_view import RUNNING
from pages.ui.state import CRITERION, PLAN
from prunekit.pruning.structure import estimate, structure
from tests.test_app_plan import _plan_page, _sliders, default  # noqa: F401  (the module fixture)

PRESET = "plan_preset"  # pages/plan.py's session key of how the plan was made


def _search_spec(at) -> dict:
    charts = [c for c in at.get("plotly_chart") if "Accuracy by candidate" in c.proto.spec]
    assert charts, "no search chart drawn"
    return json.loads(charts[-1].proto.spec)


def test_search_then_load_the_chosen_plan_into_the_editor(default, cifar_data_root, monkeypatch):  # noqa: F811
    model, struct = default
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    yours = {"conv1": 0.3, "layer3.1.conv1": 0.5}
    at = _plan_page(**{CRITERION: "l1", PLAN: yours}, search_target=0.4, search_candidates=3,
                    search_seconds=3600.0, search_seed=5)
    assert "search" not in at.selectbox(key="preset_kind").options  # the menu's presets are instant
    at.button(key="search_go").click()
    at.run()
    assert not at.exception
    run = at.session_state[RUNNING]
    run.thread.join(timeout=600)  # the search's own thread: waited on, not slept on
    assert run.done and run.error is None, run.error
    at.run()
    assert not at.exception
    found = run.plan.preset["search"]
    assert found["judged"] == len(run.candidates) == 3 and found["seed"] == 5
    assert all(c.reached >= 0.4 for c in run.candidates)
    assert run.yours[0] == estimate(struct, yours).macs_reduction  # the edited plan, placed on the same axes
    assert any("Searched 3 candidates" in s.value for s in at.success)
    spec = _search_spec(at)
    names = {t.get("name") for t in spec["data"]}
    assert {"presets' plans", "chosen", "your plan", "best so far"} <= names
    assert any(s.get("type") == "line" and s.get("x0") == 40 for s in spec["layout"]["shapes"])  # the budget
    at.button(key="search_load").click()
    at.run()
    assert not at.exception
    assert {k: v for k, v in at.session_state[PLAN].items() if v > 0} == run.plan.ratios
    assert at.session_state[PRESET]["name"] == "search"
    sliders = _sliders(at)
    assert all(sliders[root].value == ratio for root, ratio in run.plan.ratios.items())
    assert estimate(structure(model, (3, 32, 32)), at.session_state[PLAN]).macs_reduction >= 0.4


def test_a_run_of_a_searched_plan_says_so_on_the_compare_page(tmp_path, monkeypatch):
    from prunekit.runs.records import Run, runs_root
    from tests.apptest_kit import open_page
    from tests.test_app_compare import _run

    monkeypatch.setenv("PRUNEKIT_RUNS", str(tmp_path / "runs"))
    _run(tmp_path / "runs", "l1", 20e6, 80.0)  # a uniform run beside it
    searched = _run(tmp_path / "runs", "l1", 30e6, 85.0)
    run = Run.open(runs_root() / searched)
    run.update(plan={**run.manifest["plan"], "preset": {
        "name": "search", "target": 0.4, "by": "latency", "method": "evolution", "seed": 2,
        "search": {"judged": 48, "method": "evolution", "seed": 2, "accuracy": 61.3, "best": 17}}},
        latency_budget={"runtime": "onnxruntime", "batch": 1, "target": 0.4, "predicted_ms": 0.5, "before_ms": 0.8,
                        "measured_ms": 0.52, "reached": 0.35})
    at = open_page("pages/compare.py", compare_run=searched)
    assert not at.exception
    assert any("Searched plan: the best of 48 candidates (evolution, seed 2" in i.value for i in at.info)
    assert any("predicted 0.50 ms, measured 0.52 ms (from 0.80 ms: 35.0% removed)" in c.value for c in at.caption)


def test_cancel_stops_the_search_with_the_best_found_so_far(default, cifar_data_root, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    at = _plan_page(**{CRITERION: "l1"}, search_candidates=200, search_seconds=3600.0, search_seed=1)
    at.button(key="search_go").click()
    at.run()
    run = at.session_state[RUNNING]
    while not run.candidates and not run.done:  # until the first candidate is judged
        run.thread.join(timeout=0.1)
    at.button(key="search_cancel").click()
    at.run()
    run.thread.join(timeout=600)
    assert run.done and run.error is None, run.error
    at.run()
    assert not at.exception
    found = run.plan.preset["search"]
    assert found["stopped"] == "cancelled" and 1 <= found["judged"] < 200
    assert run.plan.ratios == max(run.candidates, key=lambda c: c.score).ratios
    assert any("stopped: it was cancelled" in s.value for s in at.success)
