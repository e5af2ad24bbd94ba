"""Models beyond the registry (torchvision:, timm:, factory:, with an @ input size), pretrained weights and their
fallback, and the check that a model takes a data set (input size, head) before any work."""
import sys
import textwrap

import pytest
import torch

import prunekit.models.source_factory as factories
import prunekit.models.source_torchvision as source_torchvision
from prunekit.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from prunekit.cli import build_parser, main
from prunekit.cli.common import load_model
from prunekit.data import Splits
from prunekit.errors import UnknownNameError, UserError
from prunekit.runs.finetune import finetune_config, finetune_run
from prunekit.models.fits import check_model_data
from prunekit.models.heads import replace_head
from prunekit.models.zoo import build_model, count_params, create_model, list_models, model_info
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset
from prunekit.pruning.prune import prune_model
from prunekit.runs.records import MODEL_FILE, prune_run, read_manifest
from prunekit.models.source_factory import enable_factory
from prunekit.models.sources import model_catalog, parse_spec
from prunekit.pruning.structure import structure
from prunekit.training.train import TrainConfig, train_new
from tests.conftest import tiny_arrays

RESNET18_7_CLASSES = 11_180_103  # torchvision's (and timm's) ResNet-18: 11,689,512 with its 1000-class fc


@pytest.fixture
def no_factories(monkeypatch):
    """An empty factory table and no $PRUNEKIT_FACTORY for the test (both restored after)."""
    monkeypatch.setattr(factories, "_FACTORIES", {})
    monkeypatch.delenv(factories.FACTORY_ENV, raising=False)


def _factory_module(tmp_path, monkeypatch, name: str) -> str:
    """A module ``name`` in tmp_path (on sys.path) with ``tiny(num_classes)``: conv-BN-ReLU, pool, linear, 16x16."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent('''
        import torch.nn as nn

        def tiny(num_classes: int) -> nn.Module:
            """A tiny CNN for tests."""
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

        tiny.input_size = (3, 16, 16)
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}:tiny"


@pytest.mark.parametrize("spec", ["torchvision:resnet18@32", "timm:resnet18@32"])
def test_torchvision_and_timm_models_build_with_their_classes(spec):
    model = build_model(spec, num_classes=7).eval()
    assert count_params(model) == RESNET18_7_CLASSES
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    info = model_info(spec)
    assert info.source == info.family == spec.split(":")[0] and "ResNet-18" in info.description


def test_the_input_size_suffix_reaches_model_info_and_the_defaults_without_it():
    assert model_info("torchvision:densenet121@32").input_size == (3, 32, 32)
    assert model_info("torchvision:densenet121@64x48").input_size == (3, 64, 48)
    assert model_info("torchvision:densenet121").input_size == (3, 224, 224)
    assert model_info("timm:inception_v3").input_size == (3, 299, 299)  # timm's pretrained config
    assert model_info("resnet18@32").input_size == (3, 32, 32) and model_info("resnet18").input_size == (3, 224, 224)
    assert str(parse_spec("timm:resnet18@64x64")) == "timm:resnet18@64"
    assert list_models() == sorted(list_models()) and "torchvision:resnet18" not in list_models()
    assert "torchvision:densenet121" in model_catalog("torchvision") and "timm:regnetx_002" in model_catalog("timm")


@pytest.mark.parametrize("name, words", [
    ("torchvision:densnet121", "unknown torchvision model 'densnet121'; did you mean torchvision:densenet121"),
    ("timm:regnetx_02", "unknown timm model 'regnetx_02'; did you mean timm:regnetx_032, timm:regnetx_002"),
    ("densenet121", "(did you mean torchvision:densenet121, timm:densenet121"),
    ("resnt20", "unknown model 'resnt20'; known models: mobilenet_v2, "),
    ("keras:resnet", "unknown model source 'keras' in 'keras:resnet'; sources: torchvision, timm, factory"),
])
def test_unknown_names_suggest_the_close_ones(name, words):
    with pytest.raises(UnknownNameError) as err:
        model_info(name)
    assert words in str(err.value)


def test_a_malformed_size_is_a_user_error():
    with pytest.raises(UserError, match=r"after '@' must be <side> or <H>x<W> .*got 'big'"):
        model_info("torchvision:resnet18@big")


def test_a_factory_builds_only_once_enabled_and_a_header_never_imports_it(tmp_path, monkeypatch, no_factories):
    name = _factory_module(tmp_path, monkeypatch, "prunekit_test_factory_a")
    with pytest.raises(UnknownNameError, match=f"run the command with --factory {name}"):
        model_info(f"factory:{name}")
    path = tmp_path / "mine.safetensors"
    save_checkpoint(torch.nn.Linear(2, 2), path, arch=f"factory:{name}", num_classes=10)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith("mine.safetensors: the model factory:") and f"--factory {name}" in message
    assert f"PRUNEKIT_FACTORY={name}" in message and "streamlit run app.py -- --factory" in message
    assert "prunekit_test_factory_a" not in sys.modules  # the file's header imported nothing

    enable_factory(name)
    info = model_info(f"factory:{name}")
    assert info.input_size == (3, 16, 16) and info.description == "factory: A tiny CNN for tests"
    assert model_info(f"factory:{name}@8").input_size == (3, 8, 8)
    built = create_model(f"factory:{name}", num_classes=5, pretrained=True)
    assert built.model[-1].out_features == 5
    assert built.weights == f"random initialisation: factory:{name} takes no pretrained argument"
    assert model_catalog("factory") == [f"factory:{name}"]


def test_factories_come_from_the_flag_and_the_environment(tmp_path, monkeypatch, no_factories, capsys):
    first = _factory_module(tmp_path, monkeypatch, "prunekit_test_factory_b")
    second = _factory_module(tmp_path, monkeypatch, "prunekit_test_factory_c")
    monkeypatch.setenv(factories.FACTORY_ENV, second)
    assert main(["models", "--source", "factory", "--factory", first]) == 0
    assert capsys.readouterr().out.split() == [f"factory:{first}", f"factory:{second}"]
    assert sorted(factories.os.environ[factories.FACTORY_ENV].split(",")) == [first, second]  # the workers inherit them
    assert main(["models", "--factory", "no_such_module_xyz:f"]) == 2
    assert "cannot import no_such_module_xyz" in capsys.readouterr().err


def test_a_failed_download_falls_back_to_random_weights_and_says_why(monkeypatch):
    def offline(name):
        raise OSError("network is unreachable")

    monkeypatch.setattr(source_torchvision, "_download_torchvision", offline)
    built = create_model("torchvision:resnet18@32", num_classes=10, pretrained=True)
    assert built.weights == ("random initialisation: pretrained weights could not be downloaded (OSError: network is "
                             "unreachable)")
    assert built.model.fc.out_features == 10
    with pytest.warns(UserWarning, match="could not be downloaded"):
        build_model("torchvision:resnet18@32", num_classes=10, pretrained=True)
    assert create_model("torchvision:resnet18@32").weights == "random initialisation"


def test_downloaded_weights_are_kept_and_the_head_replaced(monkeypatch):
    import torchvision

    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18()  # stands for the downloaded ImageNet model (1000 classes)
    monkeypatch.setattr(source_torchvision, "_download_torchvision", lambda name: imagenet)
    built = create_model("torchvision:resnet18@32", num_classes=10, pretrained=True)
    assert built.weights == "pretrained: torchvision ResNet18_Weights.IMAGENET1K_V1; its 10-class head is new (random)"
    assert built.model.fc.out_features == 10 and built.model.conv1.weight is imagenet.conv1.weight


def test_timm_pretrained_falls_back_too(monkeypatch):
    import timm

    real = timm.create_model

    def offline_when_pretrained(name, pretrained=False, **kwargs):
        if pretrained:
            raise RuntimeError("Hugging Face Hub is unreachable")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_when_pretrained)
    built = create_model("timm:resnet18@32", num_classes=3, pretrained=True)
    assert built.weights.startswith("random initialisation: pretrained weights could not be downloaded "
                                    "(RuntimeError: Hugging Face Hub is unreachable)")


def test_a_model_for_other_images_is_refused_naming_the_right_spec():
    with pytest.raises(UserError) as err:
        check_model_data(None, "torchvision:densenet121", "cifar10", labels=False)
    assert str(err.value).startswith("torchvision:densenet121 expects 224x224 inputs; cifar10 images are 32x32: use "
                                     "torchvision:densenet121@32 ")
    check_model_data(None, "torchvision:densenet121@32", "cifar10", labels=False)  # fits: no error
    with pytest.raises(UserError, match="resnet18 expects 224x224 inputs; tiny images are 32x32: use resnet18@32"):
        train_new("resnet18", Splits(tiny_arrays(8), tiny_arrays(8), "tiny", list("0123456789")), TrainConfig(1),
                  "unused", device="cpu")


def test_a_head_of_other_classes_is_refused_with_both_numbers(tmp_path):
    model = build_model("resnet20", num_classes=100).eval()
    with pytest.raises(UserError) as err:
        check_model_data(model, "resnet20", tiny_arrays(16), labels=True)
    assert "resnet20 has 100 outputs and tiny has 10 classes" in str(err.value)
    assert "--replace-head" in str(err.value)
    plan = Plan("resnet20", {"layer1.0.conv1": 0.5})
    with pytest.raises(UserError, match="has 100 outputs and tiny has 10 classes"):
        prune_run(model, plan, {}, arch="resnet20", num_classes=100, input_size=(3, 32, 32), root=tmp_path / "runs",
                  data=tiny_arrays(16), latency_batches=())
    assert not (tmp_path / "runs").exists()  # refused before a run was written


def test_replace_head_swaps_the_last_classifier_layer():
    model = build_model("vgg16_bn", num_classes=100).eval()
    assert replace_head(model, 10, (3, 32, 32)) == "classifier.3"
    assert model.classifier[3].out_features == 10 and model.classifier[0].out_features == 512
    squeeze = build_model("torchvision:squeezenet1_1@64", num_classes=100).eval()
    assert replace_head(squeeze, 10, (3, 64, 64)) == "classifier.1"  # a 1x1 conv makes its logits
    with torch.no_grad():
        assert squeeze(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_the_command_line_refuses_a_head_of_other_classes_and_replaces_it_when_asked(tmp_path, capsys):
    path = save_checkpoint(build_model("resnet20", num_classes=100), tmp_path / "c100.safetensors", arch="resnet20",
                           num_classes=100)
    code = main(["sensitivity", "--checkpoint", str(path), "--data", "cifar10", "--out", str(tmp_path / "s.csv")])
    assert code == 2 and "error: resnet20 has 100 outputs and cifar10 has 10 classes" in capsys.readouterr().err
    args = build_parser().parse_args(["sensitivity", "--checkpoint", str(path), "--out", "x.csv", "--replace-head",
                                      "--device", "cpu"])
    model, arch, classes, notes = load_model(args)
    assert (arch, classes) == ("resnet20", 10) and model.fc.out_features == 10
    assert notes == {"head": {"replaced": "fc", "outputs_before": 100, "classes": 10, "data": "cifar10"}}


def test_prune_records_a_replaced_head_in_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    path = save_checkpoint(build_model("resnet20", num_classes=100), tmp_path / "c100.safetensors", arch="resnet20",
                           num_classes=100)
    assert main(["plan", "--model", "resnet20", "--preset", "uniform", "--ratio", "0.5", "--out",
                 str(tmp_path / "plan.json")]) == 0
    assert main(["prune", "--checkpoint", str(path), "--plan", str(tmp_path / "plan.json"), "--n", "0",
                 "--no-latency", "--no-recalibrate", "--replace-head", "--device", "cpu", "--runs",
                 str(tmp_path / "runs")]) == 0
    assert "note: replaced the 100-output head (fc) by a fresh 10-class one for cifar10" in capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs").iterdir()
    model = read_manifest(run_dir)["model"]
    assert model["head"] == {"replaced": "fc", "outputs_before": 100, "classes": 10, "data": "cifar10"}
    assert model["num_classes"] == 10 and load_checkpoint(run_dir / MODEL_FILE)[0].fc.out_features == 10


def test_the_command_line_refuses_a_224_model_on_32x32_images_before_reading_them(tmp_path, capsys):
    code = main(["score", "--model", "torchvision:resnet18", "--criterion", "sfm_entropy", "--data-root",
                 str(tmp_path / "nothing-here"), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "torchvision:resnet18 expects 224x224 inputs; cifar10 images are 32x32: use " \
                         "torchvision:resnet18@32" in err
    assert main(["score", "--model", "torchvision:resnt18@32", "--criterion", "l1", "--out", "x.csv"]) == 2
    assert "did you mean torchvision:resnet18" in capsys.readouterr().err


def test_finetuning_with_a_replaced_head_is_recorded(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=100).eval()
    scores = {n: m.weight.detach().abs().sum((1, 2, 3)) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    plan = get_preset("uniform").make(structure(model, (3, 32, 32)), "resnet20", value=0.5)
    run = prune_run(model, plan, scores, arch="resnet20", num_classes=100, input_size=(3, 32, 32), root=tmp_path,
                    latency_batches=())
    splits = Splits(tiny_arrays(16), tiny_arrays(8), "tiny", list("0123456789"))
    config = finetune_config(1, batch_size=8, distill_alpha=0.0)
    with pytest.raises(UserError, match="resnet20 has 100 outputs and tiny has 10 classes"):
        finetune_run(run.path, config, data=splits, device="cpu", progress=False)
    finetune_run(run.path, config, data=splits, device="cpu", progress=False, replace_head=True)
    entry = read_manifest(run.path)["finetune"]
    assert entry["head"] == {"replaced": "fc", "outputs_before": 100, "classes": 10, "data": "tiny"}
    tuned, header = load_checkpoint(run.path / entry["model"])
    assert header["num_classes"] == 10 and tuned.fc.out_features == 10
    assert load_checkpoint(run.path / MODEL_FILE)[0].fc.out_features == 100  # the pruned model is left as it was


@pytest.mark.parametrize("spec", ["torchvision:mobilenet_v3_small@64", "timm:resnet18@32"])
def test_a_pruned_source_model_saves_with_its_spec_and_loads_back(spec, tmp_path):
    torch.manual_seed(0)
    model = build_model(spec, num_classes=10).eval()
    size = model_info(spec).input_size
    plan = get_preset("uniform").make(structure(model, size), spec, value=0.3)
    scores = {n: m.weight.detach().abs().flatten(1).sum(1) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    pruned, _ = prune_model(model, plan.ratios, scores, size)
    assert count_params(pruned) < count_params(model)
    path = save_checkpoint(pruned, tmp_path / "pruned.safetensors", arch=spec, num_classes=10)
    loaded, header = load_checkpoint(path)
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert header["arch"] == spec and torch.allclose(loaded(x), pruned.eval()(x), atol=1e-5)


def test_models_lists_a_source_searched(capsys):
    assert main(["models", "--source", "timm", "--search", "REGNETX_00"]) == 0
    assert capsys.readouterr().out.split() == ["timm:regnetx_002", "timm:regnetx_004", "timm:regnetx_004_tv",
                                               "timm:regnetx_006", "timm:regnetx_008"]
    assert main(["models"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["mobilenet_v2", "3x224x224"]


@pytest.mark.data
def test_score_plan_and_prune_a_torchvision_model_on_cifar10(cifar_data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    common = ["--model", "torchvision:resnet18@32", "--data-root", str(cifar_data_root), "--device", "cpu"]
    assert main(["score", *common, "--criterion", "sfm_entropy", "--n", "128", "--no-reliability",
                 "--out", str(tmp_path / "scores.csv")]) == 0
    assert main(["plan", *common, "--preset", "uniform", "--ratio", "0.3", "--out", str(tmp_path / "plan.json")]) == 0
    assert main(["prune", *common, "--plan", str(tmp_path / "plan.json"), "--n", "200", "--no-latency",
                 "--no-recalibrate", "--runs", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    manifest = read_manifest(run_dir)
    assert manifest["model"]["arch"] == "torchvision:resnet18@32" and manifest["model"]["input_size"] == [3, 32, 32]
    assert manifest["model"]["weights"] == "random initialisation" and manifest["accuracy"]["pruned"] is not None
    model, header = load_checkpoint(run_dir / MODEL_FILE)
    assert header["arch"] == "torchvision:resnet18@32" and count_params(model) < RESNET18_7_CLASSES
