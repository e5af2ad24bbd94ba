"""The candidate evaluator, prepared once per model and data, must give what the step-by-step pipeline gives
(prune_model -> recalibrate_bn -> held_out_accuracy) on the default ResNet-20, a concatenating and a depthwise
model; the unpruned model is evaluated once per weights and images; a candidate that removes the same filters is
judged once; the evaluator's model is left as it was."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.data import load_arrays
from prunekit.errors import UserError
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint
from prunekit.models.metrics import held_out_accuracy
from prunekit.models.zoo import build_model
from prunekit.pruning import evaluator as evaluator_module
from prunekit.pruning.evaluator import CandidateEvaluator
from prunekit.pruning.prune import coupled_groups, prune_model
from prunekit.pruning.recalibrate import recalibrate_bn
from tests.conftest import tiny_arrays


class Dense(nn.Module):
    """A DenseNet-like block: c0's 8 channels and c1's 6 concatenated (14), a BN before the conv that reads them
    (pre-activation, as DenseNet), then c2 and the head."""

    def __init__(self):
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.bcat = nn.BatchNorm2d(14)
        self.c2, self.b2 = nn.Conv2d(14, 10, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(10)
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        x0 = F.relu(self.b0(self.c0(x)))
        x1 = F.relu(self.b1(self.c1(x0)))
        x = self.c2(F.relu(self.bcat(torch.cat([x0, x1], 1))))
        return self.fc(F.relu(self.b2(x)).mean((2, 3)))


class Depthwise(nn.Module):
    """conv -> depthwise conv -> pointwise conv, each with BN, as MobileNet's blocks."""

    def __init__(self):
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.dw, self.b1 = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), nn.BatchNorm2d(12)
        self.pw, self.b2 = nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.b1(self.dw(F.relu(self.b0(self.c0(x))))))
        return self.fc(F.relu(self.b2(self.pw(x))).mean((2, 3)))


def _scores(model: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _warm_bn(model: nn.Module, data) -> nn.Module:
    """Running statistics that differ from the defaults (so that recalibration changes something)."""
    model.train()
    with torch.no_grad():
        for i in range(0, 64, 16):
            model(data.images[i:i + 16].float() / 255 - 0.5)
    return model.eval()


def _physical(model, ratios, scores, train, held_out, recalibrate=True):
    pruned, _ = prune_model(model, ratios, scores, (3, 32, 32))
    if recalibrate:
        pruned, _ = recalibrate_bn(pruned, train)
    return held_out_accuracy(pruned, held_out)


def _every_group_half(model):
    groups, _ = coupled_groups(model, (3, 32, 32))
    return {g.root: 0.5 for g in groups}


@pytest.mark.parametrize("make", [Dense, Depthwise], ids=["concatenating", "depthwise"])
@pytest.mark.parametrize("recalibrate", [True, False], ids=["recalibrated", "as-pruned"])
def test_the_evaluator_equals_the_step_by_step_pipeline(make, recalibrate):
    torch.manual_seed(0)
    train, held_out = tiny_arrays(96, seed=1), tiny_arrays(64, seed=2)
    model = _warm_bn(make(), train)
    scores = _scores(model)
    ratios = _every_group_half(model)
    ev = CandidateEvaluator(model, (3, 32, 32), held_out=held_out, train=train)
    got = ev.evaluate(ratios, scores, recalibrate=recalibrate)
    want = _physical(model, ratios, scores, train, held_out, recalibrate)
    assert got["n"] == want["n"] == 64 and got["recalibrated"] is recalibrate
    assert got["accuracy"] == want["accuracy"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    unpruned = held_out_accuracy(model, held_out)
    assert got["loss"] != pytest.approx(unpruned["loss"], rel=1e-4)  # the pruning did something (random weights: small)


def test_the_concatenating_model_has_the_groups_the_test_means():
    groups, frozen = coupled_groups(Dense(), (3, 32, 32))
    assert [g.root for g in groups] == ["c0", "c1", "c2"] and not frozen
    groups, _ = coupled_groups(Depthwise(), (3, 32, 32))
    assert [(g.root, g.members) for g in groups] == [("c0", ("c0", "dw")), ("pw", ("pw",))]


def test_the_evaluator_equals_the_step_by_step_pipeline_on_the_default_resnet20(cifar_data_root):
    model = load_checkpoint(DEFAULT_CHECKPOINT)[0].eval()
    train = load_arrays("cifar10", "train", root=cifar_data_root).subset(2048, seed=3)
    held_out = load_arrays("cifar10", "test", root=cifar_data_root).subset(300, seed=0)
    scores = _scores(model)
    groups, _ = coupled_groups(model, (3, 32, 32))
    ratios = {g.root: r for g, r in zip(groups, [0.25, 0.5, 0.3, 0.6, 0.1, 0.4, 0.5, 0.2, 0.7, 0.3, 0.5, 0.6])}
    ev = CandidateEvaluator(model, (3, 32, 32), held_out=held_out, train=train)
    got, want = ev.evaluate(ratios, scores), _physical(model, ratios, scores, train, held_out)
    assert got["accuracy"] == want["accuracy"] and got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert ev.baseline() == held_out_accuracy(model, held_out)


def test_the_unpruned_model_is_evaluated_once_per_weights_and_images(monkeypatch):
    model, held_out = _warm_bn(Depthwise(), tiny_arrays(64)), tiny_arrays(32, seed=5)
    calls = []
    real = evaluator_module.evaluate
    monkeypatch.setattr(evaluator_module, "evaluate", lambda m, b: calls.append(1) or real(m, b))
    monkeypatch.setattr(evaluator_module, "_BASELINES", type(evaluator_module._BASELINES)())
    first = CandidateEvaluator(model, (3, 32, 32), held_out=held_out, train=None).baseline()
    second = CandidateEvaluator(model, (3, 32, 32), held_out=held_out, train=None).baseline()
    assert first == second and len(calls) == 1
    other = tiny_arrays(32, seed=6)
    CandidateEvaluator(model, (3, 32, 32), held_out=other, train=None).baseline()
    assert len(calls) == 2 and other.content_hash() != held_out.content_hash()


def test_candidates_that_remove_the_same_filters_are_judged_once():
    model = _warm_bn(Depthwise(), tiny_arrays(64))
    ev = CandidateEvaluator(model, (3, 32, 32), held_out=tiny_arrays(32, seed=5), train=tiny_arrays(64, seed=7))
    scores = _scores(model)
    a = ev.evaluate({"c0": 0.5}, scores, round_to=4)   # 12 * 0.5 = 6 kept -> rounded to 8
    b = ev.evaluate({"c0": 0.4}, scores, round_to=4)   # 12 * 0.6 = 7.2 -> 7 kept -> rounded to 8: the same filters
    c = ev.evaluate({"c0": 0.25}, scores, round_to=4)  # 9 kept -> 8: the same
    assert a["kept"]["c0"] == b["kept"]["c0"] == c["kept"]["c0"] == 8
    assert (a["cached"], b["cached"], c["cached"]) == (False, True, True)
    assert a["accuracy"] == b["accuracy"] and a["loss"] == b["loss"]
    assert ev.evaluate({"c0": 0.75}, scores, round_to=4)["cached"] is False  # 3 kept -> 4


def test_the_evaluator_leaves_its_model_as_it_was():
    model = _warm_bn(Depthwise(), tiny_arrays(64))
    ev = CandidateEvaluator(model, (3, 32, 32), held_out=tiny_arrays(32, seed=5), train=tiny_arrays(64, seed=7))
    before = {k: v.clone() for k, v in ev.model.state_dict().items()}
    ev.evaluate({"c0": 0.5, "pw": 0.5}, _scores(model))
    after = ev.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ev.evaluate({}, _scores(model), recalibrate=False)["loss"] == pytest.approx(ev.baseline()["loss"])


def test_a_bad_ratio_is_refused_naming_it():
    model = Depthwise()
    ev = CandidateEvaluator(model, (3, 32, 32), held_out=tiny_arrays(16), train=None)
    with pytest.raises(UserError, match="1.5"):
        ev.evaluate({"c0": 1.5}, _scores(model))
    assert ev.evaluate({"c0": 0.5}, _scores(model))["note"] == "no training images"


def test_a_registered_model_prunes_the_same_through_both_paths_on_random_images():
    """ResNet-20 with random weights (option-A shortcuts, coupled residual groups)."""
    torch.manual_seed(0)
    train, held_out = tiny_arrays(64, seed=1), tiny_arrays(48, seed=2)
    model = _warm_bn(build_model("resnet20"), train)
    scores, ratios = _scores(model), _every_group_half(model)
    got = CandidateEvaluator(model, (3, 32, 32), held_out=held_out, train=train).evaluate(ratios, scores)
    want = _physical(model, ratios, scores, train, held_out)
    assert got["accuracy"] == want["accuracy"] and got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_bf16_is_a_choice_and_an_unknown_precision_is_refused():
    model = _warm_bn(Depthwise(), tiny_arrays(64))
    args = dict(held_out=tiny_arrays(32, seed=5), train=tiny_arrays(64, seed=7))
    with pytest.raises(UserError, match="'fp16'"):
        CandidateEvaluator(model, (3, 32, 32), precision="fp16", **args)
    scores = _scores(model)
    fp32 = CandidateEvaluator(model, (3, 32, 32), **args).evaluate({"c0": 0.5}, scores)
    bf16 = CandidateEvaluator(model, (3, 32, 32), precision="bf16", **args).evaluate({"c0": 0.5}, scores)
    assert bf16["recalibrated"] and bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)  # bf16's 3 digits
