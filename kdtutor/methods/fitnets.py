r"""FitNets (Romero et al. 2015, "FitNets: hints for thin deep nets"): a teacher's intermediate features as hints.

:func:`~kdtutor.losses.hint_loss` — *FitNets* hints (Romero et al. 2015): the student's intermediate features
:math:`s`, mapped to the teacher's width by a learned regressor :math:`r` (a 1×1 convolution, held by
:class:`~kdtutor.training.FitNets`), regress onto the teacher's features :math:`t` at the same depth:

.. math:: \mathcal{L}_{\mathrm{hint}} = \tfrac{1}{2}\,\mathrm{mean}\big((r(s) - t)^2\big).

The paper sums the squares; the mean over elements keeps the weight independent of the feature size. Against
mdistiller's FitNet (``F.mse_loss``, a plain mean without the :math:`\tfrac{1}{2}`): its ``FEAT_WEIGHT`` of 100
is a weight of 200 here. It trains in two stages (hints alone up to the guided layer, then the whole student
with KD); kdtutor adds the hint term to the training loss in one stage, as later benchmarks do.

:class:`~kdtutor.training.FitNets` holds the regressors and adds the term to ``fit``'s loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch, OnDevice
from kdtutor.methods.base import FeatureObjective
from kdtutor.models import record_activations

__all__ = ["FitNets", "hint_loss"]


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    r"""FitNets: :math:`\frac{1}{2}\mathrm{mean}((s - t)^2)` of the student's (regressed) and the teacher's features.

    The shapes must match: pass the student's features through the regressor first (see the module docstring).
    The :math:`\tfrac{1}{2}` makes a weight :math:`w` here equal to mdistiller's ``F.mse_loss`` weight :math:`w/2`.
    """
    checks.tensor("student_features", student_features), checks.tensor("teacher_features", teacher_features)
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"student_features: shape {tuple(student_features.shape)} does not match teacher_features "
                         f"{tuple(teacher_features.shape)}; map the student's features to the teacher's with a learned "
                         "regressor first (FitNets uses a 1x1 convolution: kdtutor.training.FitNets holds one)")
    s = checks.full_precision(student_features)  # half precision upcast to float32; float64 stays float64
    return 0.5 * F.mse_loss(s, teacher_features.to(s.dtype))


class FitNets(FeatureObjective):
    r"""FitNets hints (Romero et al. 2015): :math:`w \sum_{\mathrm{pairs}} \frac{1}{2}\mathrm{mean}((r(s) -
    t)^2)`, with one learned 1×1-convolution regressor :math:`r` per pair, trained with the student.

    The regressors are built when ``fit`` attaches the objective to the student (their widths come from one
    forward pass on two training images, in eval mode; their initial weights from ``fit``'s seed) and are trained
    by the same optimizer; they are not part of the student. A second ``fit`` on a student of the same widths
    continues with them; a student of other widths gets new ones.
    One stage, next to the other terms of the loss (the paper trained the hints first, in a stage of their own).
    See :func:`kdtutor.losses.hint_loss`.
    """

    def __init__(self, teacher_features: dict, pairs: dict, weight: float = 1.0):
        super().__init__(teacher_features, pairs, weight)
        self.regressors = nn.ModuleDict()

    def attach(self, model: nn.Module, train: OnDevice) -> None:
        x = next(train.batches(2)).x
        was_training = model.training
        model.eval()  # one pass to read the widths: no BatchNorm statistics updated, no gradients
        with torch.no_grad(), record_activations(model, self.features) as acts:
            model(x)
        model.train(was_training)
        widths = {}
        for s in self.pairs:
            checks.feature_maps(f"pairs (the output of student layer {s!r})", acts[s])
            widths[s] = acts[s].shape[1]
        if len(self.regressors) and all(self.regressors[_key(s)].in_channels == c for s, c in widths.items()):
            return  # a continued run on the same student: keep the trained regressors
        self.regressors = nn.ModuleDict({
            _key(s): nn.Conv2d(c, self.cache[self.pairs[s]].shape[1], kernel_size=1) for s, c in widths.items()
        })

    def forward(self, out: torch.Tensor, batch: Batch, features) -> torch.Tensor:
        return self.weight * sum(hint_loss(self.regressors[_key(s)](features[s]), self.teacher_features(batch, t))
                                 for s, t in self.pairs.items())


def _key(layer: str) -> str:
    return layer.replace(".", "_")  # ModuleDict keys cannot hold dots

