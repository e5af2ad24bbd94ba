import os
import pathlib

import pytest
import torch

from prunekit.models.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from prunekit.models.zoo import build_model


def _same_outputs(a, b, size=32):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_round_trip_keeps_weights_and_header(tmp_path, suffix):
    model = build_model("resnet20")
    path = save_checkpoint(model, tmp_path / f"m{suffix}", arch="resnet20", num_classes=10,
                           meta={"test_accuracy": 91.5, "data": "cifar10"})
    loaded, header = load_checkpoint(path)
    assert header["arch"] == "resnet20" and header["meta"]["test_accuracy"] == 91.5
    assert _same_outputs(model, loaded)


def test_plain_state_dict_loads_with_the_architecture_named(tmp_path):
    model = build_model("vgg16_bn", num_classes=100)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="Name its architecture"):
        load_checkpoint(tmp_path / "plain.pth")
    loaded, header = load_checkpoint(tmp_path / "plain.pth", arch="vgg16_bn")
    assert header == {} and loaded.classifier[-1].out_features == 100
    assert _same_outputs(model, loaded)


def test_pruned_resnet_rebuilds_its_smaller_shapes(tmp_path):
    """Keep 5 of 16 filters of layer1.0.conv1: the file must rebuild a conv of 5 filters, a BN of 5 and a
    conv2 with 5 inputs, and compute what the full model computes with the other 11 filters' maps zeroed."""
    torch.manual_seed(0)
    full = build_model("resnet20").eval()
    for m in full.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    keep = torch.tensor([0, 3, 7, 8, 15])
    state = {k: v.clone() for k, v in full.state_dict().items()}
    for k in ("layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean",
              "layer1.0.bn1.running_var"):
        state[k] = state[k][keep]
    state["layer1.0.conv2.weight"] = state["layer1.0.conv2.weight"][:, keep]
    pruned = build_model("resnet20")
    pruned.load_state_dict(full.state_dict())
    from prunekit.models.checkpoints import conform_to_state_dict

    conform_to_state_dict(pruned, state)
    pruned.load_state_dict(state)
    save_checkpoint(pruned, tmp_path / "pruned.safetensors", arch="resnet20", num_classes=10)

    loaded, _ = load_checkpoint(tmp_path / "pruned.safetensors")
    assert loaded.layer1[0].conv1.out_channels == 5 and loaded.layer1[0].bn1.num_features == 5
    assert loaded.layer1[0].conv2.in_channels == 5
    assert build_model("resnet20").layer1[0].conv1.out_channels == 16  # the class itself is untouched
    dropped = torch.tensor(sorted(set(range(16)) - set(keep.tolist())))
    with torch.no_grad():  # zero the removed maps (after BN + ReLU) in the full model
        full.layer1[0].bn1.weight[dropped] = 0
        full.layer1[0].bn1.bias[dropped] = 0
    assert _same_outputs(full, loaded)


def test_pruned_option_a_shortcut_rebuilds_its_mask(tmp_path):
    model = build_model("resnet20")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["layer2.0.shortcut.route"] = torch.eye(22, 12, dtype=torch.bool)  # 16 -> 32 became 12 -> 22
    from prunekit.models.checkpoints import conform_to_state_dict

    conform_to_state_dict(model, state)
    model.load_state_dict(state)
    assert model.layer2[0].shortcut.route.shape == (22, 12)


def test_depthwise_conv_stays_depthwise_when_rebuilt():
    from prunekit.models.checkpoints import conform_to_state_dict

    model = build_model("mobilenet_v2_cifar")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dw = "features.1.conv.0.0.weight"  # depthwise 32 -> 32, groups 32
    state[dw] = state[dw][:20]
    conform_to_state_dict(model, state)
    conv = model.get_submodule("features.1.conv.0.0")
    assert (conv.in_channels, conv.out_channels, conv.groups) == (20, 20, 20)


def test_broken_file_is_named_and_explained(tmp_path):
    good = save_checkpoint(build_model("resnet20"), tmp_path / "good.pt", arch="resnet20", num_classes=10)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(broken)
    assert "broken.pt" in str(err.value) and "corrupted" in str(err.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="garbage.safetensors.*not a readable safetensors"):
        load_checkpoint(garbage)


class _Evil:
    """Unpickling this would create a marker file: the test checks that it never happens."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": build_model("resnet20").state_dict(), "payload": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert "evil.pt" in str(err.value) and "pickled Python objects" in str(err.value)
    assert not marker.exists()


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = save_checkpoint(build_model("vgg16_bn"), tmp_path / "vgg.pt", arch="vgg16_bn", num_classes=10)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, arch="resnet20")
    assert "vgg.pt" in str(err.value) and "do not fit the architecture 'resnet20'" in str(err.value)
    assert "missing keys" in str(err.value)


def test_changed_kernel_size_is_another_architecture(tmp_path):
    model = build_model("resnet20")
    state = model.state_dict()
    state["conv1.weight"] = torch.zeros(16, 3, 5, 5)
    torch.save(state, tmp_path / "k5.pt")
    with pytest.raises(CheckpointError, match="kernel"):
        load_checkpoint(tmp_path / "k5.pt", arch="resnet20")


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported file type"):
        load_checkpoint(tmp_path / "m.bin")


def _pickle_with_code(marker) -> bytes:
    import pickle

    return pickle.dumps({"conv.weight": [1.0], "payload": _Evil(str(marker))})


@pytest.mark.parametrize("make, words, hint", [
    (lambda p, tmp: bytes.fromhex("13 37 c0 de") + os.urandom(996),
     "is not a PyTorch checkpoint: it starts with bytes 13 37 c0 de", "not a zip archive or pickle"),
    (lambda p, tmp: b'{"conv.weight": [1.0, 2.0]}', "is not a PyTorch checkpoint: it starts with bytes 7b 22",
     "it looks like JSON text"),
    (lambda p, tmp: b"", "is empty (0 bytes)", "save it again"),
    (lambda p, tmp: _saved(tmp, ".pt")[: len(_saved(tmp, ".pt")) // 2], "is truncated or corrupted",
     "save it again"),
    (lambda p, tmp: _saved(tmp, ".safetensors"), "is not a PyTorch checkpoint", "it looks like a safetensors file: "
                                                                                "rename it to .safetensors"),
    (lambda p, tmp: __import__("pickle").dumps({"a": 1, "b": [2, 3]}), "is a plain Python pickle (pickle.dump), "
                                                                         "not a checkpoint torch.save wrote",
     "torch.save(model.state_dict()"),
    (lambda p, tmp: _zip_of_text(tmp), "is a zip archive, but not one torch.save wrote (it holds notes.txt)",
     "save it again"),
], ids=["random bytes", "JSON", "empty", "truncated", "safetensors", "plain pickle", "zip of other files"])
def test_a_file_that_is_not_a_checkpoint_is_told_apart_from_one_holding_code(tmp_path, make, words, hint):
    path = tmp_path / "model.pt"
    path.write_bytes(make(path, tmp_path))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert message.startswith("model.pt: ") and words in message and hint in message
    assert "code" not in message and "pickled Python objects" not in message


def _saved(tmp, suffix):
    return save_checkpoint(build_model("resnet20"), tmp / f"whole{suffix}", arch="resnet20",
                           num_classes=10).read_bytes()


def _zip_of_text(tmp):
    import zipfile

    with zipfile.ZipFile(tmp / "notes.zip", "w") as zf:
        zf.writestr("notes.txt", "hello")
    return (tmp / "notes.zip").read_bytes()


def test_a_plain_pickle_holding_a_class_is_code_and_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(_pickle_with_code(marker))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "evil.pt" in message and "pickled Python objects (code: pathlib.Path.touch" in message
    assert not marker.exists()


def test_a_checkpoint_in_the_old_torch_format_still_loads(tmp_path):
    model = build_model("resnet20")
    torch.save(model.state_dict(), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    loaded, header = load_checkpoint(tmp_path / "old.pth", arch="resnet20")
    assert header == {} and _same_outputs(model, loaded)


def test_a_torch_file_named_safetensors_is_told_to_be_renamed(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(_saved(tmp_path, ".pt"))
    with pytest.raises(CheckpointError, match=r"model.safetensors: is not a readable safetensors file .* It is a file "
                                              r"torch.save wrote: rename it to .pt"):
        read_checkpoint(path)
