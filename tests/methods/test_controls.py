"""kdtutor.methods.controls, the controls of "is it really dark knowledge?", against independent formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdtutor.losses import permuted_soft_targets, smoothing_for_entropy

G = torch.Generator().manual_seed(0)
V = 3 * torch.randn(200, 10, generator=G, dtype=torch.float64)
Y = torch.randint(0, 10, (200,), generator=G)


def test_permuted_soft_targets_keep_the_target_and_shuffle_the_rest():
    out = permuted_soft_targets(V, Y, 4.0, torch.Generator().manual_seed(1))
    p, q = torch.softmax(V / 4, 1), torch.softmax(out / 4, 1)
    rows = torch.arange(200)
    assert torch.allclose(q[rows, Y], p[rows, Y], atol=1e-12)  # the target's probability survives
    for b in range(200):  # the other probabilities are the same multiset, moved
        others = [i for i in range(10) if i != Y[b]]
        assert torch.allclose(q[b, others].sort().values, p[b, others].sort().values, atol=1e-12)
    moved = (q.argsort(1) != p.argsort(1)).any(1).double().mean()
    assert moved > 0.9  # nearly every row really changed order
    again = permuted_soft_targets(V, Y, 4.0, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded


def test_smoothing_for_entropy_inverts_the_entropy_of_smoothed_labels():
    def entropy(eps, c):
        top, rest = 1 - eps + eps / c, eps / c
        return -(top * math.log(top) + (c - 1) * rest * math.log(rest)) if eps > 0 else 0.0

    for eps in (0.01, 0.1, 0.3, 0.9):
        assert smoothing_for_entropy(entropy(eps, 10), 10) == pytest.approx(eps, abs=1e-9)
    smoothed = F.cross_entropy(torch.zeros(1, 10), torch.tensor([3]), label_smoothing=0.3)  # torch's convention
    assert smoothed.item() == pytest.approx(math.log(10))  # uniform logits: the same for any target distribution
    with pytest.raises(ValueError, match="entropy: expected a number in"):
        smoothing_for_entropy(3.0, 10)
