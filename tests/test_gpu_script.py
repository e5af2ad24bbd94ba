"""benchmarks/gpu.sh, the GPU check, in its dry mode on the CPU (so that it cannot rot): every step runs and
writes its files and summary.json; a failed step is recorded, the next ones still run and the script exits 1."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu.sh"
STEPS = {"env", "cuda_tests", "train", "throughput", "latency"}  # DRY leaves copy_model out
FILES = ["env.json", "cuda-tests.xml", "cuda-tests.log", "train/model.safetensors", "train/metrics.jsonl",
         "train.json", "finetune_throughput.json", "latency_speedup.json", "summary.json", "steps.tsv",
         "logs/env.log", "logs/train.log", "logs/throughput.log", "logs/latency.log"]
NOT_IN_DRY = [REPO / "assets" / "resnet20_cifar10_gpu.safetensors",
              REPO / "benchmarks" / "results" / "finetune_throughput_cuda.json",
              REPO / "benchmarks" / "results" / "latency_speedup_cuda.json"]


def _gpu_sh(out, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DRY": "1", "OUT": str(out), "PYTHON": sys.executable, **env}
    environ.pop("PRUNEKIT_REQUIRE_CUDA", None)
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=environ, capture_output=True, text=True,
                          timeout=600)


def _stamps() -> dict:
    return {p: p.stat().st_mtime_ns for p in NOT_IN_DRY if p.exists()}


@pytest.mark.data
def test_the_dry_run_writes_every_file_and_the_summary(cifar_data_root, tmp_path):
    before = _stamps()
    done = _gpu_sh(tmp_path / "out", DATA=str(cifar_data_root))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    assert [f for f in FILES if not (out / f).is_file() or (out / f).stat().st_size == 0] == []
    s = json.loads((out / "summary.json").read_text())
    assert s["dry"] is True and s["device"] == "cpu" and s["all_ok"] is True
    assert set(s["steps"]) == STEPS and all(v["ok"] and v["seconds"] > 0 for v in s["steps"].values())
    cuda_tests = len(re.findall(r"^def test_", (REPO / "tests" / "test_cuda.py").read_text(), re.M))
    assert s["cuda_tests"]["tests"] == cuda_tests and s["cuda_tests"]["failed"] == 0
    assert 0 <= s["accuracy"] <= 100 and s["epochs"] == 1 and s["train_seconds"] == s["steps"]["train"]["seconds"]
    assert isinstance(s["target_91_met"], bool) and s["target_accuracy"] == 91.0
    assert set(s["throughput_ratio"]) == {"resnet20"} and s["throughput_ratio"]["resnet20"] > 0
    assert set(s["latency"]) == {"vgg16_bn", "resnet56"} and all(v["batch64_speedup"] > 0
                                                                 for v in s["latency"].values())
    # each figure is rounded to 0.1 s: the steps' sum may pass the total by half a tenth per rounded figure
    rounding = 0.05 * (len(s["steps"]) + 1)
    assert s["total_seconds"] + rounding >= sum(v["seconds"] for v in s["steps"].values())
    assert s["within_budget"] is True
    train = json.loads((out / "train.json").read_text())
    assert train["recipe"]["epochs"] == 1 and train["recipe"]["batch_size"] == 64 and "--subset 256" in train["command"]
    assert train["accuracy"] == s["accuracy"] and train["wall_seconds"] == s["train_seconds"]
    env = json.loads((out / "env.json").read_text())
    assert env["dry"] is True and env["nvidia_smi"] and "torch" in env["versions"] and "available" in env["cuda"]
    assert "all steps ok" in done.stdout and "assets/resnet20_cifar10.safetensors" not in done.stdout
    assert _stamps() == before  # the dry run copies nothing into benchmarks/results/ or assets/


def test_a_failed_step_is_recorded_the_next_still_runs_and_the_script_exits_1(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    # train refuses 0 epochs (exit 2); the throughput benchmark finds no data, exits 0 and writes nothing
    done = _gpu_sh(tmp_path / "out", DATA=str(empty), EPOCHS="0", STEPS="train throughput")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["dry"] is True and s["all_ok"] is False and s["accuracy"] is None and s["target_91_met"] is False
    assert s["steps"]["train"]["ok"] is False and s["steps"]["train"]["exit"] == 2
    assert s["steps"]["throughput"]["ok"] is False and s["steps"]["throughput"]["exit"] == 98
    train_log = (tmp_path / "out" / "logs" / "train.log").read_text()
    assert "epochs (the passes over the training images) must be a whole number >= 1, got 0" in train_log
    assert "did not write" in (tmp_path / "out" / "logs" / "throughput.log").read_text()
    assert "FAILED: train, throughput" in done.stdout
