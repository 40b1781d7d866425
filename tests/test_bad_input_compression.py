"""What students do wrong with compression, evaluation and losses: one row per mistake — the input, the exception it
must raise, a fragment of its message (the same table as tests/test_bad_input.py, for issue 28's rows).

Rows that need the optional ``compress`` extra (torch-pruning, ONNX, ONNX Runtime) skip when it is missing.
"""

import functools
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import assert_clear_error
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor import compression as kc
from kdtutor.evaluation import flip_table, latency, negative_flip_rate, size_bytes
from kdtutor.losses import (
    attention_transfer_loss,
    dkd_loss,
    dkd_terms,
    focal_distillation_loss,
    hint_loss,
    kd_loss,
    lwf_loss,
)

G = torch.Generator().manual_seed(0)
X, Y = torch.randn(8, 1, 8, 8, generator=G), torch.randint(0, 4, (8,), generator=G)
DATA = TensorDataset(X, Y)
LOGITS = torch.randn(8, 4, generator=G)
ONE_CLASS = torch.randn(8, 1, generator=G)


def needs(*modules):
    for name in modules:
        pytest.importorskip(name)


def cnn():
    torch.manual_seed(0)
    return kd.CNN(channels=(8, 16), hidden=32, num_classes=4, image_size=8).eval()


@functools.cache
def folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="kdtutor-bad-input-"))


@functools.cache
def onnx_files() -> tuple[Path, Path]:
    """A float ONNX export of ``cnn()`` and its int8 quantization, made once."""
    needs("onnxruntime", "onnxscript")
    fp32 = kc.export_onnx(cnn(), folder() / "fp32.onnx", X[:2])
    return fp32, kc.quantize_static(fp32, folder() / "int8.onnx", X)


def fp32():
    return onnx_files()[0]


def int8():
    return onnx_files()[1]


def checkpoint_file() -> Path:
    return kd.save(cnn(), folder() / "cnn.pt")


def not_onnx() -> Path:
    path = folder() / "garbage.onnx"
    path.write_bytes(b"this is not a protobuf")
    return path


def prune(model, ratio, **kwargs):
    needs("torch_pruning")
    return kc.prune_channels(model, ratio, **kwargs)


def quantize(source, only=None):
    needs("onnxruntime", "onnxscript")
    return kc.quantize_static(source(), folder() / "q.onnx", X, only=only)


def onnx_model(path):
    needs("onnxruntime")
    return kc.OnnxModel(path())


CASES = {
    # channel pruning: a ratio some layer cannot take, wrong kinds of model and example
    "prune the teacher at 0.97": (lambda: prune(kd.teacher_cnn(), 0.97), ValueError,
                                  "ratio: 0.97 would leave no channel in features.0 (32 channels)"),
    "prune the teacher at 0.99": (lambda: prune(kd.teacher_cnn(), 0.99), ValueError,
                                  "features.0 (32 channels), features.4 (64 channels)"),
    "prune the student at 0.99": (lambda: prune(kd.student_cnn(), 0.99), ValueError,
                                  "every layer can take a ratio of at most 0.875"),
    "prune with a list as example": (lambda: prune(kd.MLP(in_features=4, hidden=(8,), num_classes=2), 0.5,
                                                   example=[[0.0] * 4] * 2), TypeError,
                                     "example: expected a tensor batch of inputs"),
    "prune the class CNN": (lambda: prune(kd.CNN, 0.5), TypeError,
                            "model: expected an nn.Module instance, got the class CNN itself"),
    "prune_magnitude of the class CNN": (lambda: kc.prune_magnitude(kd.CNN, 0.5), TypeError,
                                         "model: expected an nn.Module instance, got the class CNN"),
    # export and ONNX Runtime
    "export without the channel dimension": (lambda: (needs("onnxscript"), kc.export_onnx(
        cnn(), folder() / "m.onnx", torch.zeros(2, 8, 8))), ValueError,
        "example: the model cannot run on a batch of shape (2, 8, 8); a CNN expects (batch, 1, 8, 8)"),
    "export images of the wrong size": (lambda: (needs("onnxscript"), kc.export_onnx(
        cnn(), folder() / "m.onnx", torch.zeros(2, 1, 28, 28))), ValueError,
        "example: the model cannot run on a batch of shape (2, 1, 28, 28); a CNN expects (batch, 1, 8, 8)"),
    "export the class CNN": (lambda: kc.export_onnx(kd.CNN, folder() / "m.onnx", X[:2]), TypeError,
                             "model: expected an nn.Module instance, got the class CNN"),
    "OnnxModel of a .pt checkpoint": (lambda: onnx_model(checkpoint_file), ValueError,
                                      "path: expected an ONNX file (.onnx, written by export_onnx), got"),
    "OnnxModel of a file that is not ONNX": (lambda: onnx_model(not_onnx), ValueError,
                                             "path: ONNX Runtime cannot load"),
    # static quantization
    "quantize a quantized model": (lambda: quantize(int8), ValueError,
                                   "int8.onnx is already quantized (it has DequantizeLinear, QuantizeLinear"),
    "quantize only=('Dense',)": (lambda: quantize(fp32, only=("Dense",)), ValueError,
                                 "only: expected ONNX operator types that ONNX Runtime quantizes, got ['Dense']"),
    "quantize only=('gemm',)": (lambda: quantize(fp32, only=("gemm",)), ValueError,
                                "got ['gemm'] (the names are case-sensitive ONNX types"),
    "quantize an operator the model lacks": (lambda: quantize(fp32, only=("Softmax",)), ValueError,
                                             "only: none of ['Softmax'] occurs in"),
    "quantize a file that is not ONNX": (lambda: quantize(not_onnx), ValueError, "garbage.onnx is not an ONNX model"),
    "quantize_aware of the class CNN": (lambda: kc.quantize_aware(kd.CNN), TypeError,
                                        "model: expected an nn.Module instance, got the class CNN"),
    "int8_linear of a function": (lambda: kc.int8_linear(lambda x: x), TypeError,
                                  "model: expected an nn.Module, got function"),
    "file_bytes of a missing file": (lambda: kc.file_bytes(folder() / "missing.onnx"), ValueError,
                                     "path: no file or directory at"),
    # evaluation
    "NFR of a column of floats": (lambda: negative_flip_rate(Y[:, None].float(), Y, Y), ValueError,
                                  "old_pred: expected a 1-D tensor of class indices or logits with one column per "
                                  "class, got torch.float32 of shape (8, 1): one column is not logits"),
    "NFR of a column of class ids": (lambda: negative_flip_rate(Y, Y[:, None], Y), ValueError,
                                     "new_pred: expected a 1-D tensor of class indices or logits with one column"),
    "flip_table of a column of targets": (lambda: flip_table(Y, Y, Y[:, None].float()), ValueError,
                                          "targets: expected a 1-D tensor"),
    "flip_table(classes=10)": (lambda: flip_table(Y, Y, Y, classes=10), TypeError,
                               "classes: expected a sequence of class names such as kd.FASHION_CLASSES (or None for "
                               "the indices), got int 10"),
    "flip_table(classes='abcd')": (lambda: flip_table(Y, Y, Y, classes="abcd"), TypeError,
                                   "classes: expected a sequence of class names"),
    "cached_logits of a function": (lambda: kd.cached_logits(lambda x: x.flatten(1), DATA), TypeError,
                                    "model: expected an nn.Module, got function"),
    "compute_logits of the class MLP": (lambda: kd.compute_logits(kd.MLP, DATA), TypeError,
                                        "model: expected an nn.Module instance, got the class MLP itself"),
    "evaluate a function": (lambda: kd.evaluate(lambda x: x, DATA), TypeError, "model: expected an nn.Module"),
    "size_bytes of the class MLP": (lambda: size_bytes(kd.MLP), TypeError, "model: expected an nn.Module instance"),
    "latency of the class MLP": (lambda: latency(kd.MLP, X[:1]), TypeError,
                                 "model: expected a module or a callable, got the class MLP"),
    # losses
    "dkd_loss with one class": (lambda: dkd_loss(ONE_CLASS, ONE_CLASS, torch.zeros(8, dtype=torch.long)), ValueError,
                                "student_logits: expected at least 2 classes"),
    "dkd_terms with one class": (lambda: dkd_terms(ONE_CLASS, ONE_CLASS, torch.zeros(8, dtype=torch.long), 4.0),
                                 ValueError, "student_logits: expected at least 2 classes"),
    "kd_loss of lists": (lambda: kd_loss(LOGITS.tolist(), LOGITS, 2.0), TypeError,
                         "student_logits: expected a torch.Tensor, got list"),
    "dkd_loss with NumPy targets": (lambda: dkd_loss(LOGITS, LOGITS, Y.numpy()), TypeError,
                                    "targets: expected a torch.Tensor, got ndarray"),
    "focal loss with list old logits": (lambda: focal_distillation_loss(LOGITS, LOGITS.tolist(), Y), TypeError,
                                        "old_logits: expected a torch.Tensor, got list"),
    "lwf_loss with NumPy logits": (lambda: lwf_loss(LOGITS.numpy(), LOGITS[:, :2], Y, [0, 1]), TypeError,
                                   "student_logits: expected a torch.Tensor, got ndarray"),
    "hint_loss of a list": (lambda: hint_loss([[0.0]], torch.zeros(1, 1)), TypeError,
                            "student_features: expected a torch.Tensor, got list"),
    "attention transfer of 3-D maps": (lambda: attention_transfer_loss(X[:, 0], X[:, 0]), ValueError,
                                       "student_features: expected floating-point feature maps"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_gets_a_clear_error(case):
    assert_clear_error(case, *CASES[case])


def test_class_names_in_any_sequence_are_accepted():
    import numpy as np

    names = ["a", "b", "c", "d"]
    for classes in (names, tuple(names), np.array(names)):
        rows = flip_table(Y, (Y + 1) % 4, Y, classes=classes)
        assert [r["class"] for r in rows] == names + ["all"] and rows[-1]["negative_flips"] == len(Y)
