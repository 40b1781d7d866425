r"""Language models, one character at a time: Part V's corpus, a small transformer, its training loop and metrics.

A room of its own: it imports the package's checkpoints, registry and sequence losses, and nothing in the package
imports it (``from kdtutor import lm``). It reads top to bottom:

1. **The corpus** — the King James Version of the Bible (1611; out of copyright), as printed by Debian's package
   ``bible-kjv`` (``bible -f "Gen1:1-Rev22:21"``), one verse per line with its reference (``Ge1:1``) stripped:
   4,137,850 characters of 63 kinds. The derived text is checked by SHA-256, so another edition or a truncated file
   is an error, not a different corpus. Characters are the tokens. The split is by position: the first 90% trains,
   the next 5% validates, the last 5% (the end of the New Testament) tests.
2. **The model** — :class:`CharTransformer` (its shape in an :class:`LMConfig`), a decoder-only transformer (Radford
   et al. 2018; sized like Karpathy's nanoGPT's smallest): learned token and position embeddings, pre-LayerNorm
   blocks of causal self-attention (``nn.MultiheadAttention``) and a 4x GELU MLP, a final LayerNorm and a linear
   head to the vocabulary. For a window :math:`x_1 \dots x_L` it returns logits for :math:`x_2 \dots x_{L+1}`, each
   position seeing only what came before it.
3. **Batches and sampling** — random windows of the text on the device (:func:`windows`), autoregressive
   sampling with a temperature and top-k (:func:`generate`), and batches the student writes itself
   (:func:`on_policy`).
4. **Training** — :func:`train`, a short loop (steps, not epochs: a text has no natural epoch) with AdamW, gradient
   clipping and an optional cosine schedule, whose loss is any function of the student's logits and the batch:
   :func:`cross_entropy` on the data, or :class:`TokenKD` (a teacher's distribution at every position, through
   :func:`~kdtutor.losses.forward_kl`, :func:`~kdtutor.losses.reverse_kl` or
   :func:`~kdtutor.losses.generalized_jsd`). Ctrl-C stops it between steps and keeps the model and its history.
5. **Metrics** — held-out **bits per character** (:func:`bits_per_char`: the cross-entropy in base 2, lower is
   better; a uniform guess over 63 characters costs :math:`\log_2 63 \approx 5.98`), the teacher-student KL on
   held-out text (:func:`kl_to_teacher`), the teacher's bits per character on generated text (:func:`sample_bits`,
   a quality score) and the fraction of distinct n-grams among samples (:func:`distinct_ngrams`, diversity).
6. **Shipped models** — :func:`pretrained` loads ``lm_teacher_kjv`` or ``lm_student_kjv`` through the model
   registry (built by ``python scripts/train_lm.py``), verified by SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.checkpoint import architecture
from kdtutor.losses import forward_kl, generalized_jsd, reverse_kl
from kdtutor.models import registry

__all__ = [
    "KJV_SHA256", "CharTransformer", "Corpus", "CorpusNotFoundError", "History", "LMConfig", "TokenKD", "bits_per_char",
    "cross_entropy", "distinct_ngrams", "generate", "kl_to_teacher", "kjv_text", "load_kjv", "on_policy", "pretrained",
    "sample_bits", "train", "windows",
]

# --- 1. the corpus -------------------------------------------------------------------------------------------------

KJV_SHA256 = "b5c4940bcfeee072c0935b5200d0f9d88a00a0199cb0961d16133458fcdfae5d"  # of the derived text, UTF-8
KJV_RANGE = "Gen1:1-Rev22:21"
SPLIT = (0.90, 0.05)  # fractions for training and validation; the rest is the test text
_REFERENCE = re.compile(r"^\S+ ")  # "Ge1:1 ", "1Co13:4 ": the verse reference that starts each printed line


class CorpusNotFoundError(FileNotFoundError):
    """The corpus could not be found or derived; the message says what was tried and how to fix it."""


def kjv_text(path: str | os.PathLike | None = None) -> str:
    """The corpus as one string, checked against ``KJV_SHA256``.

    Read from ``path`` if given (a text file saved earlier, e.g. with ``python -m kdtutor corpus --write FILE``);
    otherwise looked up in ``$KDTUTOR_DATA/kjv.txt``, then derived from Debian's ``bible`` program (package
    ``bible-kjv``) in about 0.2 s.
    """
    if path is not None:  # asked for by name: no fallback
        if not Path(path).is_file():
            raise CorpusNotFoundError(f"path: expected the corpus' text file, got {str(path)!r} (not found)")
        return _checked(Path(path).read_text(encoding="utf-8"), str(path))
    tried = []
    if os.environ.get("KDTUTOR_DATA"):
        file = Path(os.environ["KDTUTOR_DATA"]) / "kjv.txt"
        if file.is_file():
            return _checked(file.read_text(encoding="utf-8"), str(file))
        tried.append(f"{file} (not found)")
    program = shutil.which("bible")
    if program is not None:
        done = subprocess.run([program, "-f", KJV_RANGE], capture_output=True, text=True, encoding="utf-8")
        if done.returncode == 0:
            return _checked("".join(_REFERENCE.sub("", line) + "\n" for line in done.stdout.splitlines()), program)
        tried.append(f"{program} -f {KJV_RANGE} (failed with exit status {done.returncode}: {done.stderr.strip()})")
    else:
        tried.append("the bible program of Debian's bible-kjv (not installed)")
    raise CorpusNotFoundError(
        "The King James Version corpus was not found. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        "Fix it in one of two ways:\n"
        "  1. on Debian, Ubuntu or Colab: sudo apt-get update && sudo apt-get install bible-kjv\n"
        "  2. on a machine that has it, python -m kdtutor corpus --write kjv.txt; copy the file here and pass "
        "path=... or put it in $KDTUTOR_DATA")


def _checked(text: str, source: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != KJV_SHA256:
        raise ValueError(f"{source}: its text has SHA-256 {digest}, not the corpus' {KJV_SHA256} ({len(text):,} "
                         "characters): another edition, or a truncated or altered file")
    return text


@dataclass(frozen=True, eq=False)
class Corpus:
    """A text, its character vocabulary, and its split by position into ``train``, ``val`` and ``test`` ids."""

    text: str
    vocab: str = field(init=False)   # the distinct characters, sorted: id k is vocab[k]
    train: torch.Tensor = field(init=False, repr=False)  # uint8 ids of the first 90% of the text
    val: torch.Tensor = field(init=False, repr=False)    # the next 5%
    test: torch.Tensor = field(init=False, repr=False)   # the last 5%

    def __post_init__(self):
        vocab = "".join(sorted(set(self.text)))
        if not 2 <= len(vocab) <= 256:
            raise ValueError(f"text: expected 2 to 256 distinct characters, got {len(vocab)}")
        object.__setattr__(self, "vocab", vocab)
        ids = self.encode(self.text)
        a, b = int(SPLIT[0] * len(ids)), int((SPLIT[0] + SPLIT[1]) * len(ids))
        for name, part in (("train", ids[:a]), ("val", ids[a:b]), ("test", ids[b:])):
            object.__setattr__(self, name, part)

    def encode(self, text: str) -> torch.Tensor:
        """Character ids of ``text`` (uint8); an unknown character is an error naming it."""
        table = {c: i for i, c in enumerate(self.vocab)}
        try:
            return torch.tensor([table[c] for c in text], dtype=torch.uint8)
        except KeyError as err:
            raise ValueError(f"text: character {err.args[0]!r} is not in the corpus' vocabulary") from None

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of ids."""
        return "".join(self.vocab[int(i)] for i in ids)


@functools.cache
def load_kjv() -> Corpus:
    """The King James Version as a :class:`Corpus` (read once per process; see :func:`kjv_text`)."""
    return Corpus(kjv_text())


# --- 2. the model --------------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class LMConfig:
    """The shape of a :class:`CharTransformer` (defaults: the shipped teacher's; about 0.8M parameters)."""

    vocab_size: int = 63   # distinct characters: the corpus' vocabulary
    context: int = 128     # the longest window the model reads (learned position embeddings)
    layers: int = 4        # transformer blocks
    width: int = 128       # embedding size, and the width of attention and the MLP's input and output
    heads: int = 4         # attention heads, each width // heads wide
    dropout: float = 0.0   # in attention, after each MLP and on the embeddings (0: none)

    def __post_init__(self):
        for name in ("vocab_size", "context", "layers", "width", "heads"):
            checks.positive_int(name, getattr(self, name))
        if self.width % self.heads:
            raise ValueError(f"heads: expected a divisor of width {self.width}, got {self.heads}")
        checks.probability("dropout", self.dropout)


@architecture
class CharTransformer(nn.Module):
    """A decoder-only character transformer: ``(batch, length)`` ids -> ``(batch, length, vocab)`` next-id logits.

    Built from an :class:`LMConfig` or its fields as keywords (``CharTransformer(layers=2, width=64)``); the fields
    are kept in ``model.config`` as a dict, so :func:`kdtutor.checkpoint.load` rebuilds the model from a checkpoint.
    """

    def __init__(self, config: LMConfig | None = None, **fields):
        super().__init__()
        if config is not None and fields:
            raise ValueError(f"fields: expected either config or keywords, got both ({sorted(fields)})")
        cfg = config if config is not None else LMConfig(**fields)
        self.config = asdict(cfg)
        vocab_size, context, width, dropout = cfg.vocab_size, cfg.context, cfg.width, cfg.dropout
        self.tokens, self.positions = nn.Embedding(vocab_size, width), nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, cfg.heads, dropout) for _ in range(cfg.layers))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab_size)
        # True above the diagonal: position t may not attend to t + 1, t + 2, ... (the future)
        self.register_buffer("causal", torch.ones(context, context, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise ValueError(f"ids: expected integer ids of shape (batch, length), got {ids.dtype} of shape "
                             f"{tuple(ids.shape)}")
        length = ids.shape[1]
        if not 1 <= length <= self.config["context"]:
            raise ValueError(f"ids: expected a length from 1 to the context {self.config['context']}, got {length}")
        # checked here: nn.Embedding's own error is an index error, on CUDA a device-side assert
        low, high = (int(v) for v in torch.aminmax(ids)) if ids.numel() else (0, 0)
        if low < 0 or high >= self.config["vocab_size"]:
            raise ValueError(f"ids: expected ids from 0 to vocab_size - 1 = {self.config['vocab_size'] - 1}, got ids "
                             f"from {low} to {high}; encode text with the corpus the model was trained on")
        ids = ids.long()
        x = self.drop(self.tokens(ids) + self.positions(torch.arange(length, device=ids.device)))
        causal = self.causal[:length, :length]
        for block in self.blocks:
            x = block(x, causal)
        return self.head(self.norm(x))


# --- 3. batches and sampling ---------------------------------------------------------------------------------------


def windows(ids: torch.Tensor, batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``batch`` random windows of ``length + 1`` ids from a 1-D id tensor, as int64 on its device.

    ``generator`` is a CPU generator (the start positions are drawn on the CPU, so a seed gives the same windows
    on any device).

    A window's first ``length`` ids are the input and its last ``length`` the targets (the text shifted by one).
    """
    checks.positive_int("batch", batch), checks.positive_int("length", length)
    if ids.ndim != 1 or len(ids) <= length:
        raise ValueError(f"ids: expected a 1-D tensor longer than length {length}, got shape {tuple(ids.shape)}")
    starts = torch.randint(len(ids) - length, (batch,), generator=generator).to(ids.device)
    return ids[starts[:, None] + torch.arange(length + 1, device=ids.device)].long()


@torch.no_grad()
def generate(model: nn.Module, prompt: torch.Tensor, length: int, temperature: float = 1.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``length`` ids after each row of ``prompt`` ``(batch, prompt_length)``: returns both, concatenated.

    Each next id is drawn from :math:`\\mathrm{softmax}(z/T)` of the model's last logits, restricted to the ``top_k``
    most likely ids if given; the model reads at most its ``context`` last ids. One forward pass per new id
    (without a key-value cache: short samples on a CPU). The model is put in eval mode and restored.
    """
    checks.nn_module("model", model)
    t = checks.positive("temperature", temperature)
    checks.positive_int("length", length)
    if top_k is not None:
        checks.positive_int("top_k", top_k)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or prompt.is_floating_point() or prompt.is_complex():
        raise ValueError(f"prompt: expected integer ids of shape (batch, at least 1), got {prompt.dtype} of shape "
                         f"{tuple(prompt.shape)}")
    was_training = model.training
    model.eval()
    out = prompt.long()
    try:
        for _ in range(length):
            logits = model(out[:, -model.config["context"]:])[:, -1].float() / t
            if top_k is not None and top_k < logits.shape[-1]:  # ids tied with the k-th logit are kept too
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probs = logits.softmax(-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator)  # drawn on the CPU: one generator anywhere
            out = torch.cat([out, nxt.to(out.device)], dim=1)
    finally:
        model.train(was_training)
    return out


def on_policy(model: nn.Module, ids: torch.Tensor, batch: int, prompt: int, length: int, temperature: float = 1.0,
              top_k: int | None = None):
    """Batches the model writes itself, for on-policy distillation (Agarwal et al. 2024; Gu et al. 2024).

    Returns a ``batches`` function for :func:`train`: each call draws ``batch`` prompts of ``prompt`` ids from
    ``ids`` (a 1-D id tensor, e.g. the training text) and lets ``model`` — the student being trained, as it is at
    that step — continue each by ``length`` ids (:func:`generate`), giving ``(batch, prompt + length)`` ids. A
    teacher then scores the student's own text (:class:`TokenKD`): the student learns on the prefixes it will meet
    when it writes, not only on the corpus' or the teacher's. Writing costs ``length`` student forward passes per
    step.

    Which positions are scored is :class:`TokenKD`'s choice. By default it scores **all** ``prompt + length - 1``
    positions of a row, including the ``prompt - 1`` whose next id is still corpus text of the prompt. GKD (Agarwal
    et al. 2024) scores only the student's written ids: the function carries ``batches.prompt`` (= ``prompt``) for
    ``TokenKD(teacher, prompt=batches.prompt)``, which leaves the prompt's positions out.
    """
    checks.nn_module("model", model)
    for name, value in (("batch", batch), ("prompt", prompt), ("length", length)):
        checks.positive_int(name, value)

    def batches(generator: torch.Generator) -> torch.Tensor:
        prompts = windows(ids, batch, max(prompt - 1, 1), generator)[:, :prompt]  # prompt ids of the text
        return generate(model, prompts, length, temperature, top_k, generator)

    batches.prompt = prompt  # the corpus ids at the start of each row (TokenKD(prompt=...) can leave them out)
    return batches


# --- 4. training ---------------------------------------------------------------------------------------------------


def cross_entropy(logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """The data's loss: mean cross-entropy (nats) of ``logits`` ``(B, L, V)`` for the next ids ``batch[:, 1:]``."""
    return _next_id_loss(logits, batch[:, 1:])


def _next_id_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``(..., V)`` (in float32) for the ids ``targets`` ``(...)``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


class TokenKD:
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

    * ``prompt`` — the first ``prompt`` ids of each row are a given prompt (:func:`on_policy`'s ``batches.prompt``):
      the ``prompt - 1`` positions that predict prompt ids are not scored, only those that predict what the student
      wrote (GKD, Agarwal et al. 2024).
    * ``pad_id`` — positions whose next id is ``pad_id`` (padding) are not scored.
    """

    DIVERGENCES = {"forward": forward_kl, "reverse": reverse_kl, "jsd": generalized_jsd}

    def __init__(self, teacher: nn.Module, divergence=forward_kl, temperature: float = 1.0, alpha: float = 1.0,
                 prompt: int = 0, pad_id: int | None = None):
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
        self.teacher, self.divergence = teacher, divergence
        self.temperature, self.alpha = checks.positive("temperature", temperature), checks.probability("alpha", alpha)
        self.prompt, self.pad_id = prompt, pad_id

    def scored(self, batch: torch.Tensor) -> torch.Tensor | None:
        """The positions scored, bool ``(B, L)`` (``None``: all of them, the default)."""
        if self.prompt <= 1 and self.pad_id is None:
            return None
        mask = torch.ones(batch[:, 1:].shape, dtype=torch.bool, device=batch.device)
        mask[:, : max(self.prompt - 1, 0)] = False  # position t predicts id t + 1: a prompt id while t + 1 < prompt
        if self.pad_id is not None:
            mask &= batch[:, 1:] != self.pad_id
        if not bool(mask.any()):
            raise ValueError(f"batch: no position left to score (prompt={self.prompt}, pad_id={self.pad_id}) in a "
                             f"batch of shape {tuple(batch.shape)}")
        return mask

    def __call__(self, logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        if self.teacher.training:
            self.teacher.eval()  # dropout off: the same batch gives the same targets
        with torch.no_grad():
            teacher_logits = self.teacher(batch[:, :-1])
        targets, mask = batch[:, 1:], self.scored(batch)
        if mask is not None:  # the scored positions only, as (K, vocab) rows
            logits, teacher_logits, targets = logits[mask], teacher_logits[mask], targets[mask]
        loss = self.divergence(logits, teacher_logits, temperature=self.temperature)
        if self.alpha == 1.0:
            return loss
        return self.alpha * loss + (1 - self.alpha) * _next_id_loss(logits, targets)


@dataclass
class History:
    """What :func:`train` did: the loss every step, the seconds it took, and whether Ctrl-C stopped it."""

    loss: list[float] = field(default_factory=list)  # training loss of each step taken
    seconds: float = 0.0                             # wall-clock time of the steps
    interrupted: bool = False                        # stopped early by Ctrl-C (the model keeps its last step)


def train(model: nn.Module, batches, steps: int, loss=cross_entropy, lr: float = 1e-3, weight_decay: float = 0.0,
          cosine: bool = False, warmup: int = 0, clip: float = 1.0, seed: int = 0, history: History | None = None
          ) -> History:
    """Train ``model`` for ``steps`` AdamW steps; each step's batch is ``batches(generator)``.

    ``batches`` returns ``(B, L + 1)`` int64 ids on the model's device, e.g.
    ``lambda g: windows(corpus.train, 32, 128, g)``; ``loss(logits, batch)`` is :func:`cross_entropy`, a
    :class:`TokenKD`, or any function of the student's logits on ``batch[:, :-1]`` and the batch. ``seed`` fixes the
    generator handed to ``batches`` and, through ``torch.manual_seed`` (global state), dropout. ``cosine`` decays
    the learning rate to 0 after ``warmup`` linear steps; ``clip`` caps the gradient's norm. Passing an earlier
    ``history`` appends to it (the schedule and the generator start afresh). Ctrl-C stops the loop: the model keeps
    the weights of its last update and the returned history says ``interrupted`` (its losses are those of the
    completed steps; a step cut off after its update but before its loss was recorded is applied, not listed). The
    model is left in eval mode.

    A loss that turns NaN or infinite (checked every step), or weights that do by the end, raise
    ``FloatingPointError`` as :func:`kdtutor.training.fit` does: the model is restored to the weights of the last
    step whose loss was finite (those before that step's update, kept in one copy of the weights), left in eval
    mode, and the history so far is attached as ``err.history``.
    """
    checks.nn_module("model", model)
    if not callable(batches) or isinstance(batches, torch.Tensor):
        raise TypeError(f"batches: expected a function of a torch.Generator returning (B, L + 1) ids, e.g. "
                        f"lambda g: windows(ids, 32, 128, g), got {type(batches).__name__}")
    if isinstance(loss, type):
        raise TypeError(f"loss: expected a loss function or object, got the class {loss.__name__} itself; create it "
                        f"first, e.g. {loss.__name__}(teacher)")
    checks.positive_int("steps", steps)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history: expected a kdtutor.lm.History (e.g. the one an earlier train returned) or None, "
                        f"got {type(history).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < steps:
        raise checks.bad("warmup", f"an integer from 0 to steps - 1 = {steps - 1}", warmup)
    clip = checks.positive("clip", clip)  # a positive finite gradient norm
    generator = torch.Generator().manual_seed(seed)  # on the CPU: windows and samples draw their indices there
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=checks.positive("lr", lr),
                            weight_decay=checks.non_negative("weight_decay", weight_decay))

    def rate(step):  # multiplier of lr at a step: linear warm-up, then constant or a half cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) if cosine else 1.0

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    history = history or History()
    state = model.state_dict()  # views of the live weights, updated in place by the optimizer
    good = {k: v.clone() for k, v in state.items()}  # the weights of the last step whose loss was finite
    first = len(history.loss)  # this run's first step
    model.train()
    start = time.perf_counter()
    try:
        for _ in range(steps):
            batch = batches(generator)
            value = loss(model(batch[:, :-1]), batch)
            if not torch.isfinite(value):
                raise FloatingPointError(f"loss: became {value.item()} at step {len(history.loss)}")
            for k, v in state.items():
                good[k].copy_(v)
            opt.zero_grad(set_to_none=True)
            value.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            schedule.step()
            history.loss.append(value.item())
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point()):
            raise FloatingPointError(f"weights: became NaN or infinite by the last step ({len(history.loss) - 1})")
    except KeyboardInterrupt:
        history.interrupted = True
    except FloatingPointError as err:
        model.load_state_dict(good)
        back = f"before step {len(history.loss) - 1}'s update" if len(history.loss) > first else "of the start"
        stopped = FloatingPointError(f"{err}; lower lr. The model is back at its weights {back}, the last finite ones")
        stopped.history = history
        raise stopped from None
    finally:
        history.seconds += time.perf_counter() - start
        model.eval()
    return history


# --- 5. metrics ----------------------------------------------------------------------------------------------------


def _chunks(ids: torch.Tensor, length: int, batch: int, max_chars: int | None):
    """Non-overlapping windows of ``length + 1`` ids (consecutive windows share one id), ``batch`` at a time."""
    checks.positive_int("length", length), checks.positive_int("batch", batch)
    if max_chars is not None:
        ids = ids[: checks.positive_int("max_chars", max_chars) + 1]
    n = (len(ids) - 1) // length
    if n < 1:
        raise ValueError(f"ids: expected more than {length} ids, got {len(ids)}")
    rows = ids[: n * length + 1].long()
    starts = torch.arange(n, device=ids.device) * length
    for i in range(0, n, batch):
        yield rows[starts[i:i + batch, None] + torch.arange(length + 1, device=ids.device)]


@torch.no_grad()
def bits_per_char(model: nn.Module, ids: torch.Tensor, length: int | None = None, batch: int = 64,
                  max_chars: int | None = None) -> float:
    r"""Held-out bits per character: :math:`-\frac{1}{N}\sum_t \log_2 q(x_{t+1} \mid x_{\le t})`.

    The text (the first ``max_chars`` ids if given) is cut into non-overlapping windows of ``length`` (default: the
    model's context); each window starts without context, as in the book's training.
    """
    checks.nn_module("model", model)
    model.eval()
    total, count = 0.0, 0
    for rows in _chunks(ids, model.config["context"] if length is None else length, batch, max_chars):
        logits = model(rows[:, :-1]).float()
        total += F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum").item()
        count += rows[:, 1:].numel()
    return total / count / math.log(2)


@torch.no_grad()
def kl_to_teacher(teacher: nn.Module, student: nn.Module, ids: torch.Tensor, length: int | None = None,
                  batch: int = 64, max_chars: int | None = None) -> float:
    r""":math:`\frac{1}{N}\sum_t \mathrm{KL}(p_t \,\|\, q_t)` in bits per character on a text, at temperature 1.

    How far the student's next-character distribution is from the teacher's, on the same windows as
    :func:`bits_per_char`.
    """
    checks.nn_module("teacher", teacher), checks.nn_module("student", student)
    teacher.eval(), student.eval()
    total, count = 0.0, 0
    for rows in _chunks(ids, student.config["context"] if length is None else length, batch, max_chars):
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


# --- 6. shipped models ---------------------------------------------------------------------------------------------

SHIPPED = ("lm_teacher_kjv", "lm_student_kjv")


def pretrained(name: str = "lm_teacher_kjv", device: str | torch.device | None = None) -> CharTransformer:
    """A shipped language model (``lm_teacher_kjv`` or ``lm_student_kjv``), weights verified, in eval mode.

    :func:`kdtutor.models.record` of the same name says how it was trained and its held-out bits per character.
    """
    if name not in SHIPPED:
        raise ValueError(f"name: expected one of {list(SHIPPED)}, got {name!r}")
    return registry.pretrained(name, device)
