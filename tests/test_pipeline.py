"""One pipeline: the command line, the background jobs and the dashboard score through one path with one set of
defaults, so the same request is one cache entry whichever front end asked."""
import json

import pytest
import torch

from pages.ui.scoring import scores
from pages.ui.sidebar import Selection
from prunekit.cli import build_parser, main
from prunekit.criteria.entropy import SFMEntropy
import prunekit.criteria.probe
from prunekit.criteria.scores import weights_hash
from prunekit.defaults import (
    DISTILL_ALPHA,
    DISTILL_TEMPERATURE,
    FINETUNE_EPOCHS,
    FINETUNE_RECIPE,
    HELD_OUT,
    PROBE,
    SENSITIVITY,
)
from prunekit.models.checkpoints import save_checkpoint
from prunekit.models.zoo import build_model
from prunekit.runs import jobs
from tests.conftest import tiny_arrays


@pytest.fixture
def fake_cifar(monkeypatch, tmp_path):
    """A fresh score cache, and 'cifar10' served by 700 random images (no data needed)."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    data = tiny_arrays(700)
    data.name = "cifar10"
    monkeypatch.setattr(prunekit.criteria.probe, "load_arrays", lambda *a, **k: data)
    return data


def _defaults(command: str) -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest: a.default for a in sub._actions}


def test_the_command_line_offers_the_shared_defaults():
    assert _defaults("score")["probe_n"] == PROBE.n and _defaults("score")["probe_seed"] == PROBE.seed
    assert _defaults("prune")["n"] == HELD_OUT.n and _defaults("prune")["probe_n"] == PROBE.n
    assert _defaults("sensitivity")["n"] == SENSITIVITY.n
    assert tuple(_defaults("sensitivity")["ratios"]) == SENSITIVITY.ratios
    finetune = _defaults("finetune")
    assert finetune["lr"] == FINETUNE_RECIPE["lr"] and finetune["batch_size"] == FINETUNE_RECIPE["batch_size"]
    assert finetune["weight_decay"] == FINETUNE_RECIPE["weight_decay"] and finetune["epochs"] == FINETUNE_EPOCHS
    assert (finetune["distill_alpha"], finetune["distill_temperature"]) == (DISTILL_ALPHA, DISTILL_TEMPERATURE)


def test_a_score_from_the_shell_is_a_cache_hit_for_the_jobs_and_the_dashboard(fake_cifar, tmp_path, monkeypatch):
    model = build_model("resnet20").eval()
    ckpt = save_checkpoint(model, tmp_path / "r20.safetensors", arch="resnet20", num_classes=10)
    assert main(["score", "--model", "resnet20", "--checkpoint", str(ckpt), "--criterion", "sfm_entropy",
                 "--device", "cpu", "--out", str(tmp_path / "cli.csv")]) == 0

    def computed(*args, **kwargs):
        raise AssertionError("computed again: the request was not the CLI's cache entry")

    monkeypatch.setattr(SFMEntropy, "_score", computed)
    # the dashboard's path: the sidebar's selection with its default probe size
    sel = Selection(model, "resnet20", {}, "test", None, "cifar10", tmp_path, weights_hash(model))
    assert sel.probe_n == PROBE.n
    table = scores(sel, "sfm_entropy")
    assert table.attrs["cached"] is True and table.attrs["fallback"] is None
    # a background score job, run in this process
    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    job = jobs.submit("score", {"criterion": "sfm_entropy", "data": "cifar10"}, model=model, arch="resnet20",
                      num_classes=10, device="cpu", start_worker=False)
    assert jobs.work("cpu", idle_exit=0.5) == 0
    done = jobs.get(job.id)
    assert done.status == "done", done.error
    assert done.result["key"] == table.attrs["key"]
    cli = (tmp_path / "cli.csv").read_text()
    assert (done.path / "scores.csv").read_text() == cli
    assert json.loads(json.dumps(table["score"].tolist())) == json.loads(json.dumps(
        [float(v) for v in __import__("pandas").read_csv(tmp_path / "cli.csv")["score"]]))


def test_a_criterion_that_cannot_run_falls_back_and_says_why(monkeypatch, tmp_path):
    from prunekit.data import DataNotFoundError
    from prunekit.criteria.probe import ProbeSpec
    from prunekit.criteria.scores import score_model

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "nodata"))
    model = build_model("resnet20").eval()
    probe = ProbeSpec("cifar100", 8)
    monkeypatch.setattr("prunekit.data.sets._torchvision_arrays",
                        lambda *a, **k: (_ for _ in ()).throw(DataNotFoundError("no cifar100 here")))
    with pytest.raises(DataNotFoundError, match="no cifar100 here"):
        score_model(model, "hrank", probe=probe)  # no fallback asked for: refused, not replaced
    table = score_model(model, "hrank", probe=probe, fallback="l1")
    assert table.attrs["criterion"] == "l1" and table.attrs["requested"] == "hrank"
    assert "hrank reads images" in table.attrs["fallback"] and "no cifar100 here" in table.attrs["fallback"]
    assert "ranked by l1 instead" in table.attrs["fallback"]
    l1 = {n: m.weight.detach().abs().sum((1, 2, 3)) for n, m in model.named_modules()
          if isinstance(m, torch.nn.Conv2d)}
    torch.testing.assert_close(torch.tensor(table[table.layer == "conv1"]["score"].to_numpy(), dtype=torch.float32),
                               l1["conv1"])
    monkeypatch.setattr(prunekit.criteria.probe, "load_arrays", lambda *a, **k: tiny_arrays(16))  # data present: only slow
    slow = score_model(model, "linear_ensembles", probe=ProbeSpec("cifar100", 8), fallback="l1", allow_slow=False)
    assert slow.attrs["criterion"] == "l1" and "takes minutes" in slow.attrs["fallback"]
