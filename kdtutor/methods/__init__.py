"""Methods: one module per distillation method, its pure loss and its training objective side by side.

Each module reads top to bottom: the formula and the paper (module docstring), the loss as a pure function of
tensors (checked arguments; a private unchecked twin that the objective calls on every step), then the objective
that :func:`~kdtutor.training.fit` minimises. A new method is a new module here and one line below.

* :mod:`~kdtutor.methods.base` — ``Objective`` and its bases for teachers (``TeacherObjective``) and cached features
  (``FeatureObjective``), ``CrossEntropy``, ``Sum``;
* :mod:`~kdtutor.methods.divergence` — the shared building blocks ``kl_rows`` and ``per_sample_kl``;
* :mod:`~kdtutor.methods.hinton` — soft targets, the KD loss and ``Distillation`` (Hinton et al. 2015);
* :mod:`~kdtutor.methods.logit_matching` — ``LogitMatching`` (Ba & Caruana 2014);
* :mod:`~kdtutor.methods.controls` — permuted soft targets and entropy-matched label smoothing (controls, no
  objective of their own: they make teacher logits and a ``CrossEntropy`` setting);
* :mod:`~kdtutor.methods.dkd` — ``DecoupledKD`` (Zhao et al. 2022);
* :mod:`~kdtutor.methods.fitnets` — ``FitNets`` hints (Romero et al. 2015);
* :mod:`~kdtutor.methods.attention` — ``AttentionTransfer`` (Zagoruyko & Komodakis 2017);
* :mod:`~kdtutor.methods.lwf` — ``LearningWithoutForgetting`` (Li & Hoiem 2016);
* :mod:`~kdtutor.methods.focal` — ``FocalDistillation`` (Yan et al. 2021);
* :mod:`~kdtutor.methods.sequence` — the token-level divergences of a language model (forward and reverse KL, GKD's
  generalized JSD), its cross-entropy, and ``TokenKD``, the objective :func:`kdtutor.lm.train` minimises with them.

:mod:`kdtutor.losses` and :mod:`kdtutor.training` re-export these names; import them from there.
"""

from kdtutor.methods.attention import AttentionTransfer, attention_map, attention_transfer_loss
from kdtutor.methods.base import CrossEntropy, FeatureObjective, Objective, Sum, TeacherObjective
from kdtutor.methods.controls import permuted_soft_targets, smoothing_for_entropy
from kdtutor.methods.divergence import kl_rows, per_sample_kl
from kdtutor.methods.dkd import DecoupledKD, dkd_loss, dkd_terms
from kdtutor.methods.fitnets import FitNets, hint_loss
from kdtutor.methods.focal import FocalDistillation, focal_distillation_loss
from kdtutor.methods.hinton import Distillation, distillation_loss, kd_loss, soft_targets
from kdtutor.methods.logit_matching import LogitMatching, logit_matching_loss
from kdtutor.methods.lwf import LearningWithoutForgetting, lwf_loss, old_class_index
from kdtutor.methods.sequence import TokenKD, forward_kl, generalized_jsd, reverse_kl, token_cross_entropy

__all__ = [
    "CrossEntropy", "FeatureObjective", "Objective", "Sum", "TeacherObjective", "kl_rows", "per_sample_kl",
    "Distillation", "distillation_loss", "kd_loss", "soft_targets",
    "LogitMatching", "logit_matching_loss",
    "permuted_soft_targets", "smoothing_for_entropy",
    "DecoupledKD", "dkd_loss", "dkd_terms",
    "FitNets", "hint_loss",
    "AttentionTransfer", "attention_map", "attention_transfer_loss",
    "LearningWithoutForgetting", "lwf_loss", "old_class_index",
    "FocalDistillation", "focal_distillation_loss",
    "TokenKD", "forward_kl", "generalized_jsd", "reverse_kl", "token_cross_entropy",
]
