"""Losses: the pure functions of tensors (logits in, a scalar out) of every method, in one index.

Each lives in its method's module of :mod:`kdtutor.methods`, beside the objective that trains with it, with its
formula and paper in the docstrings: the soft targets and the KD loss (:mod:`~kdtutor.methods.hinton`), logit
matching, the controls of "is it really dark knowledge?" (:mod:`~kdtutor.methods.controls`), decoupled KD, FitNets
hints, attention transfer, Learning without Forgetting, focal distillation, and the token-level divergences of a
language model (:mod:`~kdtutor.methods.sequence`). None of them touches a model, a dataset or a device.
"""

from kdtutor.methods import (
    attention_map,
    attention_transfer_loss,
    distillation_loss,
    dkd_loss,
    dkd_terms,
    focal_distillation_loss,
    forward_kl,
    generalized_jsd,
    hint_loss,
    kd_loss,
    kl_rows,
    logit_matching_loss,
    lwf_loss,
    old_class_index,
    per_sample_kl,
    permuted_soft_targets,
    reverse_kl,
    smoothing_for_entropy,
    soft_targets,
    token_cross_entropy,
)

__all__ = [
    "distillation_loss", "kd_loss", "kl_rows", "soft_targets",
    "logit_matching_loss", "permuted_soft_targets", "smoothing_for_entropy",
    "focal_distillation_loss", "lwf_loss", "old_class_index", "per_sample_kl",
    "attention_map", "attention_transfer_loss", "dkd_loss", "dkd_terms", "hint_loss",
    "forward_kl", "generalized_jsd", "reverse_kl", "token_cross_entropy",
]
