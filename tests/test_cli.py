import json
import subprocess
import sys

import pytest

from prunekit.checkpoints import load_checkpoint
from tests.conftest import REPO


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "prunekit", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)


def test_models_lists_the_registry():
    out = _cli("models")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert "resnet20" in names and "vgg16_bn" in names and "mobilenet_v2_cifar" in names


def test_missing_data_is_a_clear_error_not_a_traceback(tmp_path):
    out = _cli("train", "--model", "resnet20", "--data", "cifar100", "--data-root", str(tmp_path), "--out",
               str(tmp_path / "run"), "--epochs", "1")
    assert out.returncode != 0
    assert "error:" in out.stderr and str(tmp_path) in out.stderr and "Traceback" not in out.stderr


@pytest.mark.data
def test_train_from_the_shell_writes_a_loadable_model(cifar_data_root, tmp_path):
    out = _cli("train", "--model", "resnet20", "--data", "cifar10", "--data-root", str(cifar_data_root),
               "--subset", "512", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 <= result["test_accuracy"] <= 100
    model, header = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert header["arch"] == "resnet20" and header["meta"]["data"] == "cifar10"
    assert header["meta"]["test_accuracy"] == pytest.approx(result["test_accuracy"])
    assert (tmp_path / "run" / "epoch001.safetensors").exists()
