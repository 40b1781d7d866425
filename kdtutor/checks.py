"""Argument checks shared by every module: each names the argument, what was expected and what was given.

Kept in one small module so that no module reaches into another's private helpers. One call style: the argument's
name first, then its value, ``checks.positive("temperature", temperature)``. Every check returns the value converted
to the type the caller needs (a float, an int, the tensor or module itself), or raises ``ValueError`` (``TypeError``
for a value of the wrong kind altogether: a class for a module, a list for a tensor).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "bad", "feature_maps", "full_precision", "logits_pair", "nn_module", "non_negative", "number", "positive",
    "positive_int", "probability", "targets", "tensor",
]


def bad(name: str, expected: str, got) -> ValueError:
    """The one message style: ``"name: expected ..., got ..."``."""
    return ValueError(f"{name}: expected {expected}, got {got!r}")


def positive_int(name: str, value) -> int:
    """An ``int`` >= 1 (``True`` is refused: it is a flag, not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad(name, "a positive integer", value)
    return value


def number(name: str, value, expected: str, ok) -> float:
    """``float(value)`` if ``ok`` of it holds; else ``ValueError`` saying ``expected`` (booleans are flags, refused)."""
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not ok(x):  # NaN fails every comparison, so it is refused too
        raise bad(name, expected, value)
    return x


def positive(name: str, value) -> float:
    """A positive finite number: a temperature, a learning rate, an exponent, a clipping norm."""
    return number(name, value, "a positive finite number", lambda t: 0 < t < math.inf)


def non_negative(name: str, value) -> float:
    """A finite number >= 0 (a loss weight, say; NaN refused)."""
    return number(name, value, "a non-negative finite number", lambda w: 0 <= w < math.inf)


def probability(name: str, value) -> float:
    """A number in [0, 1] (NaN refused): ``alpha`` of the distillation loss, a dropout rate, a share."""
    return number(name, value, "a number in [0, 1]", lambda p: 0.0 <= p <= 1.0)


def feature_maps(name: str, x) -> None:
    """Floating-point feature maps of shape ``(batch, channels, height, width)``."""
    if not torch.is_tensor(x) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{name}: expected floating-point feature maps of shape (batch, channels, height, width), "
                         f"got {getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")


def logits_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Student and teacher logits of the same shape ``batch x classes`` (the names are the arguments')."""
    if student_logits.ndim != 2:
        raise ValueError(f"student_logits: expected shape (batch, classes), got {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits: shape {tuple(teacher_logits.shape)} does not match student_logits "
                         f"{tuple(student_logits.shape)}; both need the same batch size and number of classes")


def targets(targets: torch.Tensor, logits: torch.Tensor) -> None:
    """Integer class indices, one per row of ``logits`` (any leading shape), each in ``[0, classes)``."""
    *lead, c = logits.shape
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or tuple(targets.shape) != tuple(lead):
        raise ValueError(f"targets: expected integer class indices of shape {tuple(lead)}, got {targets.dtype} of "
                         f"shape {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= c):
        raise ValueError(f"targets: class indices must lie in [0, {c - 1}], got values from {int(targets.min())} "
                         f"to {int(targets.max())}")


def nn_module(name: str, value):
    """An ``nn.Module`` instance, returned as is; anything else is a ``TypeError`` (a class: a hint to create one)."""
    from torch import nn

    if isinstance(value, nn.Module):
        return value
    if isinstance(value, type) and issubclass(value, nn.Module):
        raise TypeError(f"{name}: expected an nn.Module instance, got the class {value.__name__} itself; create the "
                        f"model first, e.g. {value.__name__}()")
    raise TypeError(f"{name}: expected an nn.Module, got {type(value).__name__}")


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` to compute a loss in: half precision (mixed-precision training) upcast to float32, float32 and float64
    kept as they are (``x`` itself, not a copy; float64 stays float64, so ``torch.autograd.gradcheck`` works)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def tensor(name: str, value) -> torch.Tensor:
    """A ``torch.Tensor``, returned as is; anything else (a list, a NumPy array) is a ``TypeError`` naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}; convert it with "
                        "torch.as_tensor first")
    return value
