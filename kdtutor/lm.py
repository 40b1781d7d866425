r"""Language models, one character at a time: Part V's small transformer, its batches, sampling and training loop.

A room of its own: nothing in the package imports it (``from kdtutor import lm``), and it gathers Part V's names in
one place — the corpus (:func:`load_kjv`, :class:`Corpus`, defined in :mod:`kdtutor.data.text`), token-level
distillation (:class:`TokenKD`, a method of :mod:`kdtutor.methods.sequence`) and the metrics (:func:`bits_per_char`,
:func:`kl_to_teacher`, :func:`sample_bits`, :func:`distinct_ngrams`, in :mod:`kdtutor.evaluation.text`). What it
defines reads top to bottom:

1. **The model** — :class:`CharTransformer` (its shape in an :class:`LMConfig`), a decoder-only transformer (Radford
   et al. 2018; sized like Karpathy's nanoGPT's smallest): learned token and position embeddings, pre-LayerNorm
   blocks of causal self-attention (``nn.MultiheadAttention``) and a 4x GELU MLP, a final LayerNorm and a linear
   head to the vocabulary. For a window :math:`x_1 \dots x_L` it returns logits for :math:`x_2 \dots x_{L+1}`, each
   position seeing only what came before it.
2. **Batches and sampling** — random windows of the text on the device (:func:`windows`), autoregressive
   sampling with a temperature and top-k (:func:`generate`), and batches the student writes itself
   (:func:`on_policy`).
3. **Training** — :func:`train`, steps (not epochs: a text has no natural epoch) of AdamW with gradient clipping
   and an optional warm-up and cosine schedule, run by the package's one loop, :func:`kdtutor.training.fit`, on a
   :class:`~kdtutor.data.Stream` of drawn batches. Its loss is :func:`cross_entropy` on the data, :class:`TokenKD`
   (a teacher's distribution at every position, through :func:`~kdtutor.losses.forward_kl`,
   :func:`~kdtutor.losses.reverse_kl` or :func:`~kdtutor.losses.generalized_jsd`) or any function of the student's
   logits and the batch. Ctrl-C stops it between steps and keeps the model and its history.
4. **Shipped models** — :func:`pretrained` loads ``lm_teacher_kjv`` or ``lm_student_kjv`` through the model
   registry (built by ``python scripts/train_lm.py``), verified by SHA-256.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from kdtutor import checks
from kdtutor.checkpoint import architecture
from kdtutor.data import Stream
from kdtutor.data.text import KJV_SHA256, Corpus, CorpusNotFoundError, kjv_text, load_kjv
from kdtutor.evaluation.text import bits_per_char, distinct_ngrams, kl_to_teacher, sample_bits
from kdtutor.methods.sequence import TokenKD, token_cross_entropy
from kdtutor.models import registry
from kdtutor.training import CrossEntropy, History, Objective, TrainConfig, fit

__all__ = [
    "KJV_SHA256", "CharTransformer", "Corpus", "CorpusNotFoundError", "LMConfig", "TokenKD", "bits_per_char",
    "cross_entropy", "distinct_ngrams", "generate", "kl_to_teacher", "kjv_text", "load_kjv", "on_policy", "pretrained",
    "sample_bits", "train", "windows",
]

# --- 1. the model --------------------------------------------------------------------------------------------------


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


# --- 2. batches and sampling ---------------------------------------------------------------------------------------


def windows(ids: torch.Tensor, batch_size: int, length: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``batch_size`` random windows of ``length + 1`` ids from a 1-D id tensor, as int64 on its device.

    ``generator`` is a CPU generator (the start positions are drawn on the CPU, so a seed gives the same windows
    on any device).

    A window's first ``length`` ids are the input and its last ``length`` the targets (the text shifted by one).
    """
    checks.positive_int("batch_size", batch_size), checks.positive_int("length", length)
    if ids.ndim != 1 or len(ids) <= length:
        raise ValueError(f"ids: expected a 1-D tensor longer than length {length}, got shape {tuple(ids.shape)}")
    starts = torch.randint(len(ids) - length, (batch_size,), generator=generator).to(ids.device)
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


def on_policy(model: nn.Module, ids: torch.Tensor, batch_size: int, prompt: int, length: int,
              temperature: float = 1.0, top_k: int | None = None):
    """Batches the model writes itself, for on-policy distillation (Agarwal et al. 2024; Gu et al. 2024).

    Returns a ``batches`` function for :func:`train`: each call draws ``batch_size`` prompts of ``prompt`` ids from
    ``ids`` (a 1-D id tensor, e.g. the training text) and lets ``model`` — the student being trained, as it is at
    that step — continue each by ``length`` ids (:func:`generate`), giving ``(batch_size, prompt + length)`` ids. A
    teacher then scores the student's own text (:class:`TokenKD`): the student learns on the prefixes it will meet
    when it writes, not only on the corpus' or the teacher's. Writing costs ``length`` student forward passes per
    step.

    Which positions are scored is :class:`TokenKD`'s choice. By default it scores **all** ``prompt + length - 1``
    positions of a row, including the ``prompt - 1`` whose next id is still corpus text of the prompt. GKD (Agarwal
    et al. 2024) scores only the student's written ids: the function carries ``batches.prompt`` (= ``prompt``) for
    ``TokenKD(teacher, prompt=batches.prompt)``, which leaves the prompt's positions out.
    """
    checks.nn_module("model", model)
    for name, value in (("batch_size", batch_size), ("prompt", prompt), ("length", length)):
        checks.positive_int(name, value)

    def batches(generator: torch.Generator) -> torch.Tensor:
        prompts = windows(ids, batch_size, max(prompt - 1, 1), generator)[:, :prompt]  # prompt ids of the text
        return generate(model, prompts, length, temperature, top_k, generator)

    batches.prompt = prompt  # the corpus ids at the start of each row (TokenKD(prompt=...) can leave them out)
    return batches


# --- 3. training ---------------------------------------------------------------------------------------------------


def cross_entropy(logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """The data's loss: mean cross-entropy (nats) of ``logits`` ``(B, L, V)`` for the next ids ``batch[:, 1:]``."""
    return token_cross_entropy(logits, batch[:, 1:])


class _LossFunction(Objective):
    """A loss function of the student's logits and the ids ``(B, L + 1)``, as an objective of ``fit``."""

    def __init__(self, fn):
        super().__init__()
        object.__setattr__(self, "fn", fn)  # outside the module tree: a loss module's teacher is not trained

    def forward(self, out: torch.Tensor, batch, features=None) -> torch.Tensor:
        return self.fn(out, torch.cat([batch.x, batch.y[:, -1:]], 1))


def train(model: nn.Module, batches, steps: int, loss=cross_entropy, lr: float = 1e-3, weight_decay: float = 0.0,
          cosine: bool = False, warmup: int = 0, clip: float = 1.0, seed: int = 0, history: History | None = None
          ) -> History:
    """Train ``model`` for ``steps`` AdamW steps through :func:`kdtutor.training.fit`; each step's batch is
    ``batches(generator)``.

    ``batches`` returns ``(B, L + 1)`` int64 ids on the model's device, e.g. ``lambda g: windows(corpus.train, 32,
    128, g)`` (a :class:`~kdtutor.data.Stream` of one batch per epoch, so that ``fit`` checks, records and can
    restore every step; ``fit``'s "epoch k" is step k). ``loss`` is :func:`cross_entropy` (``fit``'s
    :class:`~kdtutor.training.CrossEntropy` on the next ids), a :class:`TokenKD`, any other objective, or any
    function of the student's logits on ``batch[:, :-1]`` and the batch. ``seed`` fixes the generator handed to
    ``batches`` and dropout. ``cosine`` decays the learning rate to 0 after ``warmup`` linear steps; ``clip`` caps
    the gradient's norm (``TrainConfig``'s ``warmup`` and ``clip``). It returns ``fit``'s
    :class:`~kdtutor.training.History`, one row per step: ``train_loss`` the step's loss, ``seconds`` its time, and
    ``interrupted``; passing an earlier ``history`` appends to it (the schedule and the generator start afresh).

    Everything else is ``fit``'s: Ctrl-C stops between steps and keeps the model and its history; a loss or weights
    that turn NaN or infinite raise ``FloatingPointError`` with the model back at its weights from before that step
    and the history attached as ``err.history``. The model is left in eval mode. It trains in float32 on every
    device (no mixed precision; on CUDA ``fit``'s fused AdamW) and on one process.
    """
    checks.nn_module("model", model)
    if isinstance(loss, type):
        raise TypeError(f"loss: expected a loss function or object, got the class {loss.__name__} itself; create it "
                        f"first, e.g. {loss.__name__}(teacher)")
    if not callable(loss):
        raise TypeError(f"loss: expected a loss function or object, got {type(loss).__name__}")
    lr, weight_decay = checks.positive("lr", lr), checks.non_negative("weight_decay", weight_decay)
    checks.positive_int("steps", steps)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history: expected a kdtutor History (e.g. the one an earlier train returned) or None, "
                        f"got {type(history).__name__}")
    objective = CrossEntropy() if loss is cross_entropy else loss if isinstance(loss, Objective) else \
        _LossFunction(loss)
    config = TrainConfig(epochs=steps, lr=lr, weight_decay=weight_decay, schedule="cosine" if cosine else "constant",
                         warmup=warmup, clip=checks.positive("clip", clip), seed=seed, check_every=1,
                         amp=False)  # float32 on a GPU too, as the book's language models were trained
    device = next(model.parameters(), torch.empty(0)).device
    return fit(model, Stream(batches, 1, device), config, loss=objective, device=device, history=history,
               verbose=False)


# --- 4. shipped models ---------------------------------------------------------------------------------------------

SHIPPED = ("lm_teacher_kjv", "lm_student_kjv")


def pretrained(name: str = "lm_teacher_kjv", device: str | torch.device | None = None) -> CharTransformer:
    """A shipped language model (``lm_teacher_kjv`` or ``lm_student_kjv``), weights verified, in eval mode.

    :func:`kdtutor.models.record` of the same name says how it was trained and its held-out bits per character.
    """
    if name not in SHIPPED:
        raise ValueError(f"name: expected one of {list(SHIPPED)}, got {name!r}")
    return registry.pretrained(name, device)
