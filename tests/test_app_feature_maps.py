"""AppTest of the Feature maps page: one tile per filter, the plan's removed filters marked, a missing data set
or a bad image as a message, never an exception. (AppTest cannot upload: the image reader is tested directly in
tests/test_images.py.)"""
import json

import pytest
from streamlit.testing.v1 import AppTest

from prunekit.pruning.ratios import kept_channels
from tests.apptest_kit import open_page

PAGE = "pages/feature_maps.py"


def _open(**session) -> AppTest:
    return open_page(PAGE, **session)


def _grids(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _marks(fig: dict) -> int:
    return sum(s.get("line", {}).get("color") == "#d62728" for s in fig["layout"].get("shapes", []))


@pytest.fixture
def with_data(cifar_data_root, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))


@pytest.mark.parametrize("layer, filters, ratio", [("layer3.0.conv1", 64, 0.25), ("layer2.1.conv1", 32, 0.6)])
def test_one_tile_per_filter_and_the_plan_marked(with_data, layer, filters, ratio):
    at = _open(criterion="l1", fm_layer=layer, plan={layer: ratio})
    assert not at.exception
    original, pruned = _grids(at)
    removed = filters - kept_channels(filters, ratio)  # int(filters * (1 - ratio)) kept, as Torch-Pruning
    assert len(original["layout"]["annotations"]) == filters
    assert _marks(original) == removed
    assert sum("✕" in a["text"] for a in original["layout"]["annotations"]) == removed
    assert len(pruned["layout"]["annotations"]) == filters - removed and _marks(pruned) == 0
    assert f"{removed} of {filters} would go with the plan." in " ".join(m.value for m in at.markdown)
    assert any("The plan" in x.value for x in at.success)


def test_without_a_plan_the_preview_ratio_marks_this_group(with_data):
    at = _open(criterion="l1", fm_layer="conv1")
    assert not at.exception
    ratio = at.slider(key="fm_preview_ratio").value
    assert ratio == 0.3
    assert _marks(_grids(at)[0]) == 16 - int(16 * 0.7)
    assert "plan" not in at.session_state or not at.session_state["plan"]  # a preview never writes the plan
    # said as a preview, never as "the plan" (the page said "5 of 16 filters are removed by the plan" with none)
    text = " ".join(m.value for m in at.markdown)
    assert "5 of 16 would go with a preview ratio of 0.30 (no plan is set)." in text and "by the plan" not in text
    assert any("Preview only" in i.value for i in at.info)


def test_tiles_are_readable_on_a_projector(with_data):
    grid = _grids(_open(criterion="l1", fm_layer="layer1.0.conv1"))[0]
    assert {a["font"]["size"] for a in grid["layout"]["annotations"]} == {13}
    heat = grid["data"][0]
    assert heat.get("showscale", True) and heat["colorbar"]["ticktext"] == ["its min", "its max"]


def test_tiles_follow_the_score_order(with_data):
    at = _open(criterion="l1", fm_layer="layer1.0.conv1")
    labels = [a["text"] for a in _grids(at)[0]["layout"]["annotations"]]
    shown = [float(t.split()[1]) for t in labels]  # "#index score"
    assert shown == sorted(shown, reverse=True)


def test_without_data_the_page_explains_and_falls_back_to_l1(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    at = _open(criterion="sfm_entropy")
    assert not at.exception
    assert any("No cifar10 test split" in w.value for w in at.main.warning)
    assert any("ranked by l1 instead" in i.value for i in at.main.info)
