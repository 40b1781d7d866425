r"""Decoupled KD (Zhao et al. 2022, "Decoupled knowledge distillation"): the logit loss split in two.

:func:`~kdtutor.losses.dkd_loss`: at temperature :math:`T` the classic KD
term splits exactly into a target-class part and a non-target part,
:math:`\mathrm{KD} = \mathrm{TCKD} + (1 - p^{\mathcal{T}}_t)\,\mathrm{NCKD}`, where TCKD is the KL between the
binary distributions :math:`[p_t, 1 - p_t]` of teacher and student and NCKD the KL between their distributions
over the non-target classes alone (:func:`~kdtutor.losses.dkd_terms`). The factor :math:`1 - p^{\mathcal{T}}_t`
shrinks NCKD exactly where the teacher is confident; DKD frees the two terms:

.. math:: \mathcal{L} = \mathrm{CE}(z, y) + w_{\mathrm{TC}}\,T^2\,\mathrm{TCKD} + w_{\mathrm{NC}}\,T^2\,\mathrm{NCKD},

``tckd_weight`` :math:`w_{\mathrm{TC}}` and ``nckd_weight`` :math:`w_{\mathrm{NC}}` (the paper's
:math:`\alpha = 1` and :math:`\beta = 8` on CIFAR-100; renamed so as not to collide with ``alpha`` of
:func:`~kdtutor.losses.distillation_loss`). The TCKD and NCKD terms are those of the authors' mdistiller code
(KL summed over classes, averaged over the batch, times :math:`T^2`), but without its warm-up: mdistiller multiplies
the DKD term by :math:`\min(\text{epoch}/20, 1)` over the first 20 epochs (of 240); kdtutor applies the full
weights from the first step (ramp them yourself if you need the warm-up).

:class:`~kdtutor.training.DecoupledKD` is the objective ``fit`` minimises with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch
from kdtutor.methods.base import TeacherObjective

__all__ = ["DecoupledKD", "dkd_loss", "dkd_terms"]


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per sample, at ``temperature`` :math:`T`: TCKD, NCKD (both *without* the :math:`T^2` factor) and the teacher's
    :math:`1 - p_t`, so that :math:`\mathrm{KL}(p^{\mathcal{T}} \| p^{\mathcal{S}}) = \mathrm{TCKD} + (1 - p_t)
    \,\mathrm{NCKD}` row by row (Zhao et al. 2022, eq. 6)."""
    if student_logits.shape[-1] < 2:
        raise ValueError(f"student_logits: expected at least 2 classes (DKD splits the target class from the others), "
                         f"got shape {tuple(student_logits.shape)}")
    z_s = checks.full_precision(student_logits) / temperature
    z_t = teacher_logits.to(z_s.dtype) / temperature
    y = targets.long().unsqueeze(-1)
    target = torch.zeros_like(z_s, dtype=torch.bool).scatter_(-1, y, True)  # no boolean indexing: no host sync

    def parts(z):  # log p_t, log(1 - p_t) and the log-distribution over the non-target classes (-inf at t)
        rest = z.masked_fill(target, float("-inf"))
        log_all = torch.logsumexp(z, -1)
        return z.gather(-1, y).squeeze(-1) - log_all, torch.logsumexp(rest, -1) - log_all, F.log_softmax(rest, -1)

    (lt_s, lr_s, hat_s), (lt_t, lr_t, hat_t) = parts(z_s), parts(z_t)
    tckd = lt_t.exp() * (lt_t - lt_s) + lr_t.exp() * (lr_t - lr_s)
    hat_t, hat_s = hat_t.masked_fill(target, 0.0), hat_s.masked_fill(target, 0.0)  # no -inf: finite gradients
    nckd = (hat_t.exp() * (hat_t - hat_s)).masked_fill(target, 0.0).sum(-1)  # exactly 0 at t
    return tckd, nckd, lr_t.exp()


def _dkd_loss(student_logits, teacher_logits, targets, t: float, tckd_weight: float,
              nckd_weight: float) -> torch.Tensor:
    """:func:`dkd_loss` without the argument checks."""
    tckd, nckd, _ = dkd_terms(student_logits, teacher_logits, targets, t)
    hard = F.cross_entropy(checks.full_precision(student_logits), targets.long())
    return hard + t * t * (tckd_weight * tckd.mean() + nckd_weight * nckd.mean())


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
             temperature: float = 4.0, tckd_weight: float = 1.0, nckd_weight: float = 8.0) -> torch.Tensor:
    """Decoupled KD: cross-entropy plus separately weighted target-class and non-target-class KD terms.

    See the module docstring for the formula; the defaults are the paper's CIFAR-100 settings, without mdistiller's
    20-epoch warm-up of the DKD term. Needs at least 2 classes. Float64 logits stay float64; half precision is
    computed in float32.
    """
    t = checks.positive("temperature", temperature)
    checks.tensor("student_logits", student_logits), checks.tensor("teacher_logits", teacher_logits)
    checks.tensor("targets", targets)
    checks.logits_pair(student_logits, teacher_logits)
    checks.targets(targets, student_logits)  # fewer than 2 classes: refused by dkd_terms, which every DKD path runs
    tc, nc = checks.non_negative("tckd_weight", tckd_weight), checks.non_negative("nckd_weight", nckd_weight)
    return _dkd_loss(student_logits, teacher_logits, targets, t, tc, nc)


class DecoupledKD(TeacherObjective):
    r"""Decoupled KD (Zhao et al. 2022): :math:`\mathrm{CE} + w_{\mathrm{TC}}\,T^2\,\mathrm{TCKD} +
    w_{\mathrm{NC}}\,T^2\,\mathrm{NCKD}`, the target-class and non-target-class parts of KD weighted apart.

    The teacher's logits come from ``teacher`` online or cached ``teacher_logits`` (:class:`TeacherObjective`).
    See :func:`kdtutor.losses.dkd_loss`; the defaults are the paper's CIFAR-100 settings.
    """

    settings = ("temperature", "tckd_weight", "nckd_weight")

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 4.0,
                 tckd_weight: float = 1.0, nckd_weight: float = 8.0, *, online: bool = False):
        super().__init__(teacher, teacher_logits, temperature, online=online, tckd_weight=tckd_weight,
                         nckd_weight=nckd_weight)

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        if out.ndim == 2 and out.shape[1] < 2:  # one class has no non-target classes: NCKD would be 0/0
            raise ValueError(f"model: DecoupledKD splits the classes into the target and the others, so it needs at "
                             f"least 2 outputs, got a model with {out.shape[1]}")
        super().check(out, batch)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return _dkd_loss(out, self.teacher_logits(batch), batch.y, self.temperature, self.tckd_weight,
                         self.nckd_weight)

