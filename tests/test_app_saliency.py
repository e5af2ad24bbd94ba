"""AppTest of the Saliency page: per-layer histograms, the threshold preview, the ranking, criterion agreement,
and a clear message instead of a crash without data.

AppTest runs an st.navigation app's page directly after switch_page, without the router and its sidebar, so
each case runs the app once (the sidebar stores the selection), then switches to the page; widgets are set
through session_state before the first run."""
import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from prunekit import conv_layers, load_checkpoint
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT
from tests.apptest_kit import open_page

PAGE = "pages/saliency.py"


def _open(**session) -> AppTest:
    return open_page(PAGE, **session)


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def l1_page() -> AppTest:
    return _open(criterion="l1")


def test_l1_draws_one_histogram_per_conv_layer(l1_page):
    at = l1_page
    assert not at.exception
    names = [c.name for c in conv_layers(load_checkpoint(DEFAULT_CHECKPOINT)[0])]
    assert len(names) == 19  # ResNet-20: the stem, 3 stages x 3 blocks x 2 convs
    small = _charts(at)[0]
    assert [t["name"] for t in small["data"]] == names
    titles = [a["text"] for a in small["layout"]["annotations"]]
    assert titles[:-1] == names and "L1 norm of the weights" in titles[-1]  # then the grid's x title, with units
    assert "Score distribution of every layer (688 filters, 19 conv layers)" in [s.value for s in at.subheader]


def test_threshold_count_matches_a_hand_count(l1_page):
    at = l1_page
    table = at.dataframe[0].value
    layer = at.selectbox(key="sal_layer").value
    threshold = at.slider(key=f"sal_thr_l1_{layer}").value
    layer_scores = table[table["layer"] == layer]["score"].tolist()
    below = sum(s < threshold for s in layer_scores)
    assert 0 < below < len(layer_scores)
    sentence = next(m.value for m in at.markdown if "below the threshold would be pruned" in m.value)
    assert re.search(rf"\*\*{below} of {len(layer_scores)} filters below", sentence), sentence


def test_ranking_table_holds_every_filter(l1_page):
    table = l1_page.dataframe[0].value
    assert len(table) == 688 and list(table.columns) == ["layer", "filter", "score", "rank"]
    conv1 = table[table["layer"] == "conv1"]
    assert sorted(conv1["rank"]) == list(range(1, 17))
    assert conv1.sort_values("rank")["score"].is_monotonic_decreasing


def test_agreement_heatmaps_compare_l1_and_fpgm(l1_page):
    at = l1_page
    assert at.multiselect(key="sal_agree").value == ["l1", "fpgm"]
    heatmaps = [c for c in _charts(at) if c["data"] and c["data"][0]["type"] == "heatmap"]
    assert len(heatmaps) == 2  # Spearman and bottom-30% overlap
    rho = heatmaps[0]["data"][0]
    assert rho["x"] == ["l1 vs fpgm"] and len(rho["y"]) == 19
    stability = _charts(at)[-1]  # weight-only: the epoch-1 checkpoint is scored at once
    assert [t["type"] for t in stability["data"]] == ["bar", "bar"] and len(stability["data"][0]["x"]) == 19


def test_without_data_a_data_driven_criterion_says_what_still_works(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    at = _open(criterion="sfm_entropy")
    assert not at.exception
    warning = " ".join(w.value for w in at.main.warning)
    assert "reads images" in warning and "no cifar10 data" in warning and "l1" in warning
    assert not _charts(at) and not at.dataframe  # nothing drawn from missing scores
    assert at.selectbox(key="sal_criterion").value == "sfm_entropy"  # the page and its menu stay up


def test_a_data_driven_criterion_scores_on_the_button(cifar_data_root, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    at = _open(criterion="sfm_entropy", probe_n=64)
    assert not at.exception and not at.dataframe
    at.button[0].click().run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 688
    assert at.slider(key="sal_thr_sfm_entropy_conv1").label == "Threshold (sfm_entropy: entropy (nats))"


def test_a_rerun_that_changes_no_score_input_computes_nothing(monkeypatch):
    at = _open(criterion="l1", sal_layer="layer1.0.conv1")
    assert not at.exception
    table = at.dataframe[0].value

    def refuse(*args, **kwargs):
        raise AssertionError("scores recomputed on a rerun that did not change the model, criterion or probe")

    monkeypatch.setattr("pages.ui.scoring.score_model", refuse)
    slider = at.slider(key="sal_thr_l1_layer1.0.conv1")
    slider.set_value((slider.min + slider.max) / 2).run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value.equals(table)
    assert at.slider(key="sal_thr_l1_layer1.0.conv1").value == (slider.min + slider.max) / 2


def _chart_titled(at: AppTest, y_title: str) -> dict:
    """The plotly chart whose y axis is titled ``y_title``."""
    return next(s for s in _charts(at) if ((s["layout"].get("yaxis") or {}).get("title") or {}).get("text") == y_title)


def test_a_data_driven_ranking_shows_its_reliability_and_the_noise_floor_beside_the_stability(cifar_data_root,
                                                                                             monkeypatch):
    from prunekit.criteria.probe import ProbeSpec
    from prunekit.analysis.reliability import probe_reliability, summarize

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    at = _open(criterion="hrank", probe_n=128)
    at.button[0].click().run()
    assert not at.exception
    model = load_checkpoint(DEFAULT_CHECKPOINT)[0]
    expected = summarize(probe_reliability(model, "hrank", {}, ProbeSpec("cifar10", 128)))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Reliability (median Spearman)"] == f"{expected['median_spearman']:.2f}"
    assert metrics["Worst layer"] == f"{expected['min_spearman']:.2f}"
    assert any("two disjoint samples of 128 probe images (seeds 0 and 1)" in c.value for c in at.caption)
    reliability = _chart_titled(at, "agreement of two samples")
    assert len(reliability["data"][0]["x"]) == 19
    at.button(key="sal_early_button").click().run()
    assert not at.exception
    stability = _chart_titled(at, "agreement, epoch 1 vs final")
    assert [t["name"] for t in stability["data"]][-1] == "noise floor: two probe samples"
    assert any("black dashes" in c.value for c in at.caption)


def test_a_weight_only_ranking_says_it_needs_no_reliability(l1_page):
    assert any("reliability 1 by construction" in c.value for c in l1_page.caption)


def test_the_entropy_view_shows_the_extreme_filters_with_the_entropy_of_their_bars(cifar_data_root, monkeypatch):
    import math

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    at = _open(criterion="l1", sal_entropy_layer="layer1.0.conv1")
    assert not at.exception
    (fig,) = [c for c in _charts(at) if any("nats" in a.get("text", "") for a in c["layout"].get("annotations", []))]
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    shown = [float(re.search(r"H = ([\d.]+) nats", t).group(1)) for t in titles]
    assert len(shown) == 6 and max(shown[:3]) <= min(shown[3:])  # the 3 lowest on top, the 3 highest below
    for title, bars in zip(titles, fig["data"]):
        p = [v for v in bars["y"] if v > 0] if isinstance(bars["y"], list) else None
        if p is None:  # sent as a typed array
            import base64

            import numpy as np
            p = [v for v in np.frombuffer(base64.b64decode(bars["y"]["bdata"]), bars["y"]["dtype"]) if v > 0]
        by_hand = -sum(v * math.log(v) for v in p)  # the entropy of the drawn histogram, in nats
        assert abs(by_hand - float(re.search(r"H = ([\d.]+)", title).group(1))) < 0.01, title
    assert any("The **entropy** H" in c.value for c in at.caption)


def test_data_put_in_place_while_the_app_runs_is_found_at_the_next_run(cifar_data_root, tmp_path, monkeypatch):
    """A miss is never cached: the entropy view says there are no probe images, the files arrive (as the Model &
    data page says how), and the same server draws the view on the next run."""
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))  # an empty data root
    at = _open(criterion="l1", sal_entropy_layer="layer1.1.conv2")
    assert not at.exception and any("there are none here" in i.value for i in at.info)
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    at = _open(criterion="l1", sal_entropy_layer="layer1.1.conv2")
    assert not at.exception and not any("there are none here" in i.value for i in at.info)
    assert [c for c in _charts(at) if any("nats" in a.get("text", "") for a in c["layout"].get("annotations", []))]
