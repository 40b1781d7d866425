r"""Attention transfer (Zagoruyko & Komodakis 2017, "Paying more attention to attention").

:func:`~kdtutor.losses.attention_map` and :func:`~kdtutor.losses.attention_transfer_loss` — *attention transfer*
(Zagoruyko & Komodakis 2017): a feature map :math:`A` of shape ``B x C x H x W`` becomes a spatial attention
map :math:`Q(A) = \mathrm{vec}\big(\frac{1}{C}\sum_c |A_c|^p\big) / \big\|\mathrm{vec}(\cdot)\big\|_2`
(:math:`p = 2`), and the student's map is pulled towards the teacher's at the same resolution:

.. math:: \mathcal{L}_{\mathrm{AT}} = \mathrm{mean}_{b,i}\big(Q(S)_{b,i} - Q(T)_{b,i}\big)^2.

The channel counts may differ; the spatial sizes must match. This is the authors' code's form (squared
differences, averaged, times :math:`\beta` per pair of layers), so their weight :math:`\beta = 1000` applies to it
as is. The paper's equation writes :math:`\tfrac{\beta}{2}` and a (non-squared) :math:`p`-norm of the difference
instead; this loss has no :math:`/2`.

:class:`~kdtutor.training.AttentionTransfer` adds the term to ``fit``'s loss, from cached teacher features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtutor import checks
from kdtutor.data import Batch
from kdtutor.methods.base import FeatureObjective

__all__ = ["AttentionTransfer", "attention_map", "attention_transfer_loss"]


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    r"""Zagoruyko & Komodakis' spatial attention: :math:`\mathrm{vec}(\mathrm{mean}_c |A_c|^p)`, L2-normalised.

    ``features``: ``B x C x H x W``; returns ``B x (H*W)``, each row of unit length.
    """
    checks.feature_maps("features", features)
    p = checks.positive("p", p)  # a positive finite exponent
    return F.normalize(checks.full_precision(features).abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                            p: float = 2.0) -> torch.Tensor:
    r"""Attention transfer: :math:`\mathrm{mean}_{b,i}(Q(S) - Q(T))^2`; channel counts may differ, sizes may not.

    The authors' code's form, to be weighted by their :math:`\beta` (1000) as is: no :math:`\beta/2` as in the
    paper's equation. The teacher's maps are computed in the student's precision.
    """
    checks.feature_maps("student_features", student_features)
    checks.feature_maps("teacher_features", teacher_features)
    s, t = student_features.shape, teacher_features.shape
    if s[0] != t[0] or s[2:] != t[2:]:
        raise ValueError(f"teacher_features: shape {tuple(t)} does not match student_features {tuple(s)} in batch "
                         "size or height x width; attention maps are compared at the same resolution")
    dtype = checks.full_precision(student_features).dtype  # the teacher's maps in the student's precision
    return (attention_map(student_features, p) - attention_map(teacher_features.to(dtype), p)).pow(2).mean()


class AttentionTransfer(FeatureObjective):
    r"""Attention transfer (Zagoruyko & Komodakis 2017): :math:`\beta \sum_{\mathrm{pairs}}
    \mathrm{mean}(Q(S) - Q(T))^2` with the paper's :math:`\beta = 1000` as ``weight``.

    See :func:`kdtutor.losses.attention_transfer_loss`. Paired layers must have the same height and width; their
    channel counts may differ.
    """

    def __init__(self, teacher_features: dict, pairs: dict, weight: float = 1000.0, p: float = 2.0):
        super().__init__(teacher_features, pairs, weight)
        self.p = checks.positive("p", p)

    def forward(self, out: torch.Tensor, batch: Batch, features) -> torch.Tensor:
        return self.weight * sum(attention_transfer_loss(features[s], self.teacher_features(batch, t), self.p)
                                 for s, t in self.pairs.items())

