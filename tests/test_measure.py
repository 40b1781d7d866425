import io

import pytest
import torch

import kdtutor as kd
from kdtutor.evaluation import latency, size_bytes


def test_size_bytes_is_the_serialized_state_dict():
    model = kd.MLP(hidden=(64,))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert size_bytes(model) == len(buffer.getvalue())
    assert 4 * kd.count_params(model) < size_bytes(model) < 4 * kd.count_params(model) + 10_000


def test_latency_is_a_median_of_positive_times_and_restores_mode():
    model = kd.MLP(hidden=(8,)).train()
    t = latency(model, torch.randn(1, 1, 28, 28), repeats=5, warmup=1)
    assert 0 < t < 1 and model.training


def test_latency_counts_calls(monkeypatch):
    calls = []
    model = torch.nn.Identity()
    model.forward = lambda x: calls.append(1) or x
    latency(model, torch.zeros(1), repeats=7, warmup=3)
    assert len(calls) == 10
    with pytest.raises(ValueError, match="repeats"):
        latency(model, torch.zeros(1), repeats=0)
