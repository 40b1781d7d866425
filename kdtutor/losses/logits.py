r"""Knowledge-distillation losses (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

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

Three bugs that are easy to make, each caught by the tests (:mod:`kdtutor.pitfalls` keeps them): forgetting
:math:`T^2`; ``reduction="mean"`` (divides by :math:`B \cdot C` instead of :math:`B`); passing probabilities instead
of log-probabilities to ``F.kl_div`` (never positive, and it pulls the student towards the teacher's argmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtutor import checks

__all__ = [
    "distillation_loss", "kd_loss", "kd_loss_unchecked", "distillation_loss_unchecked", "kl_rows", "soft_targets",
]


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Softmax with temperature, :math:`\mathrm{softmax}(z/T)` over the last dimension.

    :math:`T = 1` is the ordinary softmax; larger :math:`T` gives softer distributions that reveal how the model
    ranks the wrong classes ("dark knowledge").
    """
    return F.softmax(logits / checks.temperature(temperature), dim=-1)


def _full(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (from mixed-precision training) are upcast to float32; float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def kl_rows(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(a \,\|\, b) = \sum_i a_i (\log a_i - \log b_i)` for each row, from log-probabilities.

    A tensor with the last dimension summed away, no mean and no :math:`T^2`: the building block of the losses that
    weigh or mask rows (:func:`~kdtutor.losses.per_sample_kl`, the sequence divergences). Both arguments are
    log-probabilities (``log_softmax``); their order is the direction — ``kl_rows(log_p, log_q)`` is KL(teacher ‖
    student) when ``p`` is the teacher's. The two must have the same shape (no broadcasting: a missing row or class
    dimension would silently pair the wrong rows).
    """
    if log_a.shape != log_b.shape:
        raise ValueError(f"log_b: expected the shape of log_a {tuple(log_a.shape)}, got {tuple(log_b.shape)}")
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def kd_loss_unchecked(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """:func:`kd_loss` without the argument checks, for the training loop (which checks once, not every step)."""
    log_q = F.log_softmax(_full(student_logits) / t, dim=-1)
    log_p = F.log_softmax(_full(teacher_logits) / t, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * t * t


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r""":math:`T^2 \cdot \mathrm{KL}(\mathrm{softmax}(v/T) \,\|\, \mathrm{softmax}(z/T))`, averaged over the batch.

    Computed from log-softmax of both logits (numerically stable; half precision upcast to float32). The
    gradient with respect to the student logits is :math:`T (q - p) / B`. The teacher logits should carry no
    gradient (compute them under ``torch.no_grad()``). Hinton, Vinyals & Dean (2015), eq. (2) and §2.
    """
    t = checks.temperature(temperature)
    checks.tensor(student_logits, "student_logits"), checks.tensor(teacher_logits, "teacher_logits")
    checks.logits_pair(student_logits, teacher_logits)
    return kd_loss_unchecked(student_logits, teacher_logits, t)


def distillation_loss_unchecked(student_logits, teacher_logits, targets, t: float, alpha: float) -> torch.Tensor:
    """:func:`distillation_loss` without the argument checks (the training loop checks once, up front)."""
    hard = F.cross_entropy(_full(student_logits), targets.long()) if alpha < 1 else student_logits.new_zeros(())
    soft = kd_loss_unchecked(student_logits, teacher_logits, t) if alpha > 0 else student_logits.new_zeros(())
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
    t = checks.temperature(temperature)
    a = checks.alpha(alpha)
    checks.tensor(student_logits, "student_logits"), checks.tensor(teacher_logits, "teacher_logits")
    checks.tensor(targets, "targets")
    checks.logits_pair(student_logits, teacher_logits)
    checks.targets(targets, student_logits)
    return distillation_loss_unchecked(student_logits, teacher_logits, targets, t, a)
