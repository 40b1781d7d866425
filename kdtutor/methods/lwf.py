r"""Learning without Forgetting (Li & Hoiem 2016): update a model with new classes and keep the old ones.

:func:`~kdtutor.losses.lwf_loss` — *Learning without Forgetting* (Li & Hoiem 2016): when new classes arrive,
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

Float64 logits stay float64 (``torch.autograd.gradcheck`` works); half precision is computed in float32.
:class:`~kdtutor.training.LearningWithoutForgetting` is the objective ``fit`` minimises with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch
from kdtutor.methods.base import TeacherObjective
from kdtutor.methods.divergence import per_sample_kl

__all__ = ["LearningWithoutForgetting", "lwf_loss", "old_class_index"]


def _lwf_loss(student_logits, old_logits, targets, old_classes: torch.Tensor, t: float,
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
    t = checks.positive("temperature", temperature)
    weight = checks.non_negative("lwf_weight", lwf_weight)
    checks.tensor("student_logits", student_logits), checks.tensor("old_logits", old_logits)
    checks.tensor("targets", targets)
    checks.targets(targets, student_logits)
    index = old_class_index(old_classes, student_logits, old_logits)
    return _lwf_loss(student_logits, old_logits, targets, index.to(student_logits.device), t, weight)


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


class LearningWithoutForgetting(TeacherObjective):
    r"""Learning without Forgetting (Li & Hoiem 2016): new labels, and the old model's outputs for the old classes.

    :math:`\mathrm{CE}(z, y) + \lambda_o\,T^2\,\mathrm{KL}(\mathrm{softmax}(v/T) \,\|\,
    \mathrm{softmax}(z_{\mathrm{old}}/T))`, where the old model (``teacher`` online or cached ``teacher_logits``,
    run on the *new* training data) has fewer outputs than the student: ``old_classes`` maps its ``k``-th output to
    the student's class ``old_classes[k]``. The new data need hold no old class, so the cached logits are not
    checked for agreement with the labels. See :func:`kdtutor.losses.lwf_loss`.
    """

    check_alignment = False  # the old model cannot predict the new classes: disagreement with the labels is expected
    settings = ("old_classes", "temperature", "lwf_weight")

    def __init__(self, old_classes, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 2.0,
                 lwf_weight: float = 1.0, *, online: bool = False):
        super().__init__(teacher, teacher_logits, temperature, online=online, lwf_weight=lwf_weight)
        self.register_buffer("old_classes", _as_class_index(old_classes), persistent=False)

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        checks.targets(batch.y, out)
        # the explicit class-count check of LwF: fewer old outputs than new classes is allowed, and mapped
        self.old_classes = old_class_index(self.old_classes, out, self.teacher_logits(batch)).to(out.device)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return _lwf_loss(out, self.teacher_logits(batch), batch.y, self.old_classes, self.temperature,
                         self.lwf_weight)


def _as_class_index(old_classes) -> torch.Tensor:
    """LwF's ``old_classes`` as a tensor (a string such as ``"012"`` is refused: it is not a list of classes)."""
    try:
        index = None if isinstance(old_classes, (str, bytes)) else torch.as_tensor(old_classes)
    except (TypeError, ValueError, RuntimeError):
        index = None
    if index is None:  # the values themselves are checked against the logits on the first batch
        raise TypeError(f"old_classes: expected a sequence of integer class indices such as [0, 1, 2] (the student's "
                        f"class of each old output), got {old_classes!r}")
    return index

