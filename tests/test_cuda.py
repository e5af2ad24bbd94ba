"""On a GPU (benchmarks/gpu.sh runs them): the device pipeline (score, prune, fine-tune), the trainer's
bf16 autocast and channels_last, a background job and a one-process torchrun (NCCL), each on CUDA.

Where ``torch.cuda.is_available()`` is False they skip, saying so: the only reason they may skip. With
``PRUNEKIT_REQUIRE_CUDA=1`` (gpu.sh sets it) a machine without CUDA fails them instead.
"""
import copy
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from prunekit.runs import jobs
from prunekit.models.checkpoints import load_checkpoint
from prunekit.cli import main
from prunekit.data import DeviceLoader, load_arrays
from prunekit.models.zoo import build_model
from prunekit.runs.records import read_manifest
from prunekit.criteria.scores import weights_hash
from prunekit.training.train import TrainConfig, fit
from tests.conftest import REPO, tiny_arrays

pytestmark = pytest.mark.cuda
REQUIRE_CUDA = "PRUNEKIT_REQUIRE_CUDA"
BUNDLED = REPO / "assets" / "resnet20_cifar10.safetensors"
SMALL_RUN = ("--subset", "512", "--test-subset", "256", "--epochs", "1")  # fine-tuning: one epoch of 512 images


@pytest.fixture(scope="module", autouse=True)
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        why = "needs CUDA: torch.cuda.is_available() is False on this machine"
        if os.environ.get(REQUIRE_CUDA) == "1":
            pytest.fail(f"{why}, and {REQUIRE_CUDA}=1 requires it")
        pytest.skip(why)
    return torch.device("cuda")


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _pruned_run(tmp_path, data_root):
    """A ResNet-20 run pruned to half its filters (random scores; held out: 64 test images), its unpruned weights
    saved first so that fine-tuning distils from them as by default."""
    from tests.test_finetune import _pruned_run as pruned

    return pruned(tmp_path / "runs", 10, load_arrays("cifar10", "test", data_root).subset(64),
                  checkpoint=tmp_path / "unpruned.safetensors")


@pytest.mark.data
def test_score_prune_and_finetune_on_cuda(cifar_data_root, tmp_path, capsys):
    model = ["--model", "resnet20", "--checkpoint", str(BUNDLED), "--data-root", str(cifar_data_root),
             "--device", "cuda"]
    for criterion in ("l1", "sfm_entropy"):
        assert main(["score", *model, "--criterion", criterion, "--n", "64", "--no-cache", "--no-reliability",
                     "--out", str(tmp_path / f"{criterion}.csv")]) == 0
        table = pd.read_csv(tmp_path / f"{criterion}.csv")
        assert len(table) > 0 and table["score"].notna().all() and table["score"].abs().lt(math.inf).all()
    assert [r["device"] for r in _json_lines(capsys.readouterr().out)] == ["cuda:0", "cuda:0"]
    assert main(["plan", *model, "--preset", "uniform", "--ratio", "0.3", "--criterion", "sfm_entropy",
                 "--out", str(tmp_path / "plan.json")]) == 0
    assert main(["prune", *model, "--plan", str(tmp_path / "plan.json"), "--scores", str(tmp_path / "sfm_entropy.csv"),
                 "--n", "256", "--runs", str(tmp_path / "runs"), "--no-latency"]) == 0
    pruned = _json_lines(capsys.readouterr().out)[-1]  # after the plan's line
    assert read_manifest(pruned["run"])["device"] == "cuda:0"
    assert main(["finetune", "--run", pruned["run"], "--data-root", str(cifar_data_root), "--device", "cuda",
                 *SMALL_RUN]) == 0
    entry = read_manifest(pruned["run"])["finetune"]
    assert entry["device"] == "cuda" and [r["epoch"] for r in entry["epochs"]] == [1]
    assert math.isfinite(entry["accuracy"]) and math.isfinite(entry["loss"])


@pytest.fixture(scope="module")
def trained(cuda, tmp_path_factory):
    """ResNet-20 after one epoch of :func:`prunekit.training.train.fit` on 256 random images on CUDA; -> (model, metrics
    rows, what its first conv saw in training: [(input in channels_last, output dtype), ...])."""
    data = tiny_arrays(256)
    model = build_model("resnet20")
    seen = []

    def record(module, inputs, output):
        if module.training:
            seen.append((inputs[0].is_contiguous(memory_format=torch.channels_last), output.dtype))

    hook = model.conv1.register_forward_hook(record)
    rows = fit(model, DeviceLoader(data, 64, train=True, device=cuda), DeviceLoader(data, 128, train=False,
                                                                                     device=cuda),
               TrainConfig(epochs=1, batch_size=64, warmup_epochs=0), tmp_path_factory.mktemp("fit"),
               arch="resnet20", num_classes=10, progress=False)
    hook.remove()
    return model, rows, seen


def test_the_trainer_steps_in_bf16_and_bf16_agrees_with_fp32(trained, cuda):
    model, rows, seen = trained
    assert len(seen) == 4 and {dtype for _, dtype in seen} == {torch.bfloat16}  # 4 steps, each under autocast
    assert math.isfinite(rows[0]["train_loss"]) and math.isfinite(rows[0]["test_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32 (mixed precision)
    bundled = load_checkpoint(BUNDLED)[0].to(cuda).eval()  # a trained model: logits worth comparing
    x = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(cuda)
    with torch.no_grad():
        full = bundled(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = bundled(x)
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    err, scale = (half.float() - full).abs(), full.abs().max().item()
    assert 0 < err.max().item() <= 0.05 * scale, (err.max().item(), scale)  # bf16 did run, and agrees


def test_the_trainer_keeps_the_model_in_channels_last_with_the_same_outputs(trained, cuda, monkeypatch):
    model, _, seen = trained
    assert all(channels_last for channels_last, _ in seen)  # the batches too
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not any(m.weight.is_contiguous() for m in convs if m.kernel_size != (1, 1))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 in both: only the layout differs
    contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    assert contiguous.conv1.weight.is_contiguous()
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(cuda)
    with torch.no_grad():
        a = model.eval()(x.contiguous(memory_format=torch.channels_last))
        b = contiguous(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.data
def test_a_finetune_job_runs_on_cuda(cifar_data_root, tmp_path):
    run = _pruned_run(tmp_path, cifar_data_root)
    root = tmp_path / "jobs"
    job = jobs.submit("finetune", {"run": str(run.path), "epochs": 1, "subset": 512, "test_subset": 256,
                                   "data_root": str(cifar_data_root)}, device="cuda", root=root, start_worker=False)
    assert job.device == "cuda"
    assert jobs.work("cuda", root, idle_exit=0.1) == 0  # in this process
    done = jobs.get(job.id, root)
    assert done.status == "done", done.error
    entry = read_manifest(run.path)["finetune"]
    assert entry["device"] == "cuda" and math.isfinite(entry["accuracy"])
    assert done.result["accuracy"] == entry["accuracy"] and done.result["epochs"] == 1


@pytest.mark.data
def test_torchrun_with_one_process_fine_tunes_through_nccl(cifar_data_root, tmp_path):
    run = _pruned_run(tmp_path, cifar_data_root)
    env = {**os.environ}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "prunekit",
           "finetune", "--run-dir", str(run.path), "--data-root", str(cifar_data_root), "--device", "cuda",
           *SMALL_RUN]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = _json_lines(out.stdout)
    entry = read_manifest(run.path)["finetune"]
    assert result["status"] == "done" and entry["device"] == "cuda:0" and math.isfinite(entry["accuracy"])
    ddp = entry["ddp"]
    assert ddp["backend"] == "nccl" and ddp["world_size"] == 1 and ddp["consistent"] is True
    tuned = load_checkpoint(run.path / entry["model"])[0]
    assert ddp["weights_hash_per_rank"] == [weights_hash(tuned)]
