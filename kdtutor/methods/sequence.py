r"""Losses for distilling a language model: token-level divergences between a teacher's and a student's next-token
distributions, averaged over the real (unpadded) tokens of a batch of sequences.

Student logits :math:`z` and teacher logits :math:`v` have shape ``(batch, length, vocab)`` (or ``(N, vocab)``, one
row per token); position :math:`t` holds the two models' distributions over the token that follows it. ``mask``
(bool, of the logits' shape without ``vocab``) says which positions are **scored**: ``True`` for a position whose next
token is a real token to learn (in a prompt-and-completion batch, the completion), ``False`` for padding and for the
prompt, which the student is given rather than asked to produce (:class:`kdtutor.lm.TokenKD` with ``prompt`` masks it).
``mask=None`` (the default) scores every position. At
temperature :math:`T`, :math:`q_t = \mathrm{softmax}(z_t/T)` is the student's and :math:`p_t = \mathrm{softmax}(v_t/T)`
the teacher's distribution at token :math:`t`. Each loss is a per-token divergence :math:`D`, summed over the
vocabulary, times :math:`T^2` (as in :func:`~kdtutor.losses.kd_loss`, Hinton et al. 2015), averaged over the set
:math:`\mathcal{K}` of unmasked tokens:

.. math:: \mathcal{L} = \frac{T^2}{|\mathcal{K}|} \sum_{t \in \mathcal{K}} D(p_t, q_t) .

* :func:`~kdtutor.losses.forward_kl` — :math:`D = \mathrm{KL}(p \,\|\, q)`, token-level KD (word-level KD in
  Kim & Rush 2016): mass-covering, the student spreads its mass over everything the teacher finds plausible.
* :func:`~kdtutor.losses.reverse_kl` — :math:`D = \mathrm{KL}(q \,\|\, p)` (MiniLLM, Gu et al. 2024):
  mode-seeking, the student may drop teacher modes it cannot fit, but is punished for mass where the teacher has none.
* :func:`~kdtutor.losses.generalized_jsd` — GKD's generalized Jensen–Shannon divergence (Agarwal et al. 2024)
  with :math:`\beta \in [0, 1]`, which moves between the two.

**Conventions.** The :math:`T^2` factor is kdtutor's (as in Hinton et al.'s KD): TRL's GKD loss
(``GKDTrainer.generalized_jsd_loss``) divides the logits by :math:`T` but has no :math:`T^2`, so at :math:`T \ne 1`
these losses are :math:`T^2` times TRL's. The rest agrees with TRL: ``beta = 0`` is the forward and ``beta = 1`` the
reverse KL, the mixture is :math:`\beta p + (1 - \beta) q`, and the mean runs over the scored tokens.

Dividing by :math:`|\mathcal{K}|` (not by ``batch * length``) keeps the loss of a sequence independent of how much
padding (or prompt) its batch carries; masked positions get exactly zero gradient, whatever their logits hold.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdtutor import checks
from kdtutor.methods.divergence import kl_rows

__all__ = ["forward_kl", "generalized_jsd", "reverse_kl"]


def _token_log_probs(student_logits, teacher_logits, mask, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks the logits and mask; returns log q and log p at temperature ``t`` of the kept tokens, ``(K, vocab)``."""
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim not in (2, 3):
            raise ValueError(f"{name}: expected a floating-point tensor of shape (batch, length, vocab) or (N, vocab), "
                             f"got {getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")
    s, v = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if s[-1] != v[-1]:
        raise ValueError(f"teacher_logits: vocabulary size {v[-1]} does not match student_logits' {s[-1]} (shapes "
                         f"{v} and {s}); teacher and student must share one tokenizer")
    if s != v:
        raise ValueError(f"teacher_logits: shape {v} does not match student_logits {s}; both need one row per token")
    if mask is not None:
        if not torch.is_tensor(mask) or mask.dtype != torch.bool or tuple(mask.shape) != s[:-1]:
            raise ValueError(f"mask: expected a bool tensor of shape {s[:-1]} (True = a scored position, False = "
                             "padding or prompt), "
                             f"got {getattr(mask, 'dtype', type(mask).__name__)} of shape "
                             f"{tuple(getattr(mask, 'shape', ()))}")
        if not bool(mask.any()):
            raise ValueError("mask: expected at least one True (unmasked) token, got none: the mean over real tokens "
                             "is undefined")
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]  # (K, vocab): zero grad elsewhere
    elif student_logits.numel() == 0:
        raise ValueError(f"student_logits: expected at least one token, got shape {s}")

    def log_probs(x):  # half precision (mixed-precision training) is upcast to float32; float64 stays float64
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return F.log_softmax(x.reshape(-1, s[-1]) / t, dim=-1)

    return log_probs(student_logits), log_probs(teacher_logits)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
               temperature: float = 1.0) -> torch.Tensor:
    r""":math:`\frac{T^2}{|\mathcal{K}|}\sum_{t \in \mathcal{K}} \mathrm{KL}(p_t \,\|\, q_t)`: token-level KD,
    teacher to student, averaged over the unmasked tokens.

    Mass-covering: the student is punished wherever the teacher has mass it lacks. On ``(N, vocab)`` logits without
    a mask this is :func:`~kdtutor.losses.kd_loss`. Hinton, Vinyals & Dean (2015); Kim & Rush (2016), word-level KD.
    """
    t = checks.positive("temperature", temperature)
    log_q, log_p = _token_log_probs(student_logits, teacher_logits, mask, t)
    return kl_rows(log_p, log_q).mean() * t * t


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
               temperature: float = 1.0) -> torch.Tensor:
    r""":math:`\frac{T^2}{|\mathcal{K}|}\sum_{t \in \mathcal{K}} \mathrm{KL}(q_t \,\|\, p_t)`: student to teacher,
    averaged over the unmasked tokens.

    Mode-seeking: the student is punished for mass where the teacher has little, not for missing a teacher mode.
    MiniLLM (Gu et al. 2024) minimises it at the sequence level; this is its token-level form.
    """
    t = checks.positive("temperature", temperature)
    log_q, log_p = _token_log_probs(student_logits, teacher_logits, mask, t)
    return kl_rows(log_q, log_p).mean() * t * t


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
                    temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    r"""GKD's generalized Jensen–Shannon divergence (Agarwal et al. 2024, "On-policy distillation of language models:
    learning from self-generated mistakes"), times :math:`T^2`, averaged over the unmasked tokens.

    With :math:`m = \beta p + (1 - \beta) q` (teacher :math:`p`, student :math:`q`),

    .. math:: \mathrm{JSD}(\beta) = \beta \, \mathrm{KL}(p \,\|\, m) + (1 - \beta) \, \mathrm{KL}(q \,\|\, m) ,

    with :math:`\log m` computed stably as :math:`\mathrm{logsumexp}(\log\beta + \log p, \log(1-\beta) + \log q)`.
    :math:`\beta = 1/2` is the symmetric Jensen–Shannon divergence. :math:`\mathrm{JSD}(\beta)` itself vanishes at
    both ends, so, as in GKD, ``beta=0`` returns :func:`~kdtutor.losses.forward_kl`
    :math:`\mathrm{KL}(p \,\|\, q)` and ``beta=1`` :func:`~kdtutor.losses.reverse_kl`
    :math:`\mathrm{KL}(q \,\|\, p)`: the limits of :math:`\mathrm{JSD}(\beta)/\beta` as :math:`\beta \to 0` and of
    :math:`\mathrm{JSD}(\beta)/(1-\beta)` as :math:`\beta \to 1` (since :math:`m = q + \beta(p - q)`,
    :math:`\mathrm{KL}(q \,\|\, m)` is :math:`O(\beta^2)`, and symmetrically at :math:`\beta = 1`). For
    :math:`0 < \beta < 1` it is bounded, per token, by the binary entropy
    :math:`-\beta\log\beta - (1-\beta)\log(1-\beta) \le \log 2` (times :math:`T^2`), and its size moves with
    :math:`\beta` (near :math:`\beta\,\mathrm{KL}(p \,\|\, q)` for small :math:`\beta`): a new ``beta`` needs its own
    loss weight.
    """
    t = checks.positive("temperature", temperature)
    b = checks.probability("beta", beta)
    log_q, log_p = _token_log_probs(student_logits, teacher_logits, mask, t)
    if b == 0.0:
        return kl_rows(log_p, log_q).mean() * t * t
    if b == 1.0:
        return kl_rows(log_q, log_p).mean() * t * t
    log_m = torch.logsumexp(torch.stack([log_p + math.log(b), log_q + math.log1p(-b)]), dim=0)
    return (b * kl_rows(log_p, log_m) + (1 - b) * kl_rows(log_q, log_m)).mean() * t * t

