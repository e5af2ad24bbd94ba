"""Fine-tuning a pruned run: loss falls, the run records it, an interruption resumes, the shell command."""
import json
import subprocess
import sys

import pytest
import torch

from prunekit.models.checkpoints import load_checkpoint, save_checkpoint
from prunekit.data import Splits
from prunekit.defaults import DISTILL_ALPHA, DISTILL_TEMPERATURE
from prunekit.runs.finetune import FINETUNE_DIR, finetune_config, finetune_run
from prunekit.models.zoo import build_model, count_params
from prunekit.pruning.presets import get_preset
from prunekit.pruning.prune import prune_model
from prunekit.runs.records import MODEL_FILE, Run, file_sha256, list_runs, prune_run, read_manifest
from prunekit.pruning.structure import structure
from prunekit.training.train import TrainingDivergedError
from tests.conftest import REPO, tiny_arrays

SIZE = (3, 32, 32)


def _pruned_run(root, classes, data=None, checkpoint=None):
    """A run holding resnet20 pruned to half its filters by random scores (``data``: its held-out images;
    ``checkpoint``: a file the unpruned weights are saved to first, recorded as the run's source)."""
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=classes).eval()
    plan = get_preset("uniform").make(structure(model, SIZE), "resnet20", value=0.5, criterion="random")
    scores = {n: torch.rand(m.out_channels, generator=torch.Generator().manual_seed(1))
              for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    if checkpoint is not None:
        save_checkpoint(model, checkpoint, arch="resnet20", num_classes=classes)
    if data is not None or checkpoint is not None:
        return prune_run(model, plan, scores, arch="resnet20", num_classes=classes, input_size=SIZE, root=root,
                         data=data, checkpoint=checkpoint, latency_batches=(), repeat=1)
    run = Run.create(root, name="resnet20", model={"arch": "resnet20", "num_classes": classes}, data=None)
    run.save_model(prune_model(model, plan.ratios, scores, SIZE)[0], arch="resnet20", num_classes=classes)
    run.finish("done")
    return run


def test_finetuning_a_pruned_run_lowers_the_loss_is_recorded_and_resumes(tmp_path, monkeypatch):
    import prunekit.runs.finetune as finetune

    data = tiny_arrays(32, classes=2)
    data.images[data.labels == 1] //= 4  # a learnable difference: class 1 is darker
    run = _pruned_run(tmp_path, classes=2)
    pruned_sha = file_sha256(run.path / MODEL_FILE)
    config = finetune_config(3, lr=0.05, batch_size=16, doconv=True, distill_alpha=0.0)  # no unpruned file: plain
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

    source = tmp_path / "unpruned.safetensors"
    run = _pruned_run(tmp_path, 10, load_arrays("cifar10", "test", cifar_data_root).subset(64), checkpoint=source)
    out = subprocess.run([sys.executable, "-m", "prunekit", "finetune", "--run", str(run.path), "--data-root",
                          str(cifar_data_root), "--subset", "512", "--epochs", "1", "--device", "cpu"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    m = read_manifest(run.path)
    assert result["status"] == m["status"] == "done" and m["finetune"]["data"]["name"] == "cifar10"
    assert result["accuracy_finetuned"] == m["finetune"]["accuracy"] and 0 <= result["accuracy_finetuned"] <= 100
    assert m["finetune"]["config"]["lr"] == 0.01 and m["finetune"]["data"]["train"] == 512
    teacher = m["finetune"]["teacher"]  # the default recipe distils from the unpruned model
    assert (teacher["path"], teacher["unpruned"], teacher["alpha"], teacher["temperature"]) == (
        str(source), True, DISTILL_ALPHA, DISTILL_TEMPERATURE)


def _tiny_splits():
    data = tiny_arrays(32, classes=2)
    data.images[data.labels == 1] //= 4  # a learnable difference: class 1 is darker
    return Splits(data, data, "tiny", data.classes)


def _killed_after_epoch_1(real_fit):
    def fit(*args, on_epoch, **kwargs):
        def record_then_die(row):
            on_epoch(row)
            raise KeyboardInterrupt

        return real_fit(*args, on_epoch=record_then_die, **kwargs)

    return fit


def test_distilling_from_the_unpruned_model_is_recorded_and_resumes_exactly(tmp_path, monkeypatch):
    import prunekit.runs.finetune as finetune
    from prunekit.criteria.scores import weights_hash

    source = tmp_path / "unpruned.safetensors"
    runs = [_pruned_run(tmp_path / name, 2, checkpoint=source) for name in ("straight", "resumed", "plain")]
    config = finetune_config(2, lr=0.05, batch_size=16, distill_alpha=0.9, distill_temperature=2.0)
    finetune_run(runs[0].path, config, data=_tiny_splits(), device="cpu", progress=False)
    monkeypatch.setattr(finetune, "fit", _killed_after_epoch_1(finetune.fit))
    with pytest.raises(KeyboardInterrupt):
        finetune_run(runs[1].path, config, data=_tiny_splits(), device="cpu", progress=False)
    monkeypatch.undo()
    assert [r["epoch"] for r in read_manifest(runs[1].path)["finetune"]["epochs"]] == [1]
    finetune_run(runs[1].path, config, data=_tiny_splits(), device="cpu", progress=False)  # resumes at epoch 2
    finetune_run(runs[2].path, finetune_config(2, lr=0.05, batch_size=16, distill_alpha=0.0), data=_tiny_splits(),
                 device="cpu", progress=False)
    tuned = [load_checkpoint(run.path / FINETUNE_DIR / "model.safetensors")[0].state_dict() for run in runs]
    assert all(torch.equal(a, b) for a, b in zip(tuned[0].values(), tuned[1].values()))  # resumed = uninterrupted
    assert not all(torch.equal(a, b) for a, b in zip(tuned[0].values(), tuned[2].values()))  # the teacher counted
    unpruned = weights_hash(load_checkpoint(source)[0])
    for run in runs[:2]:
        ft = read_manifest(run.path)["finetune"]
        assert ft["teacher"] == {"path": str(source), "weights": unpruned, "unpruned": True, "alpha": 0.9,
                                 "temperature": 2.0}
        assert (ft["config"]["distill_alpha"], ft["config"]["distill_temperature"]) == (0.9, 2.0)
    assert read_manifest(runs[2].path)["finetune"]["teacher"] is None


def test_distilling_without_the_unpruned_model_on_disk_is_refused_and_writes_nothing(tmp_path):
    from prunekit.errors import UserError

    config = finetune_config(1, batch_size=16, distill_alpha=0.9)
    no_source = _pruned_run(tmp_path / "a", 2)  # pruned from weights never saved
    source = tmp_path / "unpruned.safetensors"
    moved, changed = (_pruned_run(tmp_path / name, 2, checkpoint=source) for name in ("b", "c"))
    source.unlink()
    cases = [(no_source, "it records no source checkpoint"), (moved, f"its source checkpoint {source} is not on disk")]
    for run, why in cases:
        files = sorted(p.name for p in run.path.rglob("*"))
        manifest = (run.path / "manifest.json").read_text()
        with pytest.raises(UserError, match=rf"cannot distil from its unpruned model: {why}.*--teacher FILE"):
            finetune_run(run.path, config, data=_tiny_splits(), device="cpu", progress=False)
        assert (run.path / "manifest.json").read_text() == manifest and sorted(p.name for p in run.path.rglob("*")) \
            == files and not (run.path / FINETUNE_DIR).exists()
    save_checkpoint(build_model("resnet20", num_classes=2), source, arch="resnet20", num_classes=2)  # other weights
    with pytest.raises(UserError, match=f"{source} no longer holds the weights run .* was pruned from"):
        finetune_run(changed.path, config, data=_tiny_splits(), device="cpu", progress=False)
    with pytest.raises(UserError, match="is only used when distilling: set distill_alpha above 0"):
        finetune_run(no_source.path, finetune_config(1, batch_size=16, distill_alpha=0.0), data=_tiny_splits(),
                     device="cpu", teacher=source, progress=False)
    finetune_run(no_source.path, config, data=_tiny_splits(), device="cpu", teacher=source, progress=False)
    teacher = read_manifest(no_source.path)["finetune"]["teacher"]
    assert teacher["path"] == str(source) and teacher["unpruned"] is False  # a teacher of its own, said so


def test_the_distillation_options_reach_the_config_from_the_shell_and_the_jobs(tmp_path, monkeypatch):
    import prunekit.runs.finetune as finetune
    from prunekit.runs import jobs
    from prunekit.cli import build_parser, main

    args = build_parser().parse_args(["finetune", "--run", "r"])
    assert (args.distill_alpha, args.distill_temperature, args.teacher) == (DISTILL_ALPHA, DISTILL_TEMPERATURE, None)
    source = save_checkpoint(build_model("resnet20", num_classes=2), tmp_path / "teacher.safetensors",
                             arch="resnet20", num_classes=2)
    run = _pruned_run(tmp_path / "runs", 2)  # no unpruned model on disk: --teacher is the only teacher
    monkeypatch.setattr(finetune, "_run_splits", lambda *_: _tiny_splits())  # the run's data set: tiny data
    assert main(["finetune", "--run", str(run.path), "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                 "--distill-alpha", "0.7", "--distill-temperature", "3", "--teacher", str(source)]) == 0
    ft = read_manifest(run.path)["finetune"]
    assert (ft["config"]["distill_alpha"], ft["config"]["distill_temperature"]) == (0.7, 3.0)
    assert (ft["teacher"]["path"], ft["teacher"]["unpruned"], ft["teacher"]["alpha"]) == (str(source), False, 0.7)

    seen = {}
    monkeypatch.setattr(jobs.kinds, "finetune_run", lambda run, config, **kw: seen.update(config=config, **kw) or 1 / 0)
    job = jobs.Job(tmp_path, {"id": "j", "kind": "finetune", "device": "cpu", "args": {
        "run": str(run.path), "epochs": 2, "distill_alpha": 0.6, "distill_temperature": 5.0, "teacher": str(source)}})
    with pytest.raises(ZeroDivisionError):
        jobs.job_kind("finetune").run(job, jobs.worker.Context(job))
    assert (seen["config"].distill_alpha, seen["config"].distill_temperature, seen["teacher"]) == (0.6, 5.0,
                                                                                                   str(source))
    assert "distilled from `teacher.safetensors`: alpha 0.6, T 5.0" in job.description


def test_a_fine_tuning_that_diverges_fails_naming_the_epoch_and_keeps_the_last_good_state(tmp_path, monkeypatch):
    import math

    import prunekit.runs.finetune as finetune

    run = _pruned_run(tmp_path, classes=2)
    pruned_sha = file_sha256(run.path / MODEL_FILE)
    real_fit = finetune.fit

    def fit_whose_weights_blow_up_in_epoch_2(model, *args, **kwargs):
        def on_batch(info):  # what a learning rate far too high does: infinite weights, NaN losses
            if (info["epoch"], info["batch"]) == (2, 1):
                with torch.no_grad():
                    model.fc.weight.fill_(math.inf)

        return real_fit(model, *args, **{**kwargs, "on_batch": on_batch})

    monkeypatch.setattr(finetune, "fit", fit_whose_weights_blow_up_in_epoch_2)
    with pytest.raises(TrainingDivergedError):
        finetune_run(run.path, finetune_config(3, lr=0.05, batch_size=16, distill_alpha=0.0), data=_tiny_splits(),
                     device="cpu", progress=False)
    m = read_manifest(run.path)
    assert m["status"] == "failed" and "epoch 2 at step 2 of 2: the loss is nan" in m["error"]
    assert "lower the learning rate" in m["error"] and m["error"].startswith("TrainingDivergedError: ")
    assert [r["epoch"] for r in m["finetune"]["epochs"]] == [1] and m["finetune"]["accuracy"] is None
    state = torch.load(run.path / FINETUNE_DIR / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())
    assert not (run.path / FINETUNE_DIR / "model.safetensors").exists()
    assert file_sha256(run.path / MODEL_FILE) == pruned_sha
    row = list_runs(tmp_path).iloc[0]
    assert row["status"] == "failed" and "diverged" in row["error"]


def test_a_learning_rate_of_inf_is_refused_before_anything_is_written(tmp_path, capsys):
    from prunekit.cli import main

    run = _pruned_run(tmp_path, classes=2)
    manifest = (run.path / "manifest.json").read_text()
    for option, value in (("--lr", "inf"), ("--lr", "nan"), ("--weight-decay", "-1"), ("--epochs", "0"),
                          ("--batch-size", "0")):
        assert main(["finetune", "--run", str(run.path), option, value, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        name = option[2:].replace("-", "_")
        assert f"error: {name} (" in err and f"got {float(value) if name in ('lr', 'weight_decay') else value}" \
            in err and "Traceback" not in err
    assert (run.path / "manifest.json").read_text() == manifest and not (run.path / FINETUNE_DIR).exists()
