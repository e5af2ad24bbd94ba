"""AppTest of the Correlations page on the bundled ResNet-20: the clickable matrix has one square per pair of
filters, and a pair picked with the fallback inputs shows both filters with their correlation."""
import base64
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from prunekit import load_checkpoint
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT
from prunekit.analysis.views import weight_correlation
from tests.apptest_kit import open_page

LAYER = "layer1.0.conv1"  # 16 filters


def _page(**session) -> AppTest:
    return open_page("pages/correlations.py", **{"criterion": "l1", "probe_n": 64, **session})


def _matrix_trace(at) -> dict:
    trace = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    x = trace["x"]
    if isinstance(x, dict):  # numpy arrays travel as base64 typed arrays
        trace["x"] = np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"])
    return trace


def test_the_matrix_has_one_square_per_pair_and_a_picked_pair_shows_both_filters():
    at = _page(corr_layer=LAYER, corr_source="weights", **{f"corr_i_{LAYER}": 3, f"corr_j_{LAYER}": 7})
    assert not at.exception
    trace = _matrix_trace(at)
    assert trace["type"] == "scatter" and trace["marker"]["symbol"] == "square" and len(trace["x"]) == 16 * 16
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    expected = weight_correlation(model, LAYER).matrix[3, 7]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["|r| between them"] == f"{expected:.3f}"
    assert "Score of filter 3 (l1)" in metrics and "Score of filter 7 (l1)" in metrics
    assert "Filter 3 and filter 7 of layer1.0.conv1" in [s.value for s in at.subheader]
    assert {"**Filter 3**", "**Filter 7**"} <= {m.value for m in at.markdown}


def test_the_pair_defaults_to_the_most_correlated_one_in_the_table():
    at = _page(corr_layer=LAYER, corr_source="weights")
    assert not at.exception
    top = at.dataframe[0].value
    assert len(top) == 10 and top["|r|"].is_monotonic_decreasing and (top["filter i"] < top["filter j"]).all()
    i, j = int(top.iloc[0]["filter i"]), int(top.iloc[0]["filter j"])
    assert f"Filter {i} and filter {j} of {LAYER}" in [s.value for s in at.subheader]
    assert {m.label: m.value for m in at.metric}["|r| between them"] == f"{top.iloc[0]['|r|']:.3f}"


def test_feature_map_correlations_without_data_are_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    at = _page(corr_layer=LAYER, corr_source="feature maps (probe images)")
    assert not at.exception
    assert any("no cifar10 data" in w.value for w in at.warning)


def test_feature_map_correlations_and_the_pair_maps_on_a_test_image(cifar_data_root, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    at = _page(corr_layer=LAYER, corr_source="feature maps (probe images)", corr_image=5,
               **{f"corr_i_{LAYER}": 0, f"corr_j_{LAYER}": 1})
    assert not at.exception
    assert len(_matrix_trace(at)["x"]) == 16 * 16
    titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text") for c in at.get("plotly_chart")]
    assert titles.count("feature map on test image 5") == 2  # one per filter of the pair
    r = float({m.label: m.value for m in at.metric}["|r| between them"])
    assert 0.0 <= r <= 1.0
