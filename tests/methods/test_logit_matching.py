"""kdtutor.methods.logit_matching: the loss as the high-temperature limit of KD, and LogitMatching against it."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.data import Batch
from kdtutor.losses import kd_loss, logit_matching_loss
from kdtutor.training import LogitMatching

from .helpers import on_device

G = torch.Generator().manual_seed(0)


def test_logit_matching_is_the_high_temperature_limit_of_kd():
    z = torch.randn(8, 10, generator=G, dtype=torch.float64)
    v = torch.randn(8, 10, generator=G, dtype=torch.float64)
    zc = z - z.mean(1, keepdim=True)
    expected = 0.5 * ((zc - (v - v.mean(1, keepdim=True))) ** 2).mean()
    assert logit_matching_loss(z, v).item() == pytest.approx(expected.item())
    assert logit_matching_loss(z + 5, v).item() == pytest.approx(expected.item())  # a shift changes nothing
    zg = zc.clone().requires_grad_(True)
    (g_match,) = torch.autograd.grad(logit_matching_loss(zg, v), zg)
    (g_kd,) = torch.autograd.grad(kd_loss(zg, v - v.mean(1, keepdim=True), 1e5), zg)
    assert (g_kd - g_match).abs().max() < 1e-4 * g_match.abs().max()  # T -> infinity: (z - v) / (B C), error ~ 1/T


def test_logit_matching_objective():
    cached = torch.randn(40, 10, generator=G)
    objective = LogitMatching(teacher_logits=cached, alpha=0.7)
    objective.setup(on_device(), None)
    idx, y = torch.arange(6), torch.randint(0, 10, (6,), generator=G)
    out = torch.randn(6, 10, generator=G)
    expected = 0.7 * logit_matching_loss(out, cached[idx]) + 0.3 * F.cross_entropy(out, y)
    assert torch.allclose(objective(out, Batch(torch.zeros(6, 784), y, idx), {}), expected)
    assert "temperature" not in repr(objective)
