import json
import math

import pytest
import torch

from prunekit.data import DeviceLoader
from prunekit.errors import UserError
from prunekit.models.metrics import evaluate
from prunekit.models.zoo import build_model
from prunekit.training.train import (
    MEMORY_FORMAT,
    START_FILE,
    TrainConfig,
    TrainingDivergedError,
    fit,
    lr_factor,
    start_point,
    uses_bf16,
)
from tests.conftest import tiny_arrays


def test_lr_schedules_at_known_points():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(60, 100, 0, "step") == pytest.approx(0.1)
    assert lr_factor(80, 100, 0, "step") == pytest.approx(0.01)
    assert lr_factor(50, 100, 0, "onecycle") == pytest.approx(0.5)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError):
        TrainConfig(lr=-1)


def _loaders(seed=0):
    data = tiny_arrays(64, classes=2)
    data.images[data.labels == 1] //= 4  # a learnable difference: class 1 is darker
    return DeviceLoader(data, 16, train=True, seed=seed), DeviceLoader(data, 32, train=False)


def test_a_tiny_model_learns_and_writes_its_files(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=2)
    rows = fit(model, *_loaders(), TrainConfig(epochs=4, lr=0.05, warmup_epochs=0), tmp_path, arch="resnet20",
               num_classes=2, progress=False)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    files = {p.name for p in tmp_path.iterdir()}
    assert {"epoch001.safetensors", "model.safetensors", "state.pt", "metrics.jsonl"} <= files
    assert [json.loads(x)["epoch"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # every file written whole, renamed


def test_the_model_as_it_starts_is_epoch_0_and_a_resume_keeps_it(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=2)
    _, test = _loaders()
    before = evaluate(model, test)  # the untrained model on the same test batches
    with pytest.raises(_Stop):
        fit(model, *_loaders(), TrainConfig(epochs=2, lr=0.05, warmup_epochs=0), tmp_path, arch="resnet20",
            num_classes=2, progress=False, on_epoch=lambda row: _stop_after(row, 1))
    start = start_point(tmp_path)
    # the model trains in channels_last: the same sums in another order, so the loss agrees to float precision
    assert start == {"epoch": 0, "test_loss": pytest.approx(before["loss"], rel=1e-5),
                     "test_accuracy": before["accuracy"]}
    (tmp_path / START_FILE).write_text(json.dumps({**start, "test_accuracy": -1.0}))  # a resume must not redo it
    fit(model, *_loaders(), TrainConfig(epochs=2, lr=0.05, warmup_epochs=0), tmp_path, arch="resnet20",
        num_classes=2, progress=False)
    assert start_point(tmp_path)["test_accuracy"] == -1.0
    assert start_point(tmp_path / "nowhere") is None


def _channels_last_seen(model) -> list[bool]:
    """Filled while ``model`` trains: for each training forward, whether its first BatchNorm's input (the first
    conv's output) was in channels_last (and not also plain NCHW)."""
    seen = []

    def record(module, inputs, output):
        if module.training:
            x = inputs[0]
            seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

    model.bn1.register_forward_hook(record)
    return seen


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    config = TrainConfig(epochs=3, lr=0.05, warmup_epochs=0, seed=1)
    torch.manual_seed(0)
    straight = build_model("resnet20", num_classes=2)
    seen = _channels_last_seen(straight)
    fit(straight, *_loaders(), config, tmp_path / "a", arch="resnet20", num_classes=2, progress=False)
    assert MEMORY_FORMAT == torch.channels_last and len(seen) == 12 and all(seen)  # on the CPU too: 3 x 4 steps
    convs = [m for m in straight.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()
               for m in convs)

    torch.manual_seed(0)
    interrupted = build_model("resnet20", num_classes=2)
    with pytest.raises(_Stop):  # "killed" right after epoch 2 was saved
        fit(interrupted, *_loaders(), config, tmp_path / "b", arch="resnet20", num_classes=2, progress=False,
            on_epoch=lambda row: _stop_after(row, 2))
    resumed = build_model("resnet20", num_classes=2)  # fresh weights: everything must come from the state
    rows = fit(resumed, *_loaders(), config, tmp_path / "b", arch="resnet20", num_classes=2, progress=False)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


class _Stop(Exception):
    pass


def _stop_after(row, epoch):
    if row["epoch"] == epoch:
        raise _Stop


def test_doconv_trains_saves_folded_plain_convs_and_resumes(tmp_path):
    import copy

    from prunekit.models.checkpoints import load_checkpoint
    from prunekit.models.doconv import DOConv2d

    data = tiny_arrays(32, classes=2)
    loaders = lambda: (DeviceLoader(data, 16, train=True, seed=0), DeviceLoader(data, 32, train=False))
    config = TrainConfig(epochs=2, lr=0.05, warmup_epochs=0, seed=1, doconv=True)
    torch.manual_seed(0)
    straight = build_model("resnet20", num_classes=2)
    trained = {}  # epoch -> a copy of the over-parameterized model as that epoch left it
    seen = _channels_last_seen(straight)
    fit(straight, *loaders(), config, tmp_path / "a", arch="resnet20", num_classes=2, progress=False,
        on_epoch=lambda row: trained.update({row["epoch"]: copy.deepcopy(straight).eval()}))
    assert len(seen) == 4 and all(seen)  # the DO-Convs trained on channels_last batches
    assert any(isinstance(m, DOConv2d) for m in trained[1].modules())
    assert not any(isinstance(m, DOConv2d) for m in straight.modules())  # handed back folded
    assert any(k.endswith(".D") for k in torch.load(tmp_path / "a" / "state.pt", weights_only=True)["model"])
    x = torch.randn(2, 3, 32, 32)
    for file, epoch in (("epoch001.safetensors", 1), ("model.safetensors", 2)):
        plain, header = load_checkpoint(tmp_path / "a" / file)  # strict load into the plain resnet20
        assert header["meta"]["train_config"]["doconv"] is True
        with torch.no_grad():
            assert torch.allclose(plain(x), trained[epoch](x), atol=1e-4), file
    with torch.no_grad():
        assert not torch.allclose(trained[1](x), trained[2](x), atol=1e-4)  # epoch 2 trained on

    torch.manual_seed(0)
    with pytest.raises(_Stop):  # "killed" right after epoch 1 was saved
        fit(build_model("resnet20", num_classes=2), *loaders(), config, tmp_path / "b", arch="resnet20",
            num_classes=2, progress=False, on_epoch=lambda row: _stop_after(row, 1))
    with pytest.raises(ValueError, match="doconv=True"):
        fit(build_model("resnet20", num_classes=2), *loaders(), TrainConfig(epochs=2, lr=0.05, seed=1),
            tmp_path / "b", arch="resnet20", num_classes=2, progress=False)
    resumed = build_model("resnet20", num_classes=2)  # fresh weights: W and D must come from the state
    rows = fit(resumed, *loaders(), config, tmp_path / "b", arch="resnet20", num_classes=2, progress=False)
    assert [r["epoch"] for r in rows] == [1, 2]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


@pytest.mark.parametrize("field, value", [
    ("lr", math.inf), ("lr", math.nan), ("lr", 0.0), ("lr", -0.1), ("lr", 1e6), ("lr", "0.1"),
    ("weight_decay", math.nan), ("weight_decay", math.inf), ("weight_decay", -1e-4),
    ("momentum", 1.0), ("momentum", -0.1), ("momentum", math.nan),
    ("epochs", 0), ("epochs", 2.5), ("epochs", True), ("epochs", math.inf),
    ("batch_size", 0), ("batch_size", math.inf), ("batch_size", "128"),
    ("warmup_epochs", math.nan), ("warmup_epochs", -1.0), ("label_smoothing", math.nan), ("precision", "fp16"),
])
def test_config_refuses_a_bad_hyperparameter_naming_it_and_its_value(field, value):
    with pytest.raises(UserError) as err:
        TrainConfig(**{field: value})
    assert f"{field} " in str(err.value) and f"got {value!r}" in str(err.value)


def test_nesterov_needs_momentum_and_whole_float_epochs_are_taken():
    with pytest.raises(UserError, match="nesterov"):
        TrainConfig(momentum=0.0, nesterov=True)
    assert TrainConfig(momentum=0.0, nesterov=False).momentum == 0.0
    config = TrainConfig(epochs=3.0, batch_size=16.0)  # JSON numbers from a job's arguments
    assert (config.epochs, config.batch_size) == (3, 16) and isinstance(config.epochs, int)


def _corrupt_at(model, epoch, batch):
    """An on_batch callback that makes the classifier's weights infinite after step ``batch`` of ``epoch``, as a
    learning rate far too high would: from then on every loss is NaN."""
    def on_batch(info):
        if (info["epoch"], info["batch"]) == (epoch, batch):
            with torch.no_grad():
                model.fc.weight.fill_(math.inf)
    return on_batch


def _finite_state(path):
    state = torch.load(path, weights_only=True)
    return state["epoch"], all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_state(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=2)
    with pytest.raises(TrainingDivergedError) as err:
        fit(model, *_loaders(), TrainConfig(epochs=3, lr=0.05, warmup_epochs=0), tmp_path, arch="resnet20",
            num_classes=2, progress=False, on_batch=_corrupt_at(model, 2, 1))
    message = str(err.value)
    assert "epoch 2" in message and "step 2 of 4" in message and "loss is nan" in message
    assert "lower the learning rate" in message and "--no-resume" in message and str(tmp_path) in message
    assert isinstance(err.value, UserError)
    assert _finite_state(tmp_path / "state.pt") == (1, True)  # epoch 1's state, not overwritten
    assert not (tmp_path / "model.safetensors").exists()
    assert [json.loads(x)["epoch"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


def test_weights_gone_non_finite_at_an_epochs_last_step_are_never_saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=2)
    with pytest.raises(TrainingDivergedError, match="epoch 1: the weights are no longer finite") as err:
        fit(model, *_loaders(), TrainConfig(epochs=2, lr=0.05, warmup_epochs=0), tmp_path, arch="resnet20",
            num_classes=2, progress=False, on_batch=_corrupt_at(model, 1, 4))  # the last of 4 steps
    assert "fc.weight" in str(err.value)
    assert not any(p.suffix in (".pt", ".safetensors") for p in tmp_path.iterdir())  # nothing saved
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=2)
    with pytest.raises(TrainingDivergedError, match="epoch 2: the weights are no longer finite"):
        fit(model, *_loaders(), TrainConfig(epochs=2, lr=0.05, warmup_epochs=0), tmp_path / "b", arch="resnet20",
            num_classes=2, progress=False, on_batch=_corrupt_at(model, 2, 4))
    assert _finite_state(tmp_path / "b" / "state.pt") == (1, True)
    assert not (tmp_path / "b" / "model.safetensors").exists()


@pytest.mark.parametrize("precision, bf16", [("auto", False), ("fp32", False), ("bf16", True)])
def test_the_precision_decides_whether_the_cpu_trains_under_bf16_autocast(tmp_path, precision, bf16):
    assert uses_bf16(TrainConfig(precision=precision), torch.device("cuda")) == (precision != "fp32")
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=2)
    dtypes = []
    model.conv1.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype) if m.training else None)
    rows = fit(model, *_loaders(), TrainConfig(epochs=1, lr=0.05, warmup_epochs=0, precision=precision), tmp_path,
               arch="resnet20", num_classes=2, progress=False)
    assert set(dtypes) == {torch.bfloat16 if bf16 else torch.float32} and math.isfinite(rows[0]["train_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay float32
