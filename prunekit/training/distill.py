"""Knowledge distillation (Hinton, Vinyals and Dean, 2015, "Distilling the Knowledge in a Neural Network"): the
student learns from the labels and from a teacher's softened outputs on the same images.

    loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 factor keeps the soft term's gradients on the scale of the hard term's whatever T (the paper, section 2).
Label smoothing, when asked, smooths the cross-entropy's targets only. :func:`prunekit.training.train.fit` calls
:func:`distillation_loss` when its config's ``distill_alpha`` is above 0 and it is given a teacher.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from prunekit.errors import UserError

__all__ = ["check_distill", "distillation_loss"]


def check_distill(alpha: float, temperature: float) -> None:
    """UserError unless ``alpha`` is a number in [0, 1] and ``temperature`` a finite number above 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise UserError(f"distill_alpha (the weight of the teacher's term) must be a number in [0, 1], got {alpha!r}; "
                        "0 fine-tunes without distillation")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise UserError(f"distill_temperature must be a finite number above 0, got {temperature!r}; Hinton et al. "
                        "soften with T between 1 and 20 (4 is usual on CIFAR)")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, *,
                      alpha: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """The distillation loss of a batch, a scalar (the mean over the batch).

    student_logits: (B, K), the student's outputs (with their graph); teacher_logits: (B, K), the teacher's on the
    same images (no gradient flows into them); y: (B,) class indices in [0, K). alpha: the weight of the soft term
    in [0, 1] (0: the cross-entropy alone); temperature: T > 0. label_smoothing: of the cross-entropy term only.
    Computed in float32 whatever the logits' dtype (bfloat16 under autocast).
    """
    check_distill(alpha, temperature)
    student, teacher = student_logits.float(), teacher_logits.detach().float()
    hard = F.cross_entropy(student, y, label_smoothing=label_smoothing)
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True)  # KL(teacher || student), summed over K, mean over B
    return (1 - alpha) * hard + alpha * temperature ** 2 * soft
