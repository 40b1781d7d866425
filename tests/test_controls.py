"""The controls of "is it really dark knowledge?" and the objectives that use them, against independent formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.data import Batch, OnDevice
from kdtutor.evaluation import fidelity
from kdtutor.losses import kd_loss, logit_matching_loss, permuted_soft_targets, smoothing_for_entropy
from kdtutor.training import LogitMatching

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


def test_fidelity_against_a_hand_count():
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    v = torch.tensor([[3.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    out = fidelity(z, v)
    assert out["agreement"] == pytest.approx(2 / 3)
    p, q = torch.softmax(v.double(), 1), torch.softmax(z.double(), 1)
    assert out["kl"] == pytest.approx((p * (p / q).log()).sum(1).mean().item())
    assert fidelity(v, v)["kl"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="teacher_logits: expected the student's shape"):
        fidelity(z, v[:2])


def on_device(n=40):
    return OnDevice(TensorDataset(torch.zeros(n, 784), torch.zeros(n, dtype=torch.long)), "cpu")


def test_unlabelled_rows_get_only_the_soft_term():
    cached = torch.randn(40, 10, generator=G)
    mask = torch.arange(40) % 2 == 0  # even rows labelled
    objective = kd.Distillation(teacher_logits=cached, temperature=2, alpha=0.6, labelled=mask)
    objective.setup(on_device(), None)
    idx = torch.arange(8)
    y = torch.where(mask[idx], torch.randint(0, 10, (8,), generator=G), -1)  # -1: no label
    out = torch.randn(8, 10, generator=G)
    got = objective(out, Batch(torch.zeros(8, 784), y, idx), {})
    expected = 0.6 * kd_loss(out, cached[idx], 2) + 0.4 * F.cross_entropy(out[mask[idx]], y[mask[idx]])
    assert torch.allclose(got, expected)
    all_unlabelled = Batch(torch.zeros(4, 784), torch.full((4,), -1), torch.tensor([1, 3, 5, 7]))
    assert torch.allclose(objective(out[:4], all_unlabelled, {}), 0.6 * kd_loss(out[:4], cached[[1, 3, 5, 7]], 2))


@pytest.mark.filterwarnings("ignore:teacher_logits.*agrees with the labels")  # the -1 rows, when not masked
def test_fit_with_unlabelled_transfer_data_checks_only_the_labelled_labels(small):
    train, _ = small
    x, y = train.tensors
    torch.manual_seed(0)
    teacher = kd.MLP(hidden=(32,))
    kd.fit(teacher, train, epochs=2, device="cpu", verbose=False)
    logits = kd.compute_logits(teacher, train)
    labelled = torch.arange(len(y)) < 200
    hidden = TensorDataset(x, torch.where(labelled, y, -1))
    student = kd.MLP(hidden=(16,))
    loss = kd.Distillation(teacher_logits=logits, temperature=4, alpha=0.5, labelled=labelled)
    history = kd.fit(student, hidden, loss=loss, epochs=2, device="cpu", verbose=False)
    assert len(history) == 2
    with pytest.raises(ValueError, match=r"train: labels must lie in \[0, 9\].*got labels from -1"):
        kd.fit(kd.MLP(hidden=(16,)), hidden, teacher_logits=logits, epochs=1, device="cpu", verbose=False)
    with pytest.raises(ValueError, match=r"labelled: expected one entry per training sample \(2000\)"):
        kd.fit(kd.MLP(hidden=(16,)), hidden, loss=kd.Distillation(teacher_logits=logits, labelled=labelled[:10]),
               epochs=1,
               device="cpu")
    with pytest.raises(ValueError, match="labelled: expected a 1-D boolean mask"):
        kd.Distillation(teacher_logits=logits, labelled=labelled.long())


def test_logit_matching_objective():
    cached = torch.randn(40, 10, generator=G)
    objective = LogitMatching(teacher_logits=cached, alpha=0.7)
    objective.setup(on_device(), None)
    idx, y = torch.arange(6), torch.randint(0, 10, (6,), generator=G)
    out = torch.randn(6, 10, generator=G)
    expected = 0.7 * logit_matching_loss(out, cached[idx]) + 0.3 * F.cross_entropy(out, y)
    assert torch.allclose(objective(out, Batch(torch.zeros(6, 784), y, idx), {}), expected)
    assert "temperature" not in repr(objective)
