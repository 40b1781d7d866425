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
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch
from kdtutor.methods.base import Objective
from kdtutor.methods.divergence import kl_rows

__all__ = ["TokenKD", "forward_kl", "generalized_jsd", "reverse_kl", "token_cross_entropy"]


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
        return F.log_softmax(checks.full_precision(x).reshape(-1, s[-1]) / t, dim=-1)

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


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``(..., V)`` (in float32) for the ids ``targets`` ``(...)``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


class TokenKD(Objective):
    r"""Token-level distillation: at every position, a divergence from the teacher's next-character distribution.

    .. math:: \mathcal{L} = \alpha \, T^2 D(p^T, q^T) + (1 - \alpha)\, \mathrm{CE}(y, q)

    averaged over the scored positions, where :math:`p^T` and :math:`q^T` are the teacher's and the student's softmax
    at temperature :math:`T`, ``divergence`` :math:`D` is one of :mod:`kdtutor.methods.sequence` (default
    :func:`~kdtutor.losses.forward_kl`, Hinton et al. 2015 applied per token: word-level KD, Kim & Rush 2016) and
    the cross-entropy is on the text's next characters. ``divergence`` may also be named: ``"forward"``
    (:func:`~kdtutor.losses.forward_kl`), ``"reverse"`` (:func:`~kdtutor.losses.reverse_kl`) or ``"jsd"``
    (:func:`~kdtutor.losses.generalized_jsd` at its default :math:`\beta = 1/2`). The teacher runs in eval mode
    (dropout off: it is put there, as :class:`~kdtutor.training.Distillation` does) and without gradients, on the
    same input. The :math:`T^2` factor belongs to the divergence (every function of :mod:`kdtutor.methods.sequence`
    applies it); a divergence of your own is called as ``divergence(student_logits, teacher_logits,
    temperature=T)`` and must apply it too.

    **Scored positions.** For a batch ``(B, L + 1)`` the student's logits cover ``batch[:, :-1]``: position ``t``
    predicts ``batch[:, t + 1]``. By default *every* one of the ``B x L`` positions is scored, both terms. Two
    opt-in arguments leave some out, and both terms then average over the rest only (the logits of the scored
    positions, ``(K, vocab)``, are what the divergence receives):

    * ``prompt`` — the first ``prompt`` ids of each row are a given prompt (:func:`kdtutor.lm.on_policy`'s
      ``batches.prompt``): the ``prompt - 1`` positions that predict prompt ids are not scored, only those that
      predict what the student wrote (GKD, Agarwal et al. 2024).
    * ``pad_id`` — positions whose next id is ``pad_id`` (padding) are not scored.
    """

    DIVERGENCES = {"forward": forward_kl, "reverse": reverse_kl, "jsd": generalized_jsd}

    def __init__(self, teacher: nn.Module, divergence=forward_kl, temperature: float = 1.0, alpha: float = 1.0,
                 prompt: int = 0, pad_id: int | None = None):
        super().__init__()
        checks.nn_module("teacher", teacher)
        if isinstance(divergence, str):
            if divergence not in self.DIVERGENCES:
                raise checks.bad("divergence", f"a function or one of {list(self.DIVERGENCES)}", divergence)
            divergence = self.DIVERGENCES[divergence]
        if not callable(divergence) or isinstance(divergence, type):
            got = getattr(divergence, "__name__", type(divergence).__name__)
            raise TypeError(f"divergence: expected a function such as kdtutor.losses.forward_kl or one of "
                            f"{list(self.DIVERGENCES)}, got {got}")
        if isinstance(prompt, bool) or not isinstance(prompt, int) or prompt < 0:
            raise checks.bad("prompt", "an integer >= 0 (the prompt ids at the start of each row)", prompt)
        if pad_id is not None and (isinstance(pad_id, bool) or not isinstance(pad_id, int)):
            raise checks.bad("pad_id", "an integer id or None", pad_id)
        object.__setattr__(self, "teacher", teacher)  # outside the module tree: frozen, never trained or saved
        object.__setattr__(self, "divergence", divergence)  # a module of one's own stays outside it too
        self.temperature, self.alpha = checks.positive("temperature", temperature), checks.probability("alpha", alpha)
        self.prompt, self.pad_id = prompt, pad_id

    def teachers(self) -> list[nn.Module]:
        return [self.teacher]

    def setup(self, train, augment) -> None:
        self.teacher.to(train.device)

    def scored(self, batch: Batch | torch.Tensor) -> torch.Tensor | None:
        """The positions scored, bool ``(B, L)`` (``None``: all of them, the default), for a :class:`Batch` of inputs
        and next ids or the ids ``(B, L + 1)`` themselves."""
        targets = _next_ids(batch)
        if self.prompt <= 1 and self.pad_id is None:
            return None
        mask = torch.ones(targets.shape, dtype=torch.bool, device=targets.device)
        mask[:, : max(self.prompt - 1, 0)] = False  # position t predicts id t + 1: a prompt id while t + 1 < prompt
        if self.pad_id is not None:
            mask &= targets != self.pad_id
        if not bool(mask.any()):
            raise ValueError(f"batch: no position left to score (prompt={self.prompt}, pad_id={self.pad_id}) in a "
                             f"batch of shape {(targets.shape[0], targets.shape[1] + 1)}")
        return mask

    def forward(self, out: torch.Tensor, batch: Batch | torch.Tensor, features=None) -> torch.Tensor:
        """The loss of the student's logits ``out`` ``(B, L, V)`` on ``batch``: a :class:`Batch` (inputs ``x``, next
        ids ``y``, as :class:`~kdtutor.data.Stream` makes them) or the ids ``(B, L + 1)``."""
        if torch.is_tensor(batch):
            batch = Batch(batch[:, :-1], batch[:, 1:], None)
        if self.teacher.training:
            self.teacher.eval()  # dropout off: the same batch gives the same targets
        with torch.no_grad():
            teacher_logits = self.teacher(batch.x)
        logits, targets, mask = out, batch.y, self.scored(batch)
        if mask is not None:  # the scored positions only, as (K, vocab) rows
            logits, teacher_logits, targets = logits[mask], teacher_logits[mask], targets[mask]
        loss = self.divergence(logits, teacher_logits, temperature=self.temperature)
        if self.alpha == 1.0:
            return loss
        return self.alpha * loss + (1 - self.alpha) * token_cross_entropy(logits, targets)

    def extra_repr(self) -> str:
        name = getattr(self.divergence, "__name__", type(self.divergence).__name__)
        return (f"{name}, temperature={self.temperature}, alpha={self.alpha}, prompt={self.prompt}, "
                f"pad_id={self.pad_id}")


def _next_ids(batch: Batch | torch.Tensor) -> torch.Tensor:
    return batch[:, 1:] if torch.is_tensor(batch) else batch.y
