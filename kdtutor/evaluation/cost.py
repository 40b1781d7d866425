"""Cost: what a model costs to store and to run (size in bytes, latency).

Latency is the median of repeated timed forward passes (after warm-up runs), in eval mode under
``torch.inference_mode()``. Medians resist the outliers a busy machine produces; still, compare latencies only
within one run on one machine. The book's benchmarks use these; no test asserts a time.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from kdtutor import checks

__all__ = ["latency", "size_bytes"]


def size_bytes(model: nn.Module) -> int:
    """Bytes of the model's ``state_dict`` as ``torch.save`` writes it (parameters, buffers and a little framing)."""
    checks.nn_module("model", model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def latency(model: Callable[[torch.Tensor], object], example: torch.Tensor, repeats: int = 100, warmup: int = 10,
            threads: int | None = None) -> float:
    """Median seconds for ``model(example)`` over ``repeats`` timed runs, after ``warmup`` untimed ones.

    ``model`` is any callable: a module (put in eval mode, its mode restored after), a function, or an
    :class:`~kdtutor.compression.OnnxModel` (an ONNX Runtime session). ``threads`` sets PyTorch's intra-op thread
    count for the timing (restored after); ``None`` keeps the current one. An ONNX Runtime session fixes its own
    thread count when it is created (``OnnxModel(path, threads=1)``). On CUDA each run is synchronised before the
    clock stops. Use a batch of one image for per-image latency.
    """
    if not callable(model) or isinstance(model, type):  # a class is callable, but calling it builds a model
        raise TypeError(f"model: expected a module or a callable, got "
                        f"{'the class ' + model.__name__ if isinstance(model, type) else type(model).__name__}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats: expected >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
    if threads is not None and hasattr(model, "session"):  # an ONNX Runtime session: its threads are fixed
        raise ValueError(f"threads: an ONNX Runtime session fixes its thread count when it is created; build it "
                         f"with that count (OnnxModel(path, threads={threads})) and time it with threads=None")
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training is not None:
        model.eval()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if example.is_cuda else (lambda: None)
    try:
        for _ in range(warmup):
            model(example)
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(example)
            sync()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)
        if was_training is not None:
            model.train(was_training)
    return statistics.median(times)
