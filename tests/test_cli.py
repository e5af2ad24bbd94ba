import json
import os
import subprocess
import sys

import pytest

from prunekit.models.checkpoints import load_checkpoint
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


def _env(tmp_path) -> dict:
    """The environment of a command writing its runs and cache under ``tmp_path``, on one thread."""
    return {**os.environ, "PRUNEKIT_RUNS": str(tmp_path / "runs"), "PRUNEKIT_CACHE": str(tmp_path / "cache"),
            "OMP_NUM_THREADS": "1"}


def test_plan_prune_runs_export_from_the_shell(tmp_path):
    env = _env(tmp_path)
    out = _cli("plan", "--model", "resnet20", "--preset", "uniform", "--target", "0.5", "--exclude", "conv1",
               "--out", str(tmp_path / "plan.json"), env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["flops_reduction"] >= 0.5 and summary["unprunable"]["conv1"] == "excluded by the user"
    out = _cli("prune", "--plan", str(tmp_path / "plan.json"), "--n", "0", "--no-latency", env=env)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["status"] == "done" and run["flops"][1] <= run["flops"][0] / 2
    # --n 0: no held-out images, so no accuracy, and the line says so beside the recalibrated one
    assert run["accuracy_recalibrated"] is None and run["accuracy_pruned"] is None and run["test_images"] is None
    out = _cli("runs", "--json", env=env)
    (row,) = json.loads(out.stdout)
    assert row["path"] == run["run"] and row["preset"] == "uniform" and row["criterion"] == "l1"
    out = _cli("export", "--run", run["run"], "--formats", "safetensors", "torchscript", "--out",
               str(tmp_path / "export"), env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "export" / "model.pt").is_file()


def test_a_plan_for_another_model_is_an_error_not_a_traceback(tmp_path, capsys):
    from prunekit.cli import main

    assert main(["plan", "--model", "resnet32", "--preset", "uniform", "--ratio", "0.5", "--out",
                 str(tmp_path / "plan.json")]) == 0
    code = main(["prune", "--plan", str(tmp_path / "plan.json"), "--model", "resnet20", "--n", "0", "--no-latency",
                 "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "error: the plan was made for resnet32, the model is resnet20" in err
    assert not (tmp_path / "runs").exists()  # refused before any run was started


def test_the_command_line_round_to_reaches_the_pruned_model(tmp_path):
    import torch

    from prunekit.runs.records import MODEL_FILE, read_manifest

    env = _env(tmp_path)
    out = _cli("plan", "--model", "resnet20", "--preset", "uniform", "--ratio", "0.3", "--round-to", "16",
               "--out", str(tmp_path / "plan.json"), env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["round_to"] == 16
    out = _cli("prune", "--plan", str(tmp_path / "plan.json"), "--n", "0", "--no-latency", env=env)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout.strip().splitlines()[-1])
    manifest = read_manifest(run["run"])
    assert run["round_to"] == manifest["plan"]["round_to"] == manifest["report"]["round_to"] == 16
    model, _ = load_checkpoint(os.path.join(run["run"], MODEL_FILE))
    widths = {n: m.out_channels for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d) and not n.endswith("shortcut")}
    # ratio 0.3 keeps int(c * 0.7) = 11 / 22 / 44 of 16 / 32 / 64, rounded to multiples of 16: 16 / 16 / 48
    assert set(widths.values()) == {16, 48}, widths
    out = _cli("prune", "--plan", str(tmp_path / "plan.json"), "--round-to", "2.5", "--n", "0", "--no-latency",
               env=env)
    assert out.returncode != 0 and "--round-to: invalid int value: '2.5'" in out.stderr
