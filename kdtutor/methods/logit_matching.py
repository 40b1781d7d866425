r"""Logit matching (Ba & Caruana 2014): regress the student's logits onto the teacher's.

The limit Hinton et al.'s loss reaches at high temperature (Hinton et al. 2015, §2.1): with centred logits the
gradient of :func:`~kdtutor.losses.logit_matching_loss` is exactly the limit of
:func:`~kdtutor.losses.kd_loss`'s as :math:`T \to \infty`. :class:`~kdtutor.training.LogitMatching` is
:class:`~kdtutor.training.Distillation` with this soft term and no temperature.
"""

from __future__ import annotations

import torch
from torch import nn

from kdtutor import checks
from kdtutor.methods.hinton import Distillation

__all__ = ["LogitMatching", "logit_matching_loss"]


def logit_matching_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    r"""Half the mean squared difference of the *centred* logits, :math:`\frac{1}{2BC}\sum_{b,i}(\bar z_{b,i} -
    \bar v_{b,i})^2`, where :math:`\bar z = z - \mathrm{mean}_i z`.

    Ba & Caruana (2014) regress a student's logits onto a teacher's. Centring removes the one direction softmax
    ignores; with it, the gradient :math:`(\bar z - \bar v)/(BC)` is exactly the limit of :func:`kd_loss`'s gradient
    as :math:`T \to \infty` for zero-mean logits (Hinton et al. 2015, §2.1).
    """
    checks.logits_pair(student_logits, teacher_logits)
    z = student_logits.float() if student_logits.dtype in (torch.float16, torch.bfloat16) else student_logits
    v = teacher_logits.to(z.dtype)
    diff = (z - z.mean(1, keepdim=True)) - (v - v.mean(1, keepdim=True))
    return 0.5 * diff.pow(2).mean()


class LogitMatching(Distillation):
    r"""Regress the student's logits onto the teacher's (Ba & Caruana 2014), mixed with the hard labels:
    :math:`\alpha\,\frac{1}{2BC}\sum(\bar z - \bar v)^2 + (1-\alpha)\,\mathrm{CE}(z, y)` on centred logits.

    The high-temperature limit of :class:`Distillation` (see :func:`kdtutor.losses.logit_matching_loss`); the
    teacher, cached ``teacher_logits`` and ``labelled`` work as there. There is no temperature.
    """

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, alpha: float = 1.0, labelled=None, *,
                 online: bool = False):
        super().__init__(teacher, teacher_logits, temperature=1.0, alpha=alpha, labelled=labelled, online=online)

    def soft(self, out: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return logit_matching_loss(out, teacher_logits)

    def extra_repr(self) -> str:
        return super().extra_repr().replace("temperature=1.0, ", "")

