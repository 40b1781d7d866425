"""Deployment: export to ONNX, run with ONNX Runtime, check the export, and quantize it to int8 after training.

* :func:`~kdtutor.compression.export_onnx` calls ``torch.onnx.export`` with the dynamo exporter (``torch.export`` traces
  the model into a graph, onnxscript translates it to ONNX operators) and a dynamic batch dimension, into one ``.onnx``
  file.
* :class:`~kdtutor.compression.OnnxModel` wraps an ONNX Runtime ``InferenceSession`` as a module that takes and returns
  tensors, so :func:`kdtutor.evaluation.evaluate`, :func:`kdtutor.evaluation.compute_logits` and
  :func:`kdtutor.evaluation.latency` work on it unchanged. ONNX Runtime fixes its thread count when the session is made
  (``threads``).
* :func:`~kdtutor.compression.check_export` compares the ONNX model with the PyTorch one over a dataset: the largest
  absolute difference of logits and the agreement of the predicted classes.
* :func:`~kdtutor.compression.quantize_static` is ONNX Runtime's post-training static quantization (Jacob et al. 2018):
  after its pre-processing step (shape inference and graph optimisation, ``quant_pre_process``), it runs calibration
  images through the model to record each activation's range, then stores weights as int8 — one scale per output channel
  (``per_channel``) — and inserts QuantizeLinear/DequantizeLinear pairs (the QDQ format) around activations, which the
  runtime fuses into int8 kernels: :math:`x \\approx s\\,(q - z)`, :math:`q \\in [-128, 127]` for activations. Weights
  are stored on the 7-bit grid :math:`[-64, 64]` by default (``reduce_range``): on x86 CPUs without VNNI instructions
  (AVX2, and AVX-512 without VNNI) ONNX Runtime multiplies unsigned 8-bit activations by signed 8-bit weights with an
  instruction (``vpmaddubsw``) that adds pairs of products into 16 bits, and with full 8-bit weights those sums
  saturate; ONNX Runtime's documentation recommends ``reduce_range`` for this. On such a CPU (a 2-core AVX2 machine
  that built the book), 8-bit weights cost the book's teacher 1.1 points of test accuracy, 7-bit weights 0.1.

The exporter and the quantizer print progress lines and warnings; the functions here capture them, so a notebook's
outputs stay clean. ONNX, onnxscript and ONNX Runtime are the optional ``compress`` extra.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from kdtutor import checks
from kdtutor.data import OnDevice, nonempty
from kdtutor.evaluation import compute_logits, fidelity

__all__ = ["OnnxModel", "check_export", "export_onnx", "file_bytes", "quantize_static"]


def export_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor | None) -> Path:
    """Write ``model`` to ``path`` as one ONNX file (weights inside), traced on ``example``, any batch size.

    ``example`` is a batch of inputs (two or more samples: the batch dimension is made dynamic). The model is
    exported in eval mode on the CPU; its mode and device are restored. The model is first run on ``example`` (eval
    mode, no gradients): an example it cannot take, or on which it does not return one row of logits per sample, is
    refused with a ``ValueError`` naming the shape, before the exporter's own error messages.
    """
    checks.nn_module("model", model)
    if not isinstance(example, torch.Tensor):
        raise ValueError(f"example: expected a tensor batch of inputs to trace the model on, got "
                         f"{type(example).__name__}")
    if example.ndim < 2 or len(example) < 2:
        raise ValueError(f"example: expected a batch of at least 2 samples (the batch size is made dynamic), got "
                         f"shape {tuple(example.shape)}")
    path = Path(path)
    name = next(iter(_forward_arguments(model)))
    was_training, device = model.training, _device(model)
    model.eval().cpu()
    try:
        _check_example(model, example.cpu())
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet():
            torch.onnx.export(model, (example.cpu(),), str(path), dynamo=True, external_data=False,
                              input_names=["x"], output_names=["logits"],
                              dynamic_shapes={name: {0: torch.export.Dim("batch")}})
    finally:
        model.to(device).train(was_training)
    return path


class OnnxModel(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, callable like the PyTorch model: tensor in, logits out.

    ``threads`` is ONNX Runtime's intra-op thread count (``None``: its default, all cores); ``bytes`` the size of
    the file. It has no parameters and nothing to train; ``eval()``/``train()`` change nothing.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        ort = _onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"path: no ONNX file at {self.path}")
        if self.path.suffix.lower() in (".pt", ".pth", ".ckpt"):
            raise ValueError(f"path: expected an ONNX file (.onnx, written by export_onnx), got {self.path}, a "
                             "PyTorch checkpoint name; load it with kdtutor.load, or export it with export_onnx first")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) are not importable
            raise ValueError(f"path: ONNX Runtime cannot load {self.path} as an ONNX model: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from err
        self.input_name = self.session.get_inputs()[0].name

    @property
    def bytes(self) -> int:
        return file_bytes(self.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().float().numpy())
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits).to(x.device)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, threads={self.threads}"


def check_export(model: nn.Module, exported: nn.Module, data: Dataset, batch_size: int = 256) -> dict[str, float]:
    """How closely ``exported`` (e.g. an :class:`~kdtutor.compression.OnnxModel`) reproduces ``model`` on ``data``.

    Returns ``max_abs_diff`` (the largest absolute difference of any logit) and ``agreement`` (the fraction of
    samples with the same predicted class). Both models run in eval mode; their modes are restored.
    """
    nonempty("data", data)
    data = OnDevice(data, "cpu")
    ours = compute_logits(model, data, batch_size, device="cpu", verbose=False)
    theirs = compute_logits(exported, data, batch_size, device="cpu", verbose=False)
    return {"max_abs_diff": (ours - theirs).abs().max().item(), "agreement": fidelity(theirs, ours)["agreement"]}


def quantize_static(source: str | os.PathLike, target: str | os.PathLike, calibration: torch.Tensor,
                    per_channel: bool = True, only: tuple[str, ...] | None = None, reduce_range: bool = True) -> Path:
    """ONNX Runtime's static int8 quantization of the ONNX file ``source`` into ``target`` (QDQ format).

    ``calibration`` is a batch of inputs (a few hundred training images) whose activation ranges (min/max) fix the
    activations' scales; weights get one scale per output channel when ``per_channel``. Weights and activations are
    signed int8 (``QInt8``). ``only`` limits quantization to these ONNX operator types (e.g. ``("Gemm", "MatMul")``
    for the linear layers, leaving convolutions in float); ``None`` quantizes every operator ONNX Runtime can.
    ``reduce_range`` stores the weights on :math:`[-64, 64]` rather than :math:`[-127, 127]`, so that the int8
    arithmetic cannot saturate on x86 CPUs without VNNI (see the module docstring); ``False`` keeps the last bit where
    the deployment CPU has VNNI (or is an ARM CPU).

    Refused with a ``ValueError``: a ``source`` that is not an ONNX model or is already quantized (it holds
    QuantizeLinear/DequantizeLinear or integer operators: quantizing it again would write an invalid model), and
    ``only`` naming an operator type ONNX Runtime cannot quantize or none that occurs in ``source``.
    """
    if not isinstance(calibration, torch.Tensor) or calibration.ndim < 2 or len(calibration) == 0:
        raise ValueError("calibration: expected a non-empty tensor batch of inputs (e.g. 512 training images), got "
                         f"{type(calibration).__name__}")
    if only is not None and (isinstance(only, str) or not all(isinstance(op, str) for op in only) or not only):
        raise ValueError(f"only: expected a tuple of ONNX operator types such as ('Gemm', 'MatMul'), got {only!r}")
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise ValueError(f"source: no ONNX file at {source}")
    quantization = _onnxruntime("quantization")
    graph = _onnx_graph(source)
    ops = {node.op_type for node in graph.node}
    done = sorted(op for op in ops if op in QUANTIZED_OPS or op.startswith("QLinear"))
    if done:
        raise ValueError(f"source: {source} is already quantized (it has {', '.join(done)} operators); quantize the "
                         "float model written by export_onnx instead")
    if only is not None:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        valid = set(QLinearOpsRegistry) | set(QDQRegistry)
        unknown = [op for op in only if op not in valid]
        if unknown:
            raise ValueError(f"only: expected ONNX operator types that ONNX Runtime quantizes, got {unknown} (the "
                             f"names are case-sensitive ONNX types, e.g. 'Gemm' for a linear layer); valid: "
                             f"{sorted(valid)}")
        if not ops & set(only):
            raise ValueError(f"only: none of {list(only)} occurs in {source}, so nothing would be quantized; its "
                             f"operators that ONNX Runtime quantizes: {sorted(ops & valid)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    name = graph.input[0].name
    batches = [{name: calibration[i:i + 64].cpu().float().numpy()} for i in range(0, len(calibration), 64)]
    with tempfile.TemporaryDirectory() as tmp, quiet():
        prepared = Path(tmp) / "prepared.onnx"
        quantization.shape_inference.quant_pre_process(str(source), str(prepared))
        quantization.quantize_static(str(prepared), str(target), _Reader(batches),
                                     quant_format=quantization.QuantFormat.QDQ, per_channel=per_channel,
                                     activation_type=quantization.QuantType.QInt8,
                                     weight_type=quantization.QuantType.QInt8, reduce_range=reduce_range,
                                     op_types_to_quantize=list(only) if only is not None else None)
    return target


def file_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of a model file, plus its ONNX external-data file (``<path>.data``) if there is one.

    A directory counts as the sum of the files in it and its subdirectories (a model saved as a folder, or an
    ``.onnx`` file beside its ``.onnx.data``), not the size of the directory entry itself.
    """
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if not path.is_file():
        raise ValueError(f"path: no file or directory at {path}")
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.is_file() else 0)


QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                           "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})


def _onnx_graph(path: Path):
    """The graph of the ONNX file ``path`` (weights not loaded); ``ValueError`` if it is not an ONNX model."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
        raise ValueError(f"source: {path} is not an ONNX model ({type(err).__name__}); export one with "
                         "export_onnx") from err
    if not model.graph.node or not model.graph.input:
        raise ValueError(f"source: {path} is not an ONNX model (its graph has no nodes or no inputs); export one "
                         "with export_onnx")
    return model.graph


def _check_example(model: nn.Module, example: torch.Tensor) -> None:
    """Run ``model`` (already in eval mode, on the CPU) on ``example``; ``ValueError`` naming the shapes if it fails."""
    expected = _expected_input(model)
    hint = f"; a {type(model).__name__} expects {expected}" if expected else ""
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as err:
        raise ValueError(f"example: the model cannot run on a batch of shape {tuple(example.shape)}{hint} "
                         f"({type(err).__name__}: {err})") from err
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or len(out) != len(example):
        raise ValueError(f"example: on a batch of shape {tuple(example.shape)} the model returns "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}, not one row "
                         f"of logits per sample ({len(example)}, classes){hint}")


def _expected_input(model: nn.Module) -> str:
    """The input shape a kdtutor model expects, in words (``""`` if it cannot be told from the model)."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "in_channels" in config and "image_size" in config:
        c, s = config["in_channels"], config["image_size"]
        return f"(batch, {c}, {s}, {s})"
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d):
        return f"(batch, {first.in_channels}, height, width)"
    if isinstance(first, nn.Linear):
        return f"samples of {first.in_features} values (batch, {first.in_features}), or images that flatten to it"
    return ""


class _Reader:
    """The calibration data reader ONNX Runtime asks for: ``get_next()`` returns one input dict, then ``None``."""

    def __init__(self, batches: list[dict]):
        self.batches = iter(batches)

    def get_next(self):
        return next(self.batches, None)


def _forward_arguments(model: nn.Module):
    import inspect

    return inspect.signature(model.forward).parameters


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@contextlib.contextmanager
def quiet():
    """Capture the exporter's and quantizer's progress lines, warnings and INFO logs (they are not errors)."""
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx", "torch.export", "onnxscript", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _onnxruntime(sub: str | None = None):
    try:
        import onnxruntime
        if sub:
            import onnxruntime.quantization
            import onnxruntime.quantization.shape_inference  # noqa: F401
            return onnxruntime.quantization
    except ImportError as err:  # an optional dependency: the compress extra
        raise ImportError("this needs onnxruntime: pip install 'kdtutor[compress]'") from err
    return onnxruntime
