r"""Controls for the question "is it really dark knowledge?": soft targets with their structure destroyed, label
smoothing of the same entropy, and regressing logits directly.

* :func:`~kdtutor.losses.permuted_soft_targets` keeps the teacher's probability of the true class and shuffles
  the probabilities of the other classes among them, per sample (Furlanello et al. 2018, "Born-again neural
  networks"): the confidence survives, the similarity structure between classes does not.
* :func:`~kdtutor.losses.smoothing_for_entropy` finds the label-smoothing :math:`\epsilon` whose targets carry a
  given entropy (Müller, Kornblith & Hinton 2019; Yuan et al. 2020): uniform "dark knowledge" of the same softness.

Both are pure functions of tensors; the third control, logit matching, is a method of its own
(:mod:`kdtutor.methods.logit_matching`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdtutor import checks

__all__ = ["permuted_soft_targets", "smoothing_for_entropy"]


def permuted_soft_targets(teacher_logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Logits whose soft targets at ``temperature`` are the teacher's with the non-target probabilities permuted.

    For each row, :math:`p = \mathrm{softmax}(v/T)`; the entries :math:`p_i, i \ne y` are shuffled among the
    non-target classes (a fresh random permutation per row, from ``generator``), :math:`p_y` stays. The result is
    returned as logits :math:`T \log p'`, so that ``softmax(result / T) == p'`` and it can stand in wherever teacher
    logits are expected (e.g. cached ``teacher_logits`` at the same temperature). Furlanello et al. (2018).
    """
    t = checks.positive("temperature", temperature)
    checks.targets(targets, teacher_logits)
    n, c = teacher_logits.shape
    p = F.softmax(teacher_logits.double() / t, dim=1)
    # per row: a random order of the classes, then the target moved back to its own place
    keys = torch.rand(n, c, generator=generator, dtype=torch.float64)
    keys[torch.arange(n), targets.long()] = -1.0  # sorts first: position 0 of the order is the target
    order = keys.argsort(dim=1)  # order[:, 0] == target; order[:, 1:] a random permutation of the others
    others = torch.ones(n, c, dtype=torch.bool)
    others[torch.arange(n), targets.long()] = False
    source = torch.arange(c).expand(n, c)[others].reshape(n, c - 1)  # non-target classes in natural order
    permuted = p.clone()
    permuted.scatter_(1, source, p.gather(1, order[:, 1:]))
    return (t * permuted.clamp_min(1e-300).log()).to(teacher_logits.dtype)


def smoothing_for_entropy(entropy: float, classes: int) -> float:
    r"""The :math:`\epsilon` of label smoothing whose target distribution has the given entropy (in nats).

    Smoothed targets put :math:`1 - \epsilon + \epsilon/C` on the true class and :math:`\epsilon/C` on each of the
    other :math:`C - 1`; their entropy grows from 0 at :math:`\epsilon = 0` to :math:`\log C` at
    :math:`\epsilon = 1`, so bisection finds the one :math:`\epsilon`.
    """
    checks.positive_int("classes", classes)
    if classes < 2 or not 0 <= entropy <= math.log(classes):
        raise ValueError(f"entropy: expected a number in [0, log {classes}] = [0, {math.log(classes):.4f}] nats, got "
                         f"{entropy!r}")

    def h(eps: float) -> float:
        top, rest = 1 - eps + eps / classes, eps / classes
        return -sum(q * math.log(q) for q in [top] + [rest] * (classes - 1) if q > 0)

    low, high = 0.0, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if h(mid) < entropy else (low, mid)
    return (low + high) / 2

