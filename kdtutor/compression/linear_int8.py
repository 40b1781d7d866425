"""int8 linear layers in PyTorch itself, through torchao — the eager alternative to an ONNX Runtime deployment.

torchao's ``quantize_`` swaps the weight of every ``nn.Linear`` for an int8 tensor subclass with one scale per output
row. With ``dynamic_activations`` the inputs are quantized too, per row at run time (scales computed on the fly), and
the product runs in int8; otherwise only the weights are int8 and are dequantized before a float product. Either
way the weights take a quarter of the bytes. Convolutions are left in float: torchao's int8 configurations act on
linear layers. On a CPU, in eager mode, both are *slower* than float — the quantize and dequantize steps are
separate kernels; ``torch.compile`` fuses them, which is where torchao's speed comes from.

``torch.ao.quantization`` (``quantize_dynamic``, observers, ``prepare``/``convert``) is the older route; it is
deprecated in current PyTorch and not used here.
"""

from __future__ import annotations

import copy

from torch import nn

from kdtutor import checks
from kdtutor.compression.deploy import quiet

__all__ = ["int8_linear"]


def int8_linear(model: nn.Module, dynamic_activations: bool = True) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers torchao stores as int8 (weights, and activations if dynamic).

    torchao's ``Int8DynamicActivationInt8WeightConfig`` (``dynamic_activations=True``) or ``Int8WeightOnlyConfig``.
    """
    checks.nn_module("model", model)
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ValueError(f"model: a {type(model).__name__} has no nn.Linear layer for torchao to quantize")
    try:
        with quiet():  # importing torchao logs a deprecation note through torch's logger
            from torchao.quantization import (
                Int8DynamicActivationInt8WeightConfig,
                Int8WeightOnlyConfig,
                quantize_,
            )
    except ImportError as err:  # an optional dependency: the compress extra
        raise ImportError("int8_linear needs torchao: pip install 'kdtutor[compress]'") from err
    quantized = copy.deepcopy(model)
    config = Int8DynamicActivationInt8WeightConfig() if dynamic_activations else Int8WeightOnlyConfig()
    with quiet():
        quantize_(quantized, config)
    return quantized
