r"""Knowledge distillation as Hinton, Vinyals & Dean (2015) define it ("Distilling the Knowledge in a Neural Network").

With student logits :math:`z`, teacher logits :math:`v` and temperature :math:`T`, the soft targets are

.. math:: q_i = \mathrm{softmax}(z/T)_i = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}}, \qquad p_i = \mathrm{softmax}(v/T)_i .

The distillation loss is the KL divergence from the teacher's to the student's soft targets, scaled by
:math:`T^2` and averaged over the batch of :math:`B` samples:

.. math:: \mathcal{L}_{KD} = \frac{T^2}{B} \sum_{b=1}^{B} \sum_i p_{b,i} \, (\log p_{b,i} - \log q_{b,i}) ,

whose gradient is :math:`\partial \mathcal{L}_{KD} / \partial z_{b,i} = T (q_{b,i} - p_{b,i}) / B` — Hinton's
:math:`(q_i - p_i)/T` times :math:`T^2`. Without the :math:`T^2` the soft-target gradient would shrink like
:math:`1/T^2` as the temperature grows; with it, Hinton et al. note, the *relative* contributions of the soft and
the hard-label term (mixed in with weight :math:`1 - \alpha`) stay roughly unchanged when :math:`T` changes. It does
not make the two gradients equal in size, nor constant in :math:`T`: the book measures both in "The soft-target
gradient".

:class:`~kdtutor.training.Distillation` is the objective ``fit`` minimises with it (the teacher online or its cached
logits). Three bugs that are easy to make, each caught by the tests (:mod:`kdtutor.pitfalls` keeps them): forgetting
:math:`T^2`; ``reduction="mean"`` (divides by :math:`B \cdot C` instead of :math:`B`); passing probabilities instead
of log-probabilities to ``F.kl_div`` (never positive, and it pulls the student towards the teacher's argmax).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch, OnDevice
from kdtutor.methods.base import TeacherObjective

__all__ = ["Distillation", "distillation_loss", "kd_loss", "soft_targets"]


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Softmax with temperature, :math:`\mathrm{softmax}(z/T)` over the last dimension.

    :math:`T = 1` is the ordinary softmax; larger :math:`T` gives softer distributions that reveal how the model
    ranks the wrong classes ("dark knowledge").
    """
    return F.softmax(logits / checks.positive("temperature", temperature), dim=-1)


def _kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """:func:`kd_loss` without the argument checks, for the training loop (which checks once, not every step)."""
    log_q = F.log_softmax(checks.full_precision(student_logits) / t, dim=-1)
    log_p = F.log_softmax(checks.full_precision(teacher_logits) / t, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * t * t


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r""":math:`T^2 \cdot \mathrm{KL}(\mathrm{softmax}(v/T) \,\|\, \mathrm{softmax}(z/T))`, averaged over the batch.

    Computed from log-softmax of both logits (numerically stable; half precision upcast to float32). The
    gradient with respect to the student logits is :math:`T (q - p) / B`. The teacher logits should carry no
    gradient (compute them under ``torch.no_grad()``). Hinton, Vinyals & Dean (2015), eq. (2) and §2.
    """
    t = checks.positive("temperature", temperature)
    checks.tensor("student_logits", student_logits), checks.tensor("teacher_logits", teacher_logits)
    checks.logits_pair(student_logits, teacher_logits)
    return _kd_loss(student_logits, teacher_logits, t)


def _distillation_loss(student_logits, teacher_logits, targets, t: float, alpha: float) -> torch.Tensor:
    """:func:`distillation_loss` without the argument checks (the training loop checks once, up front)."""
    z = checks.full_precision(student_logits)
    hard = F.cross_entropy(z, targets.long()) if alpha < 1 else student_logits.new_zeros(())
    soft = _kd_loss(student_logits, teacher_logits, t) if alpha > 0 else student_logits.new_zeros(())
    return alpha * soft + (1 - alpha) * hard


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    r""":math:`\alpha \, \mathcal{L}_{KD} + (1 - \alpha) \, \mathrm{CE}(z, y)`: soft targets mixed with hard labels.

    ``alpha = 1`` is pure distillation, ``alpha = 0`` ordinary training on labels. :math:`\mathcal{L}_{KD}` carries
    :math:`T^2` so that, in Hinton, Vinyals & Dean's (2015, §2) words, the relative contributions of the hard and soft
    targets "remain roughly unchanged" when the temperature changes. Roughly, not exactly: ``alpha`` does not weigh
    the two terms the same at every temperature (the book measures the ratio of their gradients still moving a
    few-fold between :math:`T = 1` and :math:`T = 50`), so choose ``alpha`` and ``T`` together, on validation.

    ``alpha`` weighs the *soft* term, as in Hinton et al.'s description. torchdistill's ``KDLoss`` weighs the *hard*
    term with its ``alpha`` (and the soft term, also times :math:`T^2`, with ``1 - alpha``): its ``alpha=0.1`` is
    ``alpha=0.9`` here.
    """
    t = checks.positive("temperature", temperature)
    a = checks.probability("alpha", alpha)
    checks.tensor("student_logits", student_logits), checks.tensor("teacher_logits", teacher_logits)
    checks.tensor("targets", targets)
    checks.logits_pair(student_logits, teacher_logits)
    checks.targets(targets, student_logits)
    return _distillation_loss(student_logits, teacher_logits, targets, t, a)


class Distillation(TeacherObjective):
    r"""Hinton et al.'s (2015) loss :math:`\alpha\,T^2\,\mathrm{KL}(p^T \| q^T) + (1-\alpha)\,\mathrm{CE}(z, y)`.

    The teacher's logits come from ``teacher`` run online or from cached ``teacher_logits``
    (:class:`TeacherObjective`). See :func:`kdtutor.losses.distillation_loss` for the math.

    ``labelled`` (optional) is a boolean mask over the training samples: the rows marked ``False`` are *unlabelled
    transfer data* (Hinton et al. allow any transfer set) — they get only the soft term, and their label values are
    ignored (e.g. ``-1``) and not checked; the hard-label term averages over the labelled rows of each batch. The
    labels of the rows marked ``True`` are checked as strictly as ever.
    """

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 4.0,
                 alpha: float = 0.9, labelled=None, *, online: bool = False):
        super().__init__(teacher, teacher_logits, temperature, online=online)
        self.alpha = checks.probability("alpha", alpha)
        self.labelled = None if labelled is None else _as_mask(labelled)

    def setup(self, train: OnDevice, augment) -> None:
        if self.labelled is not None:
            if self.labelled.shape != (len(train),):
                raise ValueError(f"labelled: expected one entry per training sample ({len(train)}), got shape "
                                 f"{tuple(self.labelled.shape)}")
            self.labelled = self.labelled.to(train.device)
        super().setup(train, augment)

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        rows = self.labelled[batch.idx] if self.labelled is not None else slice(None)
        checks.targets(batch.y[rows], out[rows])
        checks.logits_pair(out, self.teacher_logits(batch))

    def soft(self, out: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        r"""The soft-target term: :math:`T^2\,\mathrm{KL}` at the temperature (subclasses change it)."""
        return _kd_loss(out, teacher_logits, self.temperature)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        teacher_logits = self.teacher_logits(batch)
        if self.labelled is None and type(self).soft is Distillation.soft:
            return _distillation_loss(out, teacher_logits, batch.y, self.temperature, self.alpha)
        soft = self.soft(out, teacher_logits) if self.alpha > 0 else out.new_zeros(())
        if self.alpha == 1:
            return soft
        if self.labelled is None:
            hard = F.cross_entropy(out.float(), batch.y.long())
        else:  # the mean cross-entropy over the labelled rows of the batch (0 if it has none), without a host sync
            rows = self.labelled[batch.idx]
            per_row = F.cross_entropy(out.float(), torch.where(rows, batch.y, 0).long(), reduction="none")
            hard = (per_row * rows).sum() / rows.sum().clamp_min(1)
        return self.alpha * soft + (1 - self.alpha) * hard

    def extra_repr(self) -> str:
        unlabelled = "" if self.labelled is None else f", {int((~self.labelled).sum())} unlabelled rows"
        return f"{self.source()}, temperature={self.temperature}, alpha={self.alpha}{unlabelled}"


def _as_mask(mask) -> torch.Tensor:
    mask = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask)
    if mask.dtype != torch.bool or mask.ndim != 1:
        raise ValueError(f"labelled: expected a 1-D boolean mask over the training samples, got {mask.dtype} of shape "
                         f"{tuple(mask.shape)}")
    return mask

