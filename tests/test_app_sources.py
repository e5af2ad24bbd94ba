"""AppTest: a torchvision or timm model (or the user's own factory) picked in the sidebar, at the data set's input
size, its card saying how its weights were initialised; a model that cannot take the data set is said plainly."""
import textwrap

import pytest

import prunekit.models.source_factory as factories
import prunekit.models.source_torchvision as torchvision_source
from tests.apptest_kit import open_page

TORCHVISION = "A torchvision model"


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def test_a_torchvision_model_at_the_data_sets_size_shows_its_card():
    at = open_page(model_source=TORCHVISION, torchvision_model="torchvision:densenet121")
    assert not at.exception
    assert at.sidebar.number_input(key="input_side").value == 32  # cifar10's image side
    metrics = _metrics(at)
    assert metrics["Architecture"] == "torchvision:densenet121@32"
    assert metrics["Parameters"] == "6.96M" and metrics["Test accuracy"] == "unknown"
    assert any("input 3x32x32" in c.value and "Densenet-121" in c.value for c in at.caption)
    assert [i.value for i in at.info] == ["Weights: random initialisation"]
    assert not at.sidebar.warning  # it takes cifar10's images and classes


def test_pretrained_weights_that_cannot_be_downloaded_say_so_on_the_card(monkeypatch):
    def offline(name):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision_source, "_download_torchvision", offline)
    at = open_page(model_source=TORCHVISION, torchvision_model="torchvision:resnet18", pretrained=True)
    assert not at.exception
    assert _metrics(at)["Architecture"] == "torchvision:resnet18@32"
    assert ("Weights: random initialisation: pretrained weights could not be downloaded (OSError: network is "
            "unreachable)") in [i.value for i in at.info]


def _sidebar_words(at) -> str:
    """The sidebar's warnings, checked free of command-line syntax (the sidebar has boxes, not flags)."""
    words = " ".join(w.value for w in at.sidebar.warning)
    for flag in ("@ suffix", "--checkpoint", "--model", "--replace-head", "replace_head="):
        assert flag not in words, words
    return words


def test_a_size_other_than_the_images_is_said_plainly_in_the_sidebar():
    at = open_page(model_source=TORCHVISION, torchvision_model="torchvision:resnet18", input_side=64)
    assert not at.exception
    assert _metrics(at)["Architecture"] == "torchvision:resnet18@64"
    assert ("torchvision:resnet18@64 expects 64x64 inputs; cifar10 images are 32x32 and are never resized: set "
            "Input size (pixels) in the sidebar to 32.") in _sidebar_words(at)


def test_a_size_the_model_cannot_run_at_names_the_sidebars_box():
    at = open_page(model_source=TORCHVISION, torchvision_model="torchvision:squeezenet1_0", input_side=8)
    assert not at.exception
    assert ("torchvision:squeezenet1_0 does not run on 8x8 inputs: set Input size (pixels) in the sidebar to a size "
            "it takes (224 is the one it was made for).") in _sidebar_words(at)


def test_outputs_other_than_the_classes_name_the_sidebars_box():
    at = open_page(model_source="A registered architecture (untrained)", arch="resnet20", num_classes=100)
    assert not at.exception
    assert ("resnet20 has 100 outputs and cifar10 has 10 classes: its predictions cannot be scored against these "
            "labels (the accuracy would be meaningless). Set Classes in the sidebar to 10, or pick the data set it "
            "was trained on.") in _sidebar_words(at)


def test_a_timm_model_is_listed_and_built():
    at = open_page(model_source="A timm model", timm_model="timm:resnet18")
    assert not at.exception
    assert "timm:regnetx_002" in at.sidebar.selectbox(key="timm_model").options
    assert _metrics(at)["Architecture"] == "timm:resnet18@32"


@pytest.fixture
def factory(tmp_path, monkeypatch):
    """$PRUNEKIT_FACTORY naming a tiny CNN in a module on sys.path (the factory table restored after)."""
    (tmp_path / "prunekit_app_factory.py").write_text(textwrap.dedent('''
        import torch.nn as nn

        def mlp(num_classes: int) -> nn.Module:
            """A two-layer perceptron: no convolutions."""
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, num_classes))

        mlp.input_size = (3, 32, 32)
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(factories, "_FACTORIES", {})
    monkeypatch.setenv(factories.FACTORY_ENV, "prunekit_app_factory:mlp")
    return "factory:prunekit_app_factory:mlp"


def test_the_factory_the_app_was_started_with_is_a_source_and_a_page_that_needs_convs_says_so(factory):
    at = open_page(model_source="Your own model (--factory)")
    assert not at.exception
    assert _metrics(at)["Architecture"] == factory and not at.sidebar.warning
    at = open_page("pages/plan.py", model_source="Your own model (--factory)")
    assert not at.exception
    assert any(f"{factory} has no convolutions: this page scores and prunes conv filters" in i.value for i in at.info)


def test_the_convs_that_cannot_be_pruned_are_counted_and_listed_with_why():
    # timm's ReXNet-1.0: its partial residuals slice the channels at sizes written in the code, so those convs keep
    # every filter; a wall of reasons used to open the Plan page, now a count and a table
    at = open_page("pages/plan.py", model_source="A timm model", timm_model="timm:rexnet_100")
    assert not at.exception
    label = next(e.label for e in at.expander if e.label.startswith("Not prunable here"))
    frame = next(f.value for f in at.dataframe if list(f.value.columns) == ["conv", "why"])
    assert label == f"Not prunable here: {len(frame)} convs keep every filter (why)"
    why = frame.set_index("conv")["why"]
    assert why["features.1.conv_pwl.conv"].startswith("its channels go through a channel slice (x[:, a:b]) after "
                                                      "features.2.conv_pwl.bn, whose sizes are written")  # by hand
    assert not [c for c in at.caption if "Not prunable here" in c.value]  # the old run-on caption
