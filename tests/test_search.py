"""The search preset: every candidate meets the budget (FLOPs, params, rounded widths), the same seed gives the same
candidates and plan, a cancel stops it with the best found so far, a budget no plan reaches is refused naming the
nearest one that is; through prunekit.plan, the command line and a job it judges real candidates on training
images the recalibration does not use."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from prunekit.cli import main
from prunekit.criteria.scores import score
from prunekit.defaults import RECALIBRATION, SEARCH
from prunekit.errors import UserError
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint
from prunekit.models.zoo import build_model
from prunekit.pruning.presets import get_preset
from prunekit.pruning.ratios import kept_channels
from prunekit.pruning.search import (
    METHODS,
    candidates_frame,
    project,
    reachable,
    search_allocation,
    search_images,
)
from prunekit.pruning.structure import estimate, structure
from prunekit.runs import jobs
from tests.conftest import tiny_arrays
from tests.test_latency_model import Small

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def struct():
    return structure(build_model("resnet20").eval(), SIZE)


def _channels(struct):
    return {g.root: g.channels for g in struct.groups}


def _reduction(struct, by="flops", round_to=1):
    def reduction(ratios):
        est = estimate(struct, ratios, round_to)
        return est.macs_reduction if by == "flops" else est.params_reduction
    return reduction


def _judge(struct):
    """A made-up accuracy: best when each group's ratio is near its own preferred value (a fixed random vector)."""
    prefer = dict(zip(_channels(struct), np.random.default_rng(7).uniform(0.1, 0.8, len(struct.groups))))
    calls = []

    def judge(ratios):
        calls.append(dict(ratios))
        miss = sum((ratios.get(r, 0.0) - p) ** 2 for r, p in prefer.items())
        return 100 - 50 * miss, miss
    judge.calls = calls
    return judge


def _search(struct, target=0.5, by="flops", round_to=1, **options):
    channels, reduction = _channels(struct), _reduction(struct, by, round_to)
    uniform = project(dict.fromkeys(channels, 1.0), channels, reduction, target)
    return search_allocation(channels, {"uniform": uniform}, reduction, _judge(struct), target, round_to=round_to,
                             **{"candidates": 12, **options})


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("by, round_to", [("flops", 1), ("params", 1), ("flops", 8)])
def test_every_candidate_meets_the_budget(struct, method, by, round_to):
    result = _search(struct, 0.5, by, round_to, method=method)
    assert len(result.candidates) == 12 and result.stopped == "candidates"
    reduction = _reduction(struct, by, round_to)
    assert all(reduction(c.ratios) >= 0.5 for c in result.candidates)
    assert all(c.reached == reduction(c.ratios) for c in result.candidates)
    widths = {tuple(kept_channels(g.channels, c.ratios.get(g.root, 0.0), round_to) for g in struct.groups)
              for c in result.candidates}
    assert len(widths) == 12  # no plan judged twice
    assert result.best.score == max(c.score for c in result.candidates)


@pytest.mark.parametrize("method", METHODS)
def test_the_search_moves_toward_a_better_allocation_than_its_start(struct, method):
    result = _search(struct, method=method, candidates=40)  # the made-up optimum is not uniform
    assert result.best.accuracy > result.candidates[0].accuracy + 1


def test_the_same_seed_gives_the_same_candidates_and_another_seed_others(struct):
    a, b, c = _search(struct, seed=3), _search(struct, seed=3), _search(struct, seed=4)
    assert [(x.source, x.ratios, x.accuracy) for x in a.candidates] == \
        [(x.source, x.ratios, x.accuracy) for x in b.candidates]
    assert a.best.ratios == b.best.ratios
    assert [x.ratios for x in a.candidates[1:]] != [x.ratios for x in c.candidates[1:]]


def test_a_cancel_stops_the_search_with_the_best_found_so_far(struct):
    seen = []
    result = _search(struct, candidates=50, on_candidate=seen.append, cancel=lambda: len(seen) >= 5)
    assert result.stopped == "cancelled" and len(result.candidates) == 5 == len(seen)
    assert result.best in result.candidates and result.best.score == max(c.score for c in result.candidates)
    stopped = _search(struct, candidates=50, seconds=1e-9)  # the time limit: the first candidate, then stop
    assert stopped.stopped == "time" and len(stopped.candidates) == 1


def test_an_unreachable_budget_is_refused_naming_the_nearest_reachable_one(struct):
    most = reachable(_channels(struct), _reduction(struct))
    nearest = np.floor(most * 1000) / 1000
    with pytest.raises(UserError, match=f"the nearest reachable budget is {nearest:.3f}"):
        _search(struct, target=min(0.999, most + 0.01))
    assert _search(struct, target=nearest, candidates=2).best.reached >= nearest  # that one is reached
    with pytest.raises(UserError, match="nearest reachable budget"):
        get_preset("search").make(struct, "resnet20", target=0.999, model=build_model("resnet20"),
                                  scores=_scores(build_model("resnet20")), criterion="l1", train=tiny_arrays(8))


def test_the_table_and_the_plan_record_hold_every_candidate(struct):
    result = _search(struct, candidates=6)
    table = result.table()
    assert list(table.columns[:7]) == ["candidate", "source", "accuracy", "loss", "reached", "best", "seconds"]
    assert len(table) == 6 and table["best"].sum() == 1 and table.loc[table["best"], "candidate"].item() == \
        result.best.index
    record = json.loads(json.dumps(result.record(list(_channels(struct)))))  # JSON: what a plan file keeps
    again = candidates_frame(record)
    assert list(again["source"]) == list(table["source"]) and list(again["best"]) == list(table["best"])
    assert np.allclose(again[list(_channels(struct))], table[list(_channels(struct))], atol=1e-6)


def _scores(model):
    g = torch.Generator().manual_seed(0)
    return {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(scope="module")
def tiny_train():
    """Random images: more than the recalibration draws, so that some are left to judge on."""
    return tiny_arrays(RECALIBRATION.n + 48)


def test_the_preset_judges_candidates_on_training_images_the_recalibration_does_not_use(tiny_train):
    model = Small().eval()
    small = structure(model, SIZE)
    scores = _scores(model)
    judged = search_images(tiny_train)
    recal = tiny_train.subset(RECALIBRATION.n, RECALIBRATION.seed)
    assert len(judged) == 48 and not set(map(bytes, judged.images.numpy())) & set(map(bytes, recal.images.numpy()))

    def search(**options):
        return get_preset("search").make(small, "resnet20", target=0.3, model=model, scores=scores, criterion="l1",
                                         train=tiny_train, candidates=4, seed=1, seconds=1e6, **options)

    first, again = search(), search()  # the second is judged from the evaluator's cache: the same numbers
    found = first.preset["search"]
    assert first.ratios == again.ratios
    assert candidates_frame(found)[["source", "accuracy", "loss"]].equals(
        candidates_frame(again.preset["search"])[["source", "accuracy", "loss"]])
    assert found["starts"] == ["uniform", "afie", "threshold"] and "sensitivity" in found["skipped"]
    assert len(candidates_frame(found)) == found["judged"] == 4 and found["stopped"] == "candidates"
    assert estimate(small, first.ratios).macs_reduction >= 0.3
    assert first.preset["name"] == "search" and first.preset["seed"] == 1 and first.preset["method"] == SEARCH.method
    with pytest.raises(UserError, match="needs training images"):
        get_preset("search").make(small, "resnet20", target=0.3, model=model, scores=scores, criterion="l1")


def test_the_command_line_and_a_job_search_the_bundled_model(cifar_data_root, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    out = tmp_path / "plan.json"
    assert main(["plan", "--checkpoint", str(DEFAULT_CHECKPOINT), "--preset", "search", "--target", "0.5",
                 "--candidates", "3", "--seed", "2", "--seconds", "100000", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["search"]["judged"] == 3 and summary["flops_reduction"] >= 0.5
    table = (tmp_path / "plan.candidates.csv").read_text().splitlines()
    assert len(table) == 4 and table[0].startswith("candidate,source,accuracy")
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    score(model, "l1").to_csv(tmp_path / "scores.csv", index=False)
    root = tmp_path / "jobs"
    job = jobs.submit("search", {"data": "cifar10", "target": 0.5, "scores": str(tmp_path / "scores.csv"),
                                 "candidates": 3, "seed": 2, "seconds": 1e5}, device="cpu", model=model, arch="resnet20",
                      num_classes=10, root=root, start_worker=False)
    assert jobs.work("cpu", root, idle_exit=0.1) == 0
    done = jobs.get(job.id, root)
    assert done.status == "done", done.spec.get("error")
    assert done.spec["result"]["judged"] == 3
    assert json.loads(out.read_text())["ratios"] == json.loads((done.path / "plan.json").read_text())["ratios"]
