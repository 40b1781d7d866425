"""Compression: pruning, ONNX export, ONNX Runtime and int8 quantization — thin wrappers over the libraries.

:mod:`~kdtutor.compression.pruning` (``sparsity``, ``prune_magnitude`` through ``torch.nn.utils.prune``,
``prune_channels`` through torch-pruning) and :mod:`~kdtutor.compression.deploy` (``export_onnx``, ``OnnxModel``,
``check_export``, ``quantize_static`` through ONNX Runtime) and :mod:`~kdtutor.compression.fake_quant`
(``quantize_aware``, ``strip``: quantization-aware training that matches ONNX Runtime's int8 scheme), and
:mod:`~kdtutor.compression.linear_int8` (``int8_linear`` through torchao). The libraries are the optional
``compress`` extra (``pip install 'kdtutor[compress]'``); each function says which one it needs when it is missing.
Uses the models and evaluation rooms; knows nothing of training.
"""

from kdtutor.compression.deploy import OnnxModel, check_export, export_onnx, file_bytes, quantize_static
from kdtutor.compression.fake_quant import FakeQuantized, quantize_aware, strip
from kdtutor.compression.linear_int8 import int8_linear
from kdtutor.compression.pruning import prunable, prune_channels, prune_magnitude, sparsity

__all__ = [
    "OnnxModel", "check_export", "export_onnx", "file_bytes", "quantize_static",
    "FakeQuantized", "quantize_aware", "strip", "int8_linear",
    "prunable", "prune_channels", "prune_magnitude", "sparsity",
]
