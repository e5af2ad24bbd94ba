"""Knowledge distillation: the loss by hand, alpha 0 is the cross-entropy, label smoothing on the hard term only,
bad settings refused, and the trainer feeding the teacher the student's own batch without gradients."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.data import DeviceLoader
from prunekit.training.distill import distillation_loss
from prunekit.errors import UserError
from prunekit.models.zoo import build_model
from prunekit.training.train import TrainConfig, fit
from tests.conftest import tiny_arrays

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]  # (B=2, K=3)
TEACHER = [[2.0, 1.0, 0.0], [1.0, 0.0, 2.0]]
LABELS = [1, 2]


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_the_loss_equals_a_hand_computation():
    t, alpha = 2.0, 0.5
    ce = sum(-math.log(_softmax(s)[y]) for s, y in zip(STUDENT, LABELS)) / 2  # mean over the 2 samples
    kl = sum(sum(p * math.log(p / q) for p, q in zip(_softmax([v / t for v in tr]), _softmax([v / t for v in sr])))
             for sr, tr in zip(STUDENT, TEACHER)) / 2  # KL(teacher || student) at T, summed over K, mean over B
    expected = (1 - alpha) * ce + alpha * t ** 2 * kl
    assert (ce, kl, expected) == pytest.approx((0.265126, 0.112117, 0.356798), abs=1e-6)  # the numbers, written
    got = distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), alpha=alpha,
                            temperature=t)
    assert got.ndim == 0 and got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_alpha_0_is_the_cross_entropy_exactly(smoothing):
    s, t, y = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    loss = distillation_loss(s, t, y, alpha=0.0, temperature=4.0, label_smoothing=smoothing)
    assert torch.equal(loss, F.cross_entropy(s, y, label_smoothing=smoothing))


def test_label_smoothing_smooths_the_hard_term_only():
    s, t, y = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    soft_only = [distillation_loss(s, t, y, alpha=1.0, temperature=2.0, label_smoothing=ls) for ls in (0.0, 0.2)]
    assert torch.equal(*soft_only)  # alpha 1: the teacher's term alone, whatever the smoothing
    mixed = distillation_loss(s, t, y, alpha=0.5, temperature=2.0, label_smoothing=0.2)
    assert mixed.item() == pytest.approx(0.5 * F.cross_entropy(s, y, label_smoothing=0.2).item()
                                         + 0.5 * soft_only[0].item(), rel=1e-6)


def test_no_gradient_reaches_the_teacher():
    s, t = torch.tensor(STUDENT, requires_grad=True), torch.tensor(TEACHER, requires_grad=True)
    distillation_loss(s, t, torch.tensor(LABELS), alpha=0.9, temperature=4.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


@pytest.mark.parametrize("alpha, temperature, words", [
    (-0.1, 4.0, "distill_alpha .* must be a number in \\[0, 1\\], got -0.1"),
    (1.5, 4.0, "got 1.5"), (float("nan"), 4.0, "got nan"), (True, 4.0, "got True"),
    (0.5, 0.0, "distill_temperature must be a finite number above 0, got 0.0"), (0.5, -1.0, "got -1.0"),
    (0.5, float("inf"), "got inf"), (0.5, float("nan"), "got nan")])
def test_bad_settings_are_refused_naming_the_value(alpha, temperature, words):
    with pytest.raises(UserError, match=words):
        TrainConfig(distill_alpha=alpha, distill_temperature=temperature)
    with pytest.raises(UserError, match=words):
        distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), alpha=alpha,
                          temperature=temperature)


class _Recorder(nn.Module):
    """A model that records each input it sees, whether it was in training mode and whether grad was on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x):
        self.calls.append((x.clone(), self.training, torch.is_grad_enabled()))
        return self.model(x)


def _loaders():
    data = tiny_arrays(32, classes=2)
    return DeviceLoader(data, 16, train=True, seed=0), DeviceLoader(data, 32, train=False)


def test_fit_feeds_the_teacher_the_same_augmented_batch_in_eval_mode_without_grad(tmp_path):
    torch.manual_seed(0)
    student, teacher = (_Recorder(build_model("resnet20", num_classes=2)) for _ in range(2))
    fit(student, *_loaders(), TrainConfig(epochs=1, lr=0.05, warmup_epochs=0, distill_alpha=0.5), tmp_path,
        arch="resnet20", num_classes=2, progress=False, teacher=teacher)
    trained = [x for x, training, _ in student.calls if training]  # the test pass runs in eval mode
    assert len(trained) == len(teacher.calls) == 2  # 32 images, 2 batches of 16
    for x, (seen, training, grad) in zip(trained, teacher.calls):
        assert torch.equal(x, seen) and not training and not grad
    assert not any(p.requires_grad for p in teacher.parameters())


def test_fit_distilling_without_a_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="distill_alpha=0.5 distils from a teacher, and none was given"):
        fit(build_model("resnet20", num_classes=2), *_loaders(), TrainConfig(epochs=1, distill_alpha=0.5), tmp_path,
            arch="resnet20", num_classes=2, progress=False)
