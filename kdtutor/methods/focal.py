r"""Focal distillation (Yan et al. 2021, "Positive-congruent training"): fewer negative flips on an update.

:func:`~kdtutor.losses.focal_distillation_loss` — *focal distillation* (Yan et al. 2021, "Positive-congruent
training"): distil from the old model, but weigh each sample more where the old model was **right**, so that the
new model keeps those answers (fewer *negative flips*: images the old model got right and the new one gets wrong):

.. math::

   \mathcal{L} = \mathrm{CE}(z, y) + \frac{1}{B} \sum_b w_b \, T^2 \,
   \mathrm{KL}\big(\mathrm{softmax}(v_b / T) \,\|\, \mathrm{softmax}(z_b / T)\big), \qquad
   w_b = \beta_0 + \beta_1 \, [\arg\max v_b = y_b],

``base_weight`` :math:`\beta_0` and ``focal_weight`` :math:`\beta_1` (named so as not to collide with ``alpha``
of :func:`~kdtutor.losses.distillation_loss`). ``focal_weight = 0`` is plain distillation from the old model
added to the cross-entropy. The KL term carries :math:`T^2`, as in :func:`~kdtutor.losses.kd_loss`.

Float64 logits stay float64 (``torch.autograd.gradcheck`` works); half precision is computed in float32.
:class:`~kdtutor.training.FocalDistillation` is the objective ``fit`` minimises with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch
from kdtutor.methods.base import TeacherObjective
from kdtutor.methods.divergence import per_sample_kl

__all__ = ["FocalDistillation", "focal_distillation_loss"]


def _focal_distillation_loss(student_logits, old_logits, targets, t: float, base_weight: float,
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
    t = checks.positive("temperature", temperature)
    checks.tensor("student_logits", student_logits), checks.tensor("old_logits", old_logits)
    checks.tensor("targets", targets)
    checks.logits_pair(student_logits, old_logits)
    checks.targets(targets, student_logits)
    base, focal = checks.non_negative("base_weight", base_weight), checks.non_negative("focal_weight", focal_weight)
    return _focal_distillation_loss(student_logits, old_logits, targets, t, base, focal)


class FocalDistillation(TeacherObjective):
    r"""Focal distillation from the model being replaced (Yan et al. 2021): fewer negative flips on an update.

    :math:`\mathrm{CE}(z, y) + \frac{1}{B}\sum_b (\beta_0 + \beta_1 [\arg\max v_b = y_b])\,T^2\,\mathrm{KL}_b`
    with the old model's logits :math:`v` (``teacher`` online or cached ``teacher_logits``): the samples the old
    model got right weigh ``base_weight + focal_weight``, the others ``base_weight``. See
    :func:`kdtutor.losses.focal_distillation_loss`.
    """

    settings = ("temperature", "base_weight", "focal_weight")

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 1.0,
                 base_weight: float = 1.0, focal_weight: float = 5.0, *, online: bool = False):
        super().__init__(teacher, teacher_logits, temperature, online=online, base_weight=base_weight,
                         focal_weight=focal_weight)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return _focal_distillation_loss(out, self.teacher_logits(batch), batch.y, self.temperature,
                                        self.base_weight, self.focal_weight)

