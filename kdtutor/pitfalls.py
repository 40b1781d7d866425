"""Wrong on purpose: three distillation-loss bugs that are easy to make and look plausible.

Each function below has the signature of :func:`kdtutor.losses.kd_loss` and looks plausible; each is wrong. The
tests check that every one of them fails at least one of the properties the real loss has, and the chapter on the
soft-target gradient shows what each does to the loss and its gradient. Never train with these.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = ["BUGS", "kd_loss_mean_reduction", "kd_loss_missing_t2", "kd_loss_probabilities"]


def kd_loss_missing_t2(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    r"""Forgets the :math:`T^2` factor: the soft-target gradient shrinks like :math:`1/T^2` as the temperature grows."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean")


def kd_loss_mean_reduction(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """Uses ``reduction="mean"``: divides by batch size *times number of classes*, so the loss is N times too small."""
    t = temperature
    with warnings.catch_warnings():  # PyTorch itself warns about exactly this
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1),
                        reduction="mean") * t * t


def kd_loss_probabilities(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    r"""Passes probabilities where ``F.kl_div`` expects log-probabilities: not a divergence.

    Per image it computes :math:`T^2 \sum_i p_i (\log p_i - q_i) = T^2 \big(-H(p) - \sum_i p_i q_i\big)`, which is
    always below zero (an entropy and a sum of products of probabilities are both non-negative) and is not zero when
    the student agrees with the teacher. Minimising it maximises :math:`\sum_i p_i q_i`, which pushes the student
    towards the teacher's most likely class (a one-hot target), not towards the teacher's distribution. At an
    untrained student, whose :math:`q` is nearly uniform, its gradient is :math:`1/N` times the correct one, so it
    can pass for the ``reduction="mean"`` bug; once the student has trained, it is not.
    """
    t = temperature
    return F.kl_div(F.softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1),
                    reduction="batchmean") * t * t


BUGS = {
    "missing T²": kd_loss_missing_t2,
    'reduction="mean"': kd_loss_mean_reduction,
    "probabilities into kl_div": kd_loss_probabilities,
}
