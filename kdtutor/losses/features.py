r"""Losses beyond the plain logit loss: a teacher's intermediate features, and the logit loss split in two.

* :func:`~kdtutor.losses.hint_loss` — *FitNets* hints (Romero et al. 2015): the student's intermediate features
  :math:`s`, mapped to the teacher's width by a learned regressor :math:`r` (a 1×1 convolution, held by
  :class:`~kdtutor.training.FitNets`), regress onto the teacher's features :math:`t` at the same depth:

  .. math:: \mathcal{L}_{\mathrm{hint}} = \tfrac{1}{2}\,\mathrm{mean}\big((r(s) - t)^2\big).

  The paper sums the squares; the mean over elements keeps the weight independent of the feature size. Against
  mdistiller's FitNet (``F.mse_loss``, a plain mean without the :math:`\tfrac{1}{2}`): its ``FEAT_WEIGHT`` of 100
  is a weight of 200 here. It trains in two stages (hints alone up to the guided layer, then the whole student
  with KD); kdtutor adds the hint term to the training loss in one stage, as later benchmarks do.

* :func:`~kdtutor.losses.attention_map` and :func:`~kdtutor.losses.attention_transfer_loss` — *attention transfer*
  (Zagoruyko & Komodakis 2017): a feature map :math:`A` of shape ``B x C x H x W`` becomes a spatial attention
  map :math:`Q(A) = \mathrm{vec}\big(\frac{1}{C}\sum_c |A_c|^p\big) / \big\|\mathrm{vec}(\cdot)\big\|_2`
  (:math:`p = 2`), and the student's map is pulled towards the teacher's at the same resolution:

  .. math:: \mathcal{L}_{\mathrm{AT}} = \mathrm{mean}_{b,i}\big(Q(S)_{b,i} - Q(T)_{b,i}\big)^2.

  The channel counts may differ; the spatial sizes must match. This is the authors' code's form (squared
  differences, averaged, times :math:`\beta` per pair of layers), so their weight :math:`\beta = 1000` applies to it
  as is. The paper's equation writes :math:`\tfrac{\beta}{2}` and a (non-squared) :math:`p`-norm of the difference
  instead; this loss has no :math:`/2`.

* :func:`~kdtutor.losses.dkd_loss` — *decoupled KD* (Zhao et al. 2022). At temperature :math:`T` the classic KD
  term splits exactly into a target-class part and a non-target part,
  :math:`\mathrm{KD} = \mathrm{TCKD} + (1 - p^{\mathcal{T}}_t)\,\mathrm{NCKD}`, where TCKD is the KL between the
  binary distributions :math:`[p_t, 1 - p_t]` of teacher and student and NCKD the KL between their distributions
  over the non-target classes alone (:func:`~kdtutor.losses.dkd_terms`). The factor :math:`1 - p^{\mathcal{T}}_t`
  shrinks NCKD exactly where the teacher is confident; DKD frees the two terms:

  .. math:: \mathcal{L} = \mathrm{CE}(z, y) + w_{\mathrm{TC}}\,T^2\,\mathrm{TCKD} + w_{\mathrm{NC}}\,T^2\,\mathrm{NCKD},

  ``tckd_weight`` :math:`w_{\mathrm{TC}}` and ``nckd_weight`` :math:`w_{\mathrm{NC}}` (the paper's
  :math:`\alpha = 1` and :math:`\beta = 8` on CIFAR-100; renamed so as not to collide with ``alpha`` of
  :func:`~kdtutor.losses.distillation_loss`). The TCKD and NCKD terms are those of the authors' mdistiller code
  (KL summed over classes, averaged over the batch, times :math:`T^2`), but without its warm-up: mdistiller multiplies
  the DKD term by :math:`\min(\text{epoch}/20, 1)` over the first 20 epochs (of 240); kdtutor applies the full
  weights from the first step (ramp them yourself if you need the warm-up).

All are pure functions of tensors; the ``*_unchecked`` versions skip the argument checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtutor import checks

__all__ = [
    "attention_map", "attention_transfer_loss", "dkd_loss", "dkd_loss_unchecked", "dkd_terms", "hint_loss",
]


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    r"""FitNets: :math:`\frac{1}{2}\mathrm{mean}((s - t)^2)` of the student's (regressed) and the teacher's features.

    The shapes must match: pass the student's features through the regressor first (see the module docstring).
    The :math:`\tfrac{1}{2}` makes a weight :math:`w` here equal to mdistiller's ``F.mse_loss`` weight :math:`w/2`.
    """
    checks.tensor(student_features, "student_features"), checks.tensor(teacher_features, "teacher_features")
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"student_features: shape {tuple(student_features.shape)} does not match teacher_features "
                         f"{tuple(teacher_features.shape)}; map the student's features to the teacher's with a learned "
                         "regressor first (FitNets uses a 1x1 convolution: kdtutor.training.FitNets holds one)")
    s = checks.full_precision(student_features)  # half precision upcast to float32; float64 stays float64
    return 0.5 * F.mse_loss(s, teacher_features.to(s.dtype))


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    r"""Zagoruyko & Komodakis' spatial attention: :math:`\mathrm{vec}(\mathrm{mean}_c |A_c|^p)`, L2-normalised.

    ``features``: ``B x C x H x W``; returns ``B x (H*W)``, each row of unit length.
    """
    checks.feature_maps(features, "features")
    p = checks.temperature(p, "p")  # a positive finite exponent
    return F.normalize(checks.full_precision(features).abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                            p: float = 2.0) -> torch.Tensor:
    r"""Attention transfer: :math:`\mathrm{mean}_{b,i}(Q(S) - Q(T))^2`; channel counts may differ, sizes may not.

    The authors' code's form, to be weighted by their :math:`\beta` (1000) as is: no :math:`\beta/2` as in the
    paper's equation. The teacher's maps are computed in the student's precision.
    """
    checks.feature_maps(student_features, "student_features")
    checks.feature_maps(teacher_features, "teacher_features")
    s, t = student_features.shape, teacher_features.shape
    if s[0] != t[0] or s[2:] != t[2:]:
        raise ValueError(f"teacher_features: shape {tuple(t)} does not match student_features {tuple(s)} in batch "
                         "size or height x width; attention maps are compared at the same resolution")
    dtype = checks.full_precision(student_features).dtype  # the teacher's maps in the student's precision
    return (attention_map(student_features, p) - attention_map(teacher_features.to(dtype), p)).pow(2).mean()


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
              t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per sample, at temperature ``t``: TCKD, NCKD (both *without* the :math:`T^2` factor) and the teacher's
    :math:`1 - p_t`, so that :math:`\mathrm{KL}(p^{\mathcal{T}} \| p^{\mathcal{S}}) = \mathrm{TCKD} + (1 - p_t)
    \,\mathrm{NCKD}` row by row (Zhao et al. 2022, eq. 6)."""
    if student_logits.shape[-1] < 2:
        raise ValueError(f"student_logits: expected at least 2 classes (DKD splits the target class from the others), "
                         f"got shape {tuple(student_logits.shape)}")
    z_s = checks.full_precision(student_logits) / t
    z_t = teacher_logits.to(z_s.dtype) / t
    y = targets.long().unsqueeze(-1)
    target = torch.zeros_like(z_s, dtype=torch.bool).scatter_(-1, y, True)  # no boolean indexing: no host sync

    def parts(z):  # log p_t, log(1 - p_t) and the log-distribution over the non-target classes (-inf at t)
        rest = z.masked_fill(target, float("-inf"))
        log_all = torch.logsumexp(z, -1)
        return z.gather(-1, y).squeeze(-1) - log_all, torch.logsumexp(rest, -1) - log_all, F.log_softmax(rest, -1)

    (lt_s, lr_s, hat_s), (lt_t, lr_t, hat_t) = parts(z_s), parts(z_t)
    tckd = lt_t.exp() * (lt_t - lt_s) + lr_t.exp() * (lr_t - lr_s)
    hat_t, hat_s = hat_t.masked_fill(target, 0.0), hat_s.masked_fill(target, 0.0)  # no -inf: finite gradients
    nckd = (hat_t.exp() * (hat_t - hat_s)).masked_fill(target, 0.0).sum(-1)  # exactly 0 at t
    return tckd, nckd, lr_t.exp()


def dkd_loss_unchecked(student_logits, teacher_logits, targets, t: float, tckd_weight: float,
                       nckd_weight: float) -> torch.Tensor:
    """:func:`dkd_loss` without the argument checks."""
    tckd, nckd, _ = dkd_terms(student_logits, teacher_logits, targets, t)
    hard = F.cross_entropy(checks.full_precision(student_logits), targets.long())
    return hard + t * t * (tckd_weight * tckd.mean() + nckd_weight * nckd.mean())


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
             temperature: float = 4.0, tckd_weight: float = 1.0, nckd_weight: float = 8.0) -> torch.Tensor:
    """Decoupled KD: cross-entropy plus separately weighted target-class and non-target-class KD terms.

    See the module docstring for the formula; the defaults are the paper's CIFAR-100 settings, without mdistiller's
    20-epoch warm-up of the DKD term. Needs at least 2 classes. Float64 logits stay float64; half precision is
    computed in float32.
    """
    t = checks.temperature(temperature)
    checks.tensor(student_logits, "student_logits"), checks.tensor(teacher_logits, "teacher_logits")
    checks.tensor(targets, "targets")
    checks.logits_pair(student_logits, teacher_logits)
    checks.targets(targets, student_logits)  # fewer than 2 classes: refused by dkd_terms, which every DKD path runs
    tc, nc = checks.non_negative(tckd_weight, "tckd_weight"), checks.non_negative(nckd_weight, "nckd_weight")
    return dkd_loss_unchecked(student_logits, teacher_logits, targets, t, tc, nc)
