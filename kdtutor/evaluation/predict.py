"""Predictions: a model's logits over a dataset, its accuracy, its fidelity to a teacher, and cached teacher logits.

Everything here runs the model in eval mode under ``torch.no_grad()`` and restores the mode it found. The data is
moved to the device once per call (:class:`kdtutor.data.OnDevice`); pass an ``OnDevice`` to reuse a copy already
there, as :func:`~kdtutor.training.fit` does for its validation set.

**The logit cache.** Several chapters need the teacher's logits for the same 55,000 training images (about 10 s on
two CPU cores each time). :func:`~kdtutor.evaluation.cached_logits` stores them under ``~/.cache/kdtutor/logits`` (or
``$KDTUTOR_CACHE``), keyed by a SHA-256 of the model (its class and every tensor of its ``state_dict``), a SHA-256
of the input tensor (with its shape and dtype) and the device type: a changed teacher, split or dtype gets its own
entry, never stale logits. Files are written atomically with a checksum (:func:`kdtutor.checkpoint.write_verified`);
a corrupt or mismatched file is recomputed, not trusted.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from kdtutor import checks
from kdtutor.checkpoint import CheckpointError, read_verified, write_verified
from kdtutor.data import CACHE_DIR, OnDevice, nonempty
from kdtutor.losses import kl_rows
from kdtutor.models import record_activations
from kdtutor.progress import bar

__all__ = [
    "accuracy", "cache_dir", "cached_logits", "compute_features", "compute_logits", "evaluate", "fidelity",
    "fingerprint",
]


def _device_of(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


LARGE = 20_000  # samples: compute_logits shows a progress bar from this size on


@torch.no_grad()
def _outputs(model: nn.Module, data: OnDevice, batch_size: int, verbose: bool = False):
    """Yield ``(logits, labels)`` per batch, on the data's device, with the model in eval mode (mode restored)."""
    was_training = model.training
    model.eval()
    batches = bar(data.batches(batch_size), total=-(-len(data) // batch_size), desc="logits", delay=1,
                  leave=False, verbose=verbose and len(data) >= LARGE)
    try:
        for batch in batches:
            out = model(batch.x)
            if out.ndim < 2:
                raise ValueError(f"model: returns outputs of shape {tuple(out.shape)}; expected (batch, classes) "
                                 "logits")
            yield out, batch.y
    finally:
        model.train(was_training)


def compute_logits(model: nn.Module, data: Dataset, batch_size: int = 256, device=None,
                   verbose: bool = True) -> torch.Tensor:
    """The model's logits for every sample of ``data`` in order, as a float32 CPU tensor ``N x classes``.

    Use it to keep a teacher's outputs (``fit(..., teacher_logits=compute_logits(teacher, train))``), or
    :func:`~kdtutor.evaluation.cached_logits` to keep them on disk across notebooks. Shows a progress bar on large
    data (20,000 samples or more) unless ``verbose=False``. Batches of 256 by default: on a 2-core CPU the book's
    teacher runs about 3x faster than in batches of 1,024, whose activations outgrow the caches; the logits do
    not depend on the batch size (equal bit for bit for every model of the book under its pinned numerics).
    """
    checks.nn_module("model", model)
    nonempty("data", data)
    data = OnDevice(data, _device_of(model, device))
    return torch.cat([logits.float().cpu() for logits, _ in _outputs(model, data, batch_size, verbose)])


def compute_features(model: nn.Module, data: Dataset, layers, batch_size: int = 256,
                     device=None) -> dict[str, torch.Tensor]:
    """The outputs of the named ``layers`` of ``model`` for every sample of ``data``, in order.

    Returns ``{layer: float32 CPU tensor N x ...}`` (eval mode, no gradients; names as in
    ``model.named_modules()``, recorded with :func:`~kdtutor.models.record_activations`). Feature objectives such as
    :class:`~kdtutor.training.AttentionTransfer` read these rows instead of running the teacher at every step. They
    are held in memory: the book's teacher's two convolution blocks, ``features.3`` (32 x 14 x 14) and
    ``features.7`` (64 x 7 x 7), take about 37 KB per image.
    """
    checks.nn_module("model", model)
    nonempty("data", data)
    layers = list(layers)
    if not layers or not all(isinstance(name, str) for name in layers):
        raise ValueError(f"layers: expected one or more submodule names, got {layers!r}")
    data = OnDevice(data, _device_of(model, device))
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with record_activations(model, layers) as acts:
        for _ in _outputs(model, data, batch_size):
            for name in layers:
                rows[name].append(acts[name].float().cpu())
    return {name: torch.cat(parts) for name, parts in rows.items()}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits`` (``N x classes``) against integer ``labels`` (``N``), a fraction in [0, 1]."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    if logits.ndim < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels: expected shape {tuple(logits.shape[:-1])} to match logits {tuple(logits.shape)}, "
                         f"got {tuple(labels.shape)}")
    return (logits.argmax(-1) == labels.to(logits.device)).double().mean().item()


def fidelity(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, float]:
    r"""How closely a student follows its teacher (Stanton et al. 2021), beside accuracy.

    ``agreement``: the fraction of samples where both predict the same class (top-1 agreement); ``kl``: the mean
    :math:`\mathrm{KL}(\mathrm{softmax}(v) \,\|\, \mathrm{softmax}(z))` in nats, at temperature 1.
    """
    student_logits, teacher_logits = torch.as_tensor(student_logits), torch.as_tensor(teacher_logits)
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher_logits: expected the student's shape {tuple(student_logits.shape)} (samples x "
                         f"classes), got {tuple(teacher_logits.shape)}")
    z, v = student_logits.double(), teacher_logits.double()
    log_q, log_p = torch.log_softmax(z, 1), torch.log_softmax(v, 1)
    kl = kl_rows(log_p, log_q).mean().item()
    return {"agreement": (z.argmax(1) == v.argmax(1)).double().mean().item(), "kl": kl}


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 256, device=None) -> float:
    """Top-1 accuracy of ``model`` on ``data``, a fraction in [0, 1]. The model's train/eval mode is restored."""
    checks.nn_module("model", model)
    nonempty("data", data)
    data = OnDevice(data, _device_of(model, device))
    correct, total = 0, 0
    for logits, labels in _outputs(model, data, batch_size):
        correct += (logits.argmax(-1) == labels).sum()  # stays on the device: one sync at the end
        total += labels.numel()
    return int(correct) / total


def fingerprint(*tensors: torch.Tensor, extra: str = "") -> str:
    """SHA-256 of tensors' dtypes, shapes and bytes (and an ``extra`` string): equal only for equal contents."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        shape = t.shape
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"|{t.dtype}|{tuple(shape)}|".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy() if t.dtype != torch.uint8 else t.numpy())
    return h.hexdigest()


def cache_dir() -> Path:
    """Where :func:`cached_logits` keeps its files: ``$KDTUTOR_CACHE`` or ``~/.cache/kdtutor``, then ``logits/``."""
    return Path(os.environ.get("KDTUTOR_CACHE") or CACHE_DIR) / "logits"


def cached_logits(model: nn.Module, data: Dataset, batch_size: int = 256, device=None,
                  directory: str | os.PathLike | None = None, verbose: bool = True) -> torch.Tensor:
    """:func:`compute_logits`, stored on disk and reused when the same model sees the same inputs again.

    The key is a SHA-256 of the model (class and ``state_dict``), one of the inputs (shape, dtype, bytes) and the
    device type; see the module docstring. Data that is not held in memory as tensors is computed, not cached. A
    cached file is used only if it is intact, carries the same key and holds finite float32 logits with one row per
    sample; anything else (a corrupt file, another pickle, wrong shapes, NaN) is recomputed and overwritten.
    """
    checks.nn_module("model", model)
    nonempty("data", data)
    dev = _device_of(model, device)
    inputs = OnDevice(data, "cpu").tensors
    if inputs is None:
        return compute_logits(model, data, batch_size, dev, verbose)
    state = list(model.state_dict().items())
    model_key = fingerprint(*(v for _, v in state), extra=type(model).__qualname__ + repr([k for k, _ in state]))
    key = hashlib.sha256(f"{model_key}|{fingerprint(inputs[0])}|{dev.type}|float32".encode()).hexdigest()
    path = Path(directory) if directory is not None else cache_dir()
    path = path / f"{key[:40]}.pt"
    if path.is_file():
        try:
            payload = read_verified(path)
        except (CheckpointError, OSError):
            payload = None  # corrupt or foreign (read_verified refuses other pickles): recompute and overwrite
        logits = payload.get("logits") if isinstance(payload, dict) and payload.get("key") == key else None
        if (isinstance(logits, torch.Tensor) and logits.dtype == torch.float32 and logits.ndim == 2
                and logits.shape[0] == len(data) and bool(torch.isfinite(logits).all())):
            return logits
    logits = compute_logits(model, data, batch_size, dev, verbose)
    try:
        write_verified(path, {"key": key, "logits": logits})
    except OSError:
        pass  # a read-only cache folder costs time, not correctness
    return logits
