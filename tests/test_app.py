"""AppTest: the dashboard opens on the bundled default, and stays useful without data.

Widgets are set through session_state before the run: AppTest loses the sidebar of an st.navigation app
on a rerun (Streamlit 1.67), so each case starts a fresh app with its choices in place."""
import pytest
from streamlit.testing.v1 import AppTest

from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, read_checkpoint
from tests.apptest_kit import open_page


def _run(**session) -> AppTest:
    return open_page(**session)


def _metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def test_opens_on_the_default_model_card():
    assert DEFAULT_CHECKPOINT.exists(), "assets/ must ship the default checkpoint"
    at = _run()
    assert not at.exception
    metrics = _metrics(at)
    assert metrics["Architecture"] == "resnet20"
    assert metrics["Parameters"] == "0.27M"
    assert metrics["MACs / image"] == "40.55M"
    accuracy = float(metrics["Test accuracy"].rstrip("%"))
    assert 85.0 <= accuracy <= 100.0
    assert any("ResNet-20" in s.value for s in at.subheader)
    # why the Plan page's "before" differs: this one is on the whole test split, theirs on a subset they name
    help_text = next(m.proto.help for m in at.metric if m.label == "Test accuracy")
    assert "whole cifar10 test split" in help_text and "seeded subset" in help_text
    # the checkpoint's meta says how its training started: the card never calls a trained model's weights random
    header = read_checkpoint(DEFAULT_CHECKPOINT)[1]["meta"]
    assert [i.value for i in at.info] == [f"Weights: trained {header['epochs']} epochs on cifar10, starting from "
                                          "random initialisation"]


def test_without_data_the_page_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    at = _run()
    assert not at.exception
    warning = " ".join(w.value for w in at.main.warning)
    assert "not in the data root" in warning and str(tmp_path) in warning and "PRUNEKIT_DATA" in warning
    assert any(str(tmp_path) in e.value for e in at.sidebar.error)
    assert "What works without data" in " ".join(m.value for m in at.markdown)
    assert _metrics(at)["Parameters"] == "0.27M"  # the model card still shows


def test_a_registry_model_shows_its_own_card():
    at = _run(model_source="A registered architecture (untrained)", arch="vgg16_bn")
    assert at.sidebar.selectbox(key="arch").value == "vgg16_bn"
    assert not at.exception
    metrics = _metrics(at)
    assert metrics["Parameters"] == "14.99M" and metrics["Test accuracy"] == "unknown"


@pytest.mark.parametrize("dataset", ["cifar100", "mnist"])
def test_switching_to_a_missing_data_set_is_a_message_not_a_crash(dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    at = _run(dataset=dataset)
    assert not at.exception
    assert any(dataset in e.value for e in at.sidebar.error)


def test_a_page_that_fails_shows_a_message_not_a_traceback(monkeypatch):
    monkeypatch.delenv("PRUNEKIT_APP_RAISE")
    monkeypatch.setattr("prunekit.model_info", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    at = _run()
    assert not at.exception
    assert any("unexpected problem: RuntimeError: boom" in e.value and "Nothing was lost" in e.value
               for e in at.error)
