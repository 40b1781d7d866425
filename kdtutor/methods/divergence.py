r"""The building blocks several methods share: the KL divergence row by row, from log-probabilities, and the
per-sample :math:`T^2`-scaled KL of two sets of logits (the weighted and masked losses of focal distillation, Learning
without Forgetting and the sequence divergences start from these). Pure functions of tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtutor import checks

__all__ = ["kl_rows", "per_sample_kl"]


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


def per_sample_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r""":math:`T^2\,\mathrm{KL}(\mathrm{softmax}(v/T) \| \mathrm{softmax}(z/T))` for each row (a vector, no mean)."""
    t = temperature
    z = checks.full_precision(student_logits)  # half precision upcast to float32; float64 stays float64
    log_q = F.log_softmax(z / t, dim=-1)
    log_p = F.log_softmax(teacher_logits.to(z.dtype) / t, dim=-1)
    return kl_rows(log_p, log_q) * t * t

