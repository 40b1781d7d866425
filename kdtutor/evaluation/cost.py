"""Cost: what a model costs to store and to run (size in bytes, latency).

Latency is the median of repeated timed forward passes (after warm-up runs), in eval mode under
``torch.inference_mode()``. Medians resist the outliers a busy machine produces; still, compare latencies only
within one run on one machine. The book's benchmarks use these; no test asserts a time.
"""

from __future__ import annotations

import io
import statistics
import time

import torch
from torch import nn

__all__ = ["latency", "size_bytes"]


def size_bytes(model: nn.Module) -> int:
    """Bytes of the model's ``state_dict`` as ``torch.save`` writes it (parameters, buffers and a little framing)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def latency(model: nn.Module, example: torch.Tensor, repeats: int = 100, warmup: int = 10) -> float:
    """Median seconds for ``model(example)`` over ``repeats`` timed runs, after ``warmup`` untimed ones.

    The model is put in eval mode (and its mode restored after). On CUDA each run is synchronised before the clock
    stops. Use a batch of one image for per-image latency.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats: expected >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    was_training = model.training
    model.eval()
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
        model.train(was_training)
    return statistics.median(times)
