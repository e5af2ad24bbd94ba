"""Fine-tuning a pruned run: loss falls, the run records it, an interruption resumes, the shell command."""
import json
import subprocess
import sys

import pytest
import torch

from prunekit.checkpoints import load_checkpoint
from prunekit.data import Splits
from prunekit.finetune import FINETUNE_DIR, finetune_config, finetune_run
from prunekit.models import build_model, count_params
from prunekit.presets import get_preset
from prunekit.prune import prune_model
from prunekit.runs import MODEL_FILE, Run, file_sha256, list_runs, prune_run, read_manifest
from prunekit.structure import structure
from tests.conftest import REPO, tiny_arrays

SIZE = (3, 32, 32)


def _pruned_run(root, classes, data=None):
    """A run holding resnet20 pruned to half its filters by random scores (``data``: its held-out images)."""
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=classes).eval()
    plan = get_preset("uniform").make(structure(model, SIZE), "resnet20", value=0.5, criterion="random")
    scores = {n: torch.rand(m.out_channels, generator=torch.Generator().manual_seed(1))
              for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    if data is not None:
        return prune_run(model, plan, scores, arch="resnet20", num_classes=classes, input_size=SIZE, root=root,
                         data=data, latency_batches=(), repeat=1)
    run = Run.create(root, name="resnet20", model={"arch": "resnet20", "num_classes": classes}, data=None)
    run.save_model(prune_model(model, plan.ratios, scores, SIZE)[0], arch="resnet20", num_classes=classes)
    run.finish("done")
    return run


def test_finetuning_a_pruned_run_lowers_the_loss_is_recorded_and_resumes(tmp_path, monkeypatch):
    import prunekit.finetune as finetune

    data = tiny_arrays(32, classes=2)
    data.images[data.labels == 1] //= 4  # a learnable difference: class 1 is darker
    run = _pruned_run(tmp_path, classes=2)
    pruned_sha = file_sha256(run.path / MODEL_FILE)
    config = finetune_config(3, lr=0.05, batch_size=16, doconv=True)
    assert (config.momentum, config.nesterov, config.weight_decay, config.schedule) == (0.9, False, 5e-4, "cosine")
    real_fit = finetune.fit

    def killed_after_epoch_1(*args, on_epoch, **kwargs):
        def record_then_die(row):
            on_epoch(row)
            raise KeyboardInterrupt

        return real_fit(*args, on_epoch=record_then_die, **kwargs)

    monkeypatch.setattr(finetune, "fit", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        finetune_run(run.path, config, data=Splits(data, data, "tiny", data.classes), device="cpu", progress=False)
    m = read_manifest(run.path)
    assert m["status"] == "interrupted" and [r["epoch"] for r in m["finetune"]["epochs"]] == [1]
    first = m["finetune"]["epochs"][0]

    monkeypatch.setattr(finetune, "fit", real_fit)
    finetune_run(run.path, config, data=Splits(data, data, "tiny", data.classes), device="cpu", progress=False)
    m = read_manifest(run.path)
    ft = m["finetune"]
    assert m["status"] == "done" and m["finished"] and ft["started"] <= ft["finished"]
    assert [r["epoch"] for r in ft["epochs"]] == [1, 2, 3] and ft["epochs"][0] == first  # epoch 1 not redone
    assert ft["epochs"][-1]["train_loss"] < ft["epochs"][0]["train_loss"]
    assert ft["accuracy"] == ft["epochs"][-1]["test_accuracy"] and ft["config"]["doconv"] is True
    assert ft["data"] == {"name": "tiny", "train": 32, "test": 32}
    assert list_runs(tmp_path).loc[0, "accuracy_finetuned"] == ft["accuracy"]
    assert file_sha256(run.path / MODEL_FILE) == pruned_sha  # the pruned model is kept as it was
    tuned, header = load_checkpoint(run.path / ft["model"])  # plain convs, smaller layers rebuilt from the file
    pruned, _ = load_checkpoint(run.path / MODEL_FILE)
    assert count_params(tuned) == count_params(pruned) and header["meta"]["run"] == m["id"]
    assert json.loads((run.path / FINETUNE_DIR / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 3


def test_a_run_without_a_pruned_model_is_a_clear_error(tmp_path, capsys):
    from prunekit.cli import main

    run = Run.create(tmp_path, name="empty")
    run.finish("failed", "RuntimeError: boom")
    assert main(["finetune", "--run", str(run.path), "--data-root", str(tmp_path / "no-data")]) == 2
    assert "has no pruned model" in capsys.readouterr().err


@pytest.mark.data
def test_finetune_from_the_shell(cifar_data_root, tmp_path):
    from prunekit.data import load_arrays

    run = _pruned_run(tmp_path, 10, load_arrays("cifar10", "test", cifar_data_root).subset(64))
    out = subprocess.run([sys.executable, "-m", "prunekit", "finetune", "--run", str(run.path), "--data-root",
                          str(cifar_data_root), "--subset", "512", "--epochs", "1", "--device", "cpu"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    m = read_manifest(run.path)
    assert result["status"] == m["status"] == "done" and m["finetune"]["data"]["name"] == "cifar10"
    assert result["accuracy_finetuned"] == m["finetune"]["accuracy"] and 0 <= result["accuracy_finetuned"] <= 100
    assert m["finetune"]["config"]["lr"] == 0.01 and m["finetune"]["data"]["train"] == 512
