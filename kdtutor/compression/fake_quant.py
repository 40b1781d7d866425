"""Quantization-aware training: train through the rounding that int8 deployment will apply, then export fp32.

Post-training quantization rounds a trained model once. Quantization-aware training (Jacob et al. 2018) simulates
the rounding during fine-tuning — *fake quantization*: quantize, then dequantize at once, so the forward pass sees
the int8 grid while everything stays float; the backward pass treats rounding as the identity (the straight-through
estimator, inside ``torch.fake_quantize_per_*_affine``) — and the weights learn to sit well on that grid.

:func:`~kdtutor.compression.quantize_aware` wraps every ``nn.Conv2d`` and ``nn.Linear`` of a copy of the model so that
it computes ``layer(fq(x))`` with ``fq(w)``, rounding inputs and weights the way ONNX Runtime's static QDQ quantization
(:func:`~kdtutor.compression.quantize_static`) does for those layers:

* weights: signed int8, symmetric, one scale per output channel, :math:`s_c = \\max|w_c| / 64` on the grid
  :math:`[-64, 64]` (``reduce_range=True``, as :func:`~kdtutor.compression.quantize_static` stores them by default;
  :math:`/127` on :math:`[-127, 127]` with ``reduce_range=False``);
* inputs: signed int8, asymmetric, one scale and zero point per tensor from the observed range
  :math:`[\\min(0, lo), \\max(0, hi)]`, :math:`s = (hi - lo)/255`, tracked as an exponential moving average of each
  training batch's min and max, frozen in eval mode (ONNX Runtime calibrates with min/max over calibration images).

It approximates ONNX Runtime's scheme rather than reproducing it: ONNX Runtime also rounds each quantized layer's output
(after fusing a following ReLU into it) and the pooling outputs, which this does not simulate; nor does it simulate
BatchNorm folding (ONNX Runtime folds BatchNorm into the convolution before quantizing; fake-quantizing the unfolded
weights would train for the wrong grid): use it on models without BatchNorm. :func:`~kdtutor.compression.strip` returns
the plain model with the fine-tuned weights, ready for :func:`~kdtutor.compression.export_onnx` and
:func:`~kdtutor.compression.quantize_static`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from kdtutor import checks

__all__ = ["FakeQuantized", "quantize_aware", "strip"]


class FakeQuantized(nn.Module):
    """A conv or linear ``layer`` whose input and weight pass through int8 fake quantization."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, momentum: float = 0.1, reduce_range: bool = True):
        super().__init__()
        self.layer = layer
        self.momentum = momentum  # weight of each new batch in the moving average of the input range
        self.weight_qmax = 64 if reduce_range else 127  # the weights' grid is [-qmax, qmax], as ONNX Runtime's
        self.register_buffer("lo", torch.tensor(float("nan")))
        self.register_buffer("hi", torch.tensor(float("nan")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x.detach())
        if torch.isnan(self.lo):
            raise RuntimeError("a FakeQuantized layer has seen no training batch: run it in train mode first")
        lo, hi = torch.clamp(self.lo, max=0.0), torch.clamp(self.hi, min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
        zero_point = torch.clamp(torch.round(-128 - lo / scale), -128, 127).to(torch.int32)
        x = torch.fake_quantize_per_tensor_affine(x, scale.float(), zero_point, -128, 127)
        w = self.layer.weight
        q = self.weight_qmax
        w_scale = torch.clamp(w.detach().abs().flatten(1).amax(1) / q, min=1e-8)
        w = torch.fake_quantize_per_channel_affine(w, w_scale.float(), torch.zeros_like(w_scale, dtype=torch.int32),
                                                   0, -q, q)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)

    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min(), x.max()
        if torch.isnan(self.lo):
            self.lo.copy_(lo), self.hi.copy_(hi)
        else:
            self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)


def quantize_aware(model: nn.Module, reduce_range: bool = True) -> nn.Module:
    """A copy of ``model`` with every ``nn.Conv2d`` and ``nn.Linear`` wrapped in
    :class:`~kdtutor.compression.FakeQuantized`; ``reduce_range`` as for the deployment's
    :func:`~kdtutor.compression.quantize_static` (train for the grid the model will be stored on)."""
    checks.nn_module("model", model)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"model: a {type(model).__name__} with BatchNorm; fold BatchNorm into the convolutions "
                         "first (fake quantization here does not simulate the folding ONNX Runtime does)")
    wrapped = copy.deepcopy(model)
    targets = [(name, m) for name, m in wrapped.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not targets:
        raise ValueError(f"model: a {type(model).__name__} has no nn.Conv2d or nn.Linear layer to quantize")
    for name, layer in targets:
        parent, _, attr = name.rpartition(".")
        setattr(wrapped.get_submodule(parent) if parent else wrapped, attr,
                FakeQuantized(layer, reduce_range=reduce_range))
    return wrapped


def strip(model: nn.Module) -> nn.Module:
    """A copy of a :func:`~kdtutor.compression.quantize_aware` model without the wrappers: the original class, the
    fine-tuned weights."""
    checks.nn_module("model", model)
    plain = copy.deepcopy(model)
    wrappers = [(name, m) for name, m in plain.named_modules() if isinstance(m, FakeQuantized)]
    for name, wrapper in wrappers:
        parent, _, attr = name.rpartition(".")
        setattr(plain.get_submodule(parent) if parent else plain, attr, wrapper.layer)
    return plain
