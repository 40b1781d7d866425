"""Losses: pure functions of tensors (logits in, a scalar out), each with its formula and paper in the docstring.

:mod:`~kdtutor.losses.logits` holds the Hinton et al. losses on logits (soft targets, KD, the mixed distillation
loss); :mod:`~kdtutor.losses.controls` the controls that test what soft targets carry (permuted soft targets,
entropy-matched label smoothing, logit matching); :mod:`~kdtutor.losses.updating` the losses for updating a deployed
model (Learning without Forgetting, focal distillation); :mod:`~kdtutor.losses.features` the losses beyond the
plain logit loss (FitNets hints, attention transfer, decoupled KD); :mod:`~kdtutor.losses.sequence` the divergences
for distilling a language model at every position of a sequence (forward and reverse KL, GKD's generalized
Jensen–Shannon divergence). Training objectives that hold a teacher or cached
outputs wrap these in :mod:`kdtutor.training.objectives`.
"""

from kdtutor.losses.controls import logit_matching_loss, permuted_soft_targets, smoothing_for_entropy
from kdtutor.losses.features import (
    attention_map,
    attention_transfer_loss,
    dkd_loss,
    dkd_loss_unchecked,
    dkd_terms,
    hint_loss,
)
from kdtutor.losses.logits import (
    distillation_loss,
    distillation_loss_unchecked,
    kd_loss,
    kd_loss_unchecked,
    kl_rows,
    soft_targets,
)
from kdtutor.losses.sequence import forward_kl, generalized_jsd, reverse_kl
from kdtutor.losses.updating import (
    focal_distillation_loss,
    focal_distillation_loss_unchecked,
    lwf_loss,
    lwf_loss_unchecked,
    old_class_index,
    per_sample_kl,
)

__all__ = [
    "distillation_loss", "distillation_loss_unchecked", "kd_loss", "kd_loss_unchecked", "kl_rows",
    "logit_matching_loss", "permuted_soft_targets", "smoothing_for_entropy", "soft_targets",
    "focal_distillation_loss", "focal_distillation_loss_unchecked", "lwf_loss", "lwf_loss_unchecked",
    "old_class_index", "per_sample_kl",
    "attention_map", "attention_transfer_loss", "dkd_loss", "dkd_loss_unchecked", "dkd_terms", "hint_loss",
    "forward_kl", "generalized_jsd", "reverse_kl",
]
