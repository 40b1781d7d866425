r"""Knowledge-distillation losses (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

With student logits :math:`z`, teacher logits :math:`v` and temperature :math:`T`, the soft targets are

.. math:: q_i = \mathrm{softmax}(z/T)_i = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}}, \qquad p_i = \mathrm{softmax}(v/T)_i .

The distillation loss is the KL divergence from the teacher's to the student's soft targets, scaled by
:math:`T^2` and averaged over the batch of :math:`B` samples:

.. math:: \mathcal{L}_{KD} = \frac{T^2}{B} \sum_{b=1}^{B} \sum_i p_{b,i} \, (\log p_{b,i} - \log q_{b,i}) ,

whose gradient is :math:`\partial \mathcal{L}_{KD} / \partial z_{b,i} = T (q_{b,i} - p_{b,i}) / B` — Hinton's
:math:`(q_i - p_i)/T` times :math:`T^2`. The :math:`T^2` keeps gradient magnitudes comparable across temperatures
and against the hard-label term, which is mixed in with weight :math:`1 - \alpha`.

The three bugs most often seen in the wild, each caught by the tests: forgetting :math:`T^2`; ``reduction="mean"``
(divides by :math:`B \cdot C` instead of :math:`B`); passing probabilities instead of log-probabilities to
``F.kl_div``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_temperature(temperature) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature: expected a positive finite number, got {temperature!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature: expected a positive finite number, got {temperature!r}")
    return t


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    return a


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.ndim != 2:
        raise ValueError(f"student_logits: expected shape (batch, classes), got {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits: shape {tuple(teacher_logits.shape)} does not match student_logits "
                         f"{tuple(student_logits.shape)}; both need the same batch size and number of classes")


def _check_targets(targets: torch.Tensor, logits: torch.Tensor) -> None:
    n, c = logits.shape
    if targets.dtype not in (torch.int64, torch.int32, torch.uint8) or targets.shape != (n,):
        raise ValueError(f"targets: expected {n} integer class indices, got {targets.dtype} of shape "
                         f"{tuple(targets.shape)}")
    if n and (int(targets.min()) < 0 or int(targets.max()) >= c):
        raise ValueError(f"targets: class indices must lie in [0, {c - 1}], got values from {int(targets.min())} "
                         f"to {int(targets.max())}")


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Softmax with temperature, :math:`\mathrm{softmax}(z/T)` over the last dimension.

    :math:`T = 1` is the ordinary softmax; larger :math:`T` gives softer distributions that reveal how the model
    ranks the wrong classes ("dark knowledge").
    """
    return F.softmax(logits / _check_temperature(temperature), dim=-1)


def _full(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (from mixed-precision training) are upcast to float32; float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    log_q = F.log_softmax(_full(student_logits) / t, dim=-1)
    log_p = F.log_softmax(_full(teacher_logits) / t, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * t * t


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r""":math:`T^2 \cdot \mathrm{KL}(\mathrm{softmax}(v/T) \,\|\, \mathrm{softmax}(z/T))`, averaged over the batch.

    Computed from log-softmax of both logits (numerically stable; half precision upcast to float32). The
    gradient with respect to the student logits is :math:`T (q - p) / B`. The teacher logits should carry no
    gradient (compute them under ``torch.no_grad()``). Hinton, Vinyals & Dean (2015), eq. (2) and §2.
    """
    t = _check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    return _kd_loss(student_logits, teacher_logits, t)


def _distillation_loss(student_logits, teacher_logits, targets, t: float, alpha: float) -> torch.Tensor:
    hard = F.cross_entropy(_full(student_logits), targets.long()) if alpha < 1 else student_logits.new_zeros(())
    soft = _kd_loss(student_logits, teacher_logits, t) if alpha > 0 else student_logits.new_zeros(())
    return alpha * soft + (1 - alpha) * hard


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    r""":math:`\alpha \, \mathcal{L}_{KD} + (1 - \alpha) \, \mathrm{CE}(z, y)`: soft targets mixed with hard labels.

    ``alpha = 1`` is pure distillation, ``alpha = 0`` ordinary training on labels. Because
    :math:`\mathcal{L}_{KD}` carries :math:`T^2`, ``alpha`` means the same thing at every temperature.
    Hinton, Vinyals & Dean (2015), §2.
    """
    t = _check_temperature(temperature)
    a = _check_alpha(alpha)
    _check_logits(student_logits, teacher_logits)
    _check_targets(targets, student_logits)
    return _distillation_loss(student_logits, teacher_logits, targets, t, a)
