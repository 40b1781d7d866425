r"""Metrics of a language model on text: held-out **bits per character** (:func:`~kdtutor.lm.bits_per_char`: the
cross-entropy in base 2, lower is better; a uniform guess over 63 characters costs :math:`\log_2 63 \approx 5.98`),
the teacher-student KL on held-out text (:func:`~kdtutor.lm.kl_to_teacher`), the teacher's bits per character on
generated text (:func:`~kdtutor.lm.sample_bits`, a quality score) and the fraction of distinct n-grams among samples
(:func:`~kdtutor.lm.distinct_ngrams`, diversity). The language-model room :mod:`kdtutor.lm` re-exports them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.losses import forward_kl

__all__ = ["bits_per_char", "distinct_ngrams", "kl_to_teacher", "sample_bits"]


def _chunks(ids: torch.Tensor, length: int, batch_size: int, max_chars: int | None):
    """Non-overlapping windows of ``length + 1`` ids (consecutive windows share one id), ``batch_size`` at a time."""
    checks.positive_int("length", length), checks.positive_int("batch_size", batch_size)
    if max_chars is not None:
        ids = ids[: checks.positive_int("max_chars", max_chars) + 1]
    n = (len(ids) - 1) // length
    if n < 1:
        raise ValueError(f"ids: expected more than {length} ids, got {len(ids)}")
    rows = ids[: n * length + 1].long()
    starts = torch.arange(n, device=ids.device) * length
    for i in range(0, n, batch_size):
        yield rows[starts[i:i + batch_size, None] + torch.arange(length + 1, device=ids.device)]


@torch.no_grad()
def bits_per_char(model: nn.Module, ids: torch.Tensor, length: int | None = None, batch_size: int = 64,
                  max_chars: int | None = None) -> float:
    r"""Held-out bits per character: :math:`-\frac{1}{N}\sum_t \log_2 q(x_{t+1} \mid x_{\le t})`.

    The text (the first ``max_chars`` ids if given) is cut into non-overlapping windows of ``length`` (default: the
    model's context); each window starts without context, as in the book's training.
    """
    checks.nn_module("model", model)
    model.eval()
    total, count = 0.0, 0
    for rows in _chunks(ids, model.config["context"] if length is None else length, batch_size, max_chars):
        logits = model(rows[:, :-1]).float()
        total += F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum").item()
        count += rows[:, 1:].numel()
    return total / count / math.log(2)


@torch.no_grad()
def kl_to_teacher(teacher: nn.Module, student: nn.Module, ids: torch.Tensor, length: int | None = None,
                  batch_size: int = 64, max_chars: int | None = None) -> float:
    r""":math:`\frac{1}{N}\sum_t \mathrm{KL}(p_t \,\|\, q_t)` in bits per character on a text, at temperature 1.

    How far the student's next-character distribution is from the teacher's, on the same windows as
    :func:`bits_per_char`.
    """
    checks.nn_module("teacher", teacher), checks.nn_module("student", student)
    teacher.eval(), student.eval()
    total, count = 0.0, 0
    for rows in _chunks(ids, student.config["context"] if length is None else length, batch_size, max_chars):
        x = rows[:, :-1]
        total += forward_kl(student(x).float(), teacher(x).float()).item() * x.numel()
        count += x.numel()
    return total / count / math.log(2)


@torch.no_grad()
def sample_bits(teacher: nn.Module, samples: torch.Tensor, prompt_length: int) -> float:
    """Quality of generated text: the teacher's bits per character on each sample's generated part.

    ``samples`` ``(batch, prompt_length + n)`` as :func:`generate` returns them, at most the teacher's context + 1
    ids long (the teacher reads each sample in one window, every generated id with all that came before it). Lower
    means text the teacher finds likely (fluent, corpus-like); it rewards repetitive text too, so read it beside
    :func:`distinct_ngrams`.
    """
    checks.nn_module("teacher", teacher)
    teacher.eval()
    context = teacher.config["context"]
    if samples.ndim != 2 or not 2 <= samples.shape[1] <= context + 1:
        raise ValueError(f"samples: expected ids of shape (batch, 2 to the teacher's context + 1 = {context + 1}), "
                         f"got shape {tuple(samples.shape)}")
    if not 1 <= prompt_length < samples.shape[1]:
        raise ValueError(f"prompt_length: expected 1 to {samples.shape[1] - 1}, got {prompt_length}")
    samples = samples.long()
    logits = teacher(samples[:, :-1]).float()
    n = samples.shape[1] - prompt_length  # the generated ids are the last n targets
    nats = F.cross_entropy(logits[:, -n:].flatten(0, 1), samples[:, -n:].flatten())
    return nats.item() / math.log(2)


def distinct_ngrams(texts: list[str], n: int = 4) -> float:
    """Diversity: distinct n-grams over all n-grams in ``texts`` (1.0: no n-gram repeats; near 0: one loop)."""
    checks.positive_int("n", n)
    grams = [text[i:i + n] for text in texts for i in range(len(text) - n + 1)]
    if not grams:
        raise ValueError(f"texts: expected at least one text of {n} or more characters")
    return len(set(grams)) / len(grams)
