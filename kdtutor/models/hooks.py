"""Intermediate features by name, through PyTorch forward hooks: the models are never rewritten to expose them.

Names are those of ``model.named_modules()``: ``"features.3"``, ``"classifier.0"``, ...
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["record_activations"]


@contextmanager
def record_activations(model: nn.Module, names: Iterable[str]):
    """Context manager: ``{name: output}`` of the named submodules, filled in by every forward pass inside it.

    Names are those of ``model.named_modules()``, e.g. ``"features.2"``. Uses forward hooks, removed on exit::

        with record_activations(teacher, ["features.3", "classifier.2"]) as acts:
            teacher(x)
        acts["features.3"].shape   # B x 32 x 14 x 14
    """
    modules = dict(model.named_modules())
    names = list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"names: {unknown} are not submodules of the model; choose from {list(modules)[1:]}")
    acts: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, out)) for n in names]
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()
