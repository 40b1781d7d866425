r"""Losses for updating a deployed model: keep what the old model knew while the new one learns.

* :func:`~kdtutor.losses.lwf_loss` — *Learning without Forgetting* (Li & Hoiem 2016): when new classes arrive,
  train on the new data's labels while distilling the **old model's outputs on the new data** for the old classes,
  so the old classes are kept without storing any old data. The old model has fewer outputs than the new one;
  ``old_classes`` says which of the new model's outputs they correspond to, and the distillation term compares the
  softmax over those columns only:

  .. math::

     \mathcal{L} = \mathrm{CE}(z, y) + \lambda_o \, T^2 \,
     \mathrm{KL}\big(\mathrm{softmax}(v / T) \,\|\, \mathrm{softmax}(z_{\mathrm{old}} / T)\big),

  with :math:`z_{\mathrm{old}}` the new model's logits at ``old_classes``. Li & Hoiem use :math:`T = 2` and
  :math:`\lambda_o = 1`, on a cross-entropy with the old model's softened outputs and **without** the :math:`T^2`
  factor kept here (as in :func:`~kdtutor.losses.kd_loss`). The cross-entropy differs from the KL by the old model's
  entropy, a constant, so the gradients agree when ``lwf_weight`` :math:`= \lambda_o / T^2`: the paper's setting is
  ``lwf_weight=0.25`` at ``temperature=2``; the default ``lwf_weight=1`` weighs the old classes :math:`T^2 = 4` times
  more than the paper does.

* :func:`~kdtutor.losses.focal_distillation_loss` — *focal distillation* (Yan et al. 2021, "Positive-congruent
  training"): distil from the old model, but weigh each sample more where the old model was **right**, so that the
  new model keeps those answers (fewer *negative flips*: images the old model got right and the new one gets wrong):

  .. math::

     \mathcal{L} = \mathrm{CE}(z, y) + \frac{1}{B} \sum_b w_b \, T^2 \,
     \mathrm{KL}\big(\mathrm{softmax}(v_b / T) \,\|\, \mathrm{softmax}(z_b / T)\big), \qquad
     w_b = \beta_0 + \beta_1 \, [\arg\max v_b = y_b],

  ``base_weight`` :math:`\beta_0` and ``focal_weight`` :math:`\beta_1` (named so as not to collide with ``alpha``
  of :func:`~kdtutor.losses.distillation_loss`). ``focal_weight = 0`` is plain distillation from the old model
  added to the cross-entropy. The KL term carries :math:`T^2`, as in :func:`~kdtutor.losses.kd_loss`.

Both are pure functions of tensors; the ``*_unchecked`` versions skip the argument checks (the training loop checks
once, on its first batch). Float64 logits stay float64 (``torch.autograd.gradcheck`` works); half precision is
computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtutor import checks
from kdtutor.losses.logits import kl_rows

__all__ = [
    "focal_distillation_loss", "focal_distillation_loss_unchecked", "lwf_loss", "lwf_loss_unchecked",
    "old_class_index", "per_sample_kl",
]


def per_sample_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    r""":math:`T^2\,\mathrm{KL}(\mathrm{softmax}(v/T) \| \mathrm{softmax}(z/T))` for each row (a vector, no mean)."""
    z = checks.full_precision(student_logits)  # half precision upcast to float32; float64 stays float64
    log_q = F.log_softmax(z / t, dim=-1)
    log_p = F.log_softmax(teacher_logits.to(z.dtype) / t, dim=-1)
    return kl_rows(log_p, log_q) * t * t


def focal_distillation_loss_unchecked(student_logits, old_logits, targets, t: float, base_weight: float,
                                      focal_weight: float) -> torch.Tensor:
    """:func:`focal_distillation_loss` without the argument checks."""
    old_right = (old_logits.argmax(-1) == targets).float()
    weights = base_weight + focal_weight * old_right
    hard = F.cross_entropy(checks.full_precision(student_logits), targets.long())
    return hard + (weights * per_sample_kl(student_logits, old_logits, t)).mean()


def focal_distillation_loss(student_logits: torch.Tensor, old_logits: torch.Tensor, targets: torch.Tensor,
                            temperature: float = 1.0, base_weight: float = 1.0,
                            focal_weight: float = 5.0) -> torch.Tensor:
    """Cross-entropy plus distillation from the old model, weighted up where the old model was right.

    See the module docstring for the formula. ``old_logits`` are the old model's logits on the same batch (same
    classes as the new model's). Weights must be non-negative.
    """
    t = checks.temperature(temperature)
    checks.tensor(student_logits, "student_logits"), checks.tensor(old_logits, "old_logits")
    checks.tensor(targets, "targets")
    checks.logits_pair(student_logits, old_logits)
    checks.targets(targets, student_logits)
    base, focal = checks.non_negative(base_weight, "base_weight"), checks.non_negative(focal_weight, "focal_weight")
    return focal_distillation_loss_unchecked(student_logits, old_logits, targets, t, base, focal)


def lwf_loss_unchecked(student_logits, old_logits, targets, old_classes: torch.Tensor, t: float,
                       lwf_weight: float) -> torch.Tensor:
    """:func:`lwf_loss` without the argument checks (``old_classes`` already an index tensor on the device)."""
    hard = F.cross_entropy(checks.full_precision(student_logits), targets.long())
    kept = student_logits.index_select(-1, old_classes)
    return hard + lwf_weight * per_sample_kl(kept, old_logits, t).mean()


def lwf_loss(student_logits: torch.Tensor, old_logits: torch.Tensor, targets: torch.Tensor, old_classes,
             temperature: float = 2.0, lwf_weight: float = 1.0) -> torch.Tensor:
    """Learning without Forgetting: labels for all classes, the old model's soft targets for the old ones.

    ``student_logits``: the new model's logits, ``batch x C_new``; ``old_logits``: the old model's, ``batch x
    C_old`` with ``C_old < C_new`` allowed (that is the point); ``old_classes``: ``C_old`` distinct indices into the
    new model's classes, the ``k``-th old output being new class ``old_classes[k]``.
    """
    t = checks.temperature(temperature)
    weight = checks.non_negative(lwf_weight, "lwf_weight")
    checks.tensor(student_logits, "student_logits"), checks.tensor(old_logits, "old_logits")
    checks.tensor(targets, "targets")
    checks.targets(targets, student_logits)
    index = old_class_index(old_classes, student_logits, old_logits)
    return lwf_loss_unchecked(student_logits, old_logits, targets, index.to(student_logits.device), t, weight)


def old_class_index(old_classes, student_logits: torch.Tensor, old_logits: torch.Tensor) -> torch.Tensor:
    """``old_classes`` as an int64 tensor, checked against both logits (LwF's explicit class-count check)."""
    if student_logits.ndim != 2 or old_logits.ndim != 2 or len(old_logits) != len(student_logits):
        raise ValueError(f"old_logits: expected shape (batch, old classes) with the student's batch size "
                         f"{len(student_logits) if student_logits.ndim else '?'}, got {tuple(old_logits.shape)} "
                         f"against student_logits {tuple(student_logits.shape)}")
    index = torch.as_tensor(old_classes)
    n_new, n_old = student_logits.shape[1], old_logits.shape[1]
    if index.ndim != 1 or index.is_floating_point() or index.dtype == torch.bool or len(index) != n_old:
        raise ValueError(f"old_classes: expected {n_old} integer indices (one per column of old_logits), got "
                         f"{index.tolist() if index.numel() < 20 else tuple(index.shape)}")
    if len(set(index.tolist())) != n_old or int(index.min()) < 0 or int(index.max()) >= n_new:
        raise ValueError(f"old_classes: expected distinct indices into the student's {n_new} classes, got "
                         f"{index.tolist()}")
    return index.long()
