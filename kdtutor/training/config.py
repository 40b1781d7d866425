"""The training settings of :func:`~kdtutor.training.fit`, gathered in one object a reader sees at once (like
nanoGPT's config).

``TrainConfig`` prints readably, is saved beside shipped weights (:meth:`~kdtutor.training.TrainConfig.as_record`)
and is passed around whole: ``fit(model, train, config)``. Any field can also be given to ``fit`` as a keyword
(``fit(model, train, epochs=5)``), which overrides the config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch

from kdtutor import checks

__all__ = ["MLP_RECIPE", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`~kdtutor.training.fit` trains; every field is used by the loop."""

    epochs: int = 8                        # passes over the training set (a Stream's: its steps per pass)
    batch_size: int = 128                  # samples per optimizer step (a Stream draws its own batches)
    lr: float = 1e-3                       # peak learning rate (reached after the warm-up, if any)
    weight_decay: float = 0.0              # AdamW: decoupled weight decay; SGD: L2 penalty
    optimizer: str = "adamw"               # "adamw" (Loshchilov & Hutter 2019) or "sgd" (Nesterov momentum)
    momentum: float | None = None          # SGD only (None means 0.9); AdamW has none, so it is refused there
    schedule: str = "cosine"               # "cosine": anneal to 0 over the steps after the warm-up; "constant"
    augment: Callable | None = None        # on-device batch augmentation, e.g. RandomShiftFlip(); None for none
    seed: int = 0                          # fixes the shuffling, dropout and augmentation
    amp: bool = True                       # mixed precision on CUDA; ignored on CPU and MPS
    amp_dtype: torch.dtype | None = None   # None: bf16 where the GPU has it natively, else fp16 + GradScaler
    check_every: int = 50                  # steps between checks for a non-finite loss (each check syncs once)
    channels_last: bool | str = "auto"     # images stored N x H x W x C, for the convolutions (1.4-2x on CPU);
    #                                        "auto": on for a model with a Conv2d training on the CPU, off otherwise
    #                                        (see channels_last_for); converts the student and its teachers in place
    warmup: int = 0                        # optimizer steps of linear warm-up to lr, then the schedule over the rest
    clip: float | None = None              # the gradients' largest total norm (None: not clipped)

    def __post_init__(self):
        checks.positive_int("epochs", self.epochs)
        checks.positive_int("batch_size", self.batch_size)
        checks.positive_int("check_every", self.check_every)
        if self.optimizer not in ("adamw", "sgd"):
            raise checks.bad("optimizer", "'adamw' or 'sgd'", self.optimizer)
        if self.momentum is not None and self.optimizer != "sgd":
            raise ValueError(f"momentum: only optimizer='sgd' uses it (AdamW has no momentum setting), got "
                             f"momentum={self.momentum!r} with optimizer={self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise checks.bad("schedule", "'cosine' or 'constant'", self.schedule)
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise checks.bad(name, "a finite number >= 0", value)
        if isinstance(self.augment, type):
            raise ValueError(f"augment: expected an augmentation object such as {self.augment.__name__}(), got the "
                             f"class {self.augment.__name__} itself")
        if self.augment is not None and not callable(self.augment):
            raise checks.bad("augment", "a callable on a batch tensor, or None", self.augment)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise checks.bad("seed", "an integer", self.seed)
        if not isinstance(self.amp, bool):  # a flag: a string such as "false" would be truthy
            raise checks.bad("amp", "True or False", self.amp)
        if not isinstance(self.channels_last, bool) and self.channels_last != "auto":
            raise checks.bad("channels_last", "True, False or 'auto'", self.channels_last)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise checks.bad("warmup", "an integer >= 0 (optimizer steps)", self.warmup)
        if self.clip is not None:
            checks.positive("clip", self.clip)
        if self.amp_dtype not in (None, torch.bfloat16, torch.float16):
            raise checks.bad("amp_dtype", "None, torch.bfloat16 or torch.float16", self.amp_dtype)

    def channels_last_for(self, model: torch.nn.Module, device: torch.device | str) -> bool:
        """Whether a run of ``model`` on ``device`` uses the channels-last layout. ``"auto"`` turns it on where it was
        measured faster: a model with a 2-D convolution, trained on the CPU (oneDNN's convolutions; the small CNN
        trains 1.4-2x faster per epoch, ``benchmarks/RESULTS.md``). It stays off for models without one (an MLP
        gains nothing) and on CUDA and MPS, where it has not been measured yet. The layout changes the
        convolutions' rounding, not their values: trained weights differ in the last bits."""
        if self.channels_last != "auto":
            return self.channels_last
        return torch.device(device).type == "cpu" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_record(self) -> dict:
        """The settings as plain JSON values (``augment`` by its repr, ``amp_dtype`` by name)."""
        record = asdict(self)
        record["augment"] = None if self.augment is None else repr(self.augment)
        record["amp_dtype"] = None if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
        return record


def build_optimizer(cfg: TrainConfig, params, steps: int, fused: bool = False):
    """The optimizer and its schedule; ``fused`` (on CUDA) makes AdamW update every parameter in one kernel."""
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    else:
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay,
                              nesterov=momentum > 0)
    warmup = cfg.warmup

    def factor(s: int) -> float:  # lr's multiplier at step s: a linear warm-up, then cosine to 0 or constant
        if s < warmup:
            return (s + 1) / warmup
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (min(s, steps) - warmup) / max(1, steps - warmup)))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def autocast_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype | None:
    """The autocast dtype on CUDA: the override, else bf16 where the GPU has it natively (not emulated), else fp16."""
    if device.type != "cuda" or not cfg.amp:
        return None
    if cfg.amp_dtype is not None:
        return cfg.amp_dtype
    try:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch has no including_emulation (and counts only native support)
        native_bf16 = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native_bf16 else torch.float16


# The book's one recipe for its cheap student, the MLP 784-128-10, trained on all 55,000 labelled images: every
# chapter that trains it with all labels uses this, so its baseline accuracy is the same number everywhere.
MLP_RECIPE = TrainConfig(epochs=10, batch_size=256, lr=2e-3)
