"""kdtutor.methods.hinton (soft targets, kd_loss, distillation_loss, Distillation) against an independent formula,
autograd and stored golden values.

Every property of kd_loss is written as a check on *any* implementation (tests/methods/helpers.py), so that
tests/test_losses.py can show the same checks fail for each classic buggy variant. The objective is checked
against the loss, with cached logits and with unlabelled rows (only the soft term).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.data import Batch, OnDevice
from kdtutor.losses import distillation_loss, kd_loss, soft_targets

from .helpers import GOLDEN, PROPERTIES, S, V, Y, batch_of, formula, on_device

G = torch.Generator().manual_seed(0)


# --- the loss -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda p: p.__name__)
def test_kd_loss_has_property(prop):
    assert prop(kd_loss)


def test_the_oracle_itself_agrees_with_torch_kl_div():
    s, v = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    torch_kl = F.kl_div(F.log_softmax(s / 2, 1), F.log_softmax(v / 2, 1), reduction="sum", log_target=True)
    assert torch.allclose(formula(s, v, 2.0), 4 * torch_kl / 3)


@pytest.mark.parametrize("c", [0.0, 7.5, -100.0])
def test_invariant_to_adding_a_constant_to_either_logits(c):
    base = kd_loss(S, V, 3.0)
    assert torch.allclose(kd_loss(S + c, V, 3.0), base, atol=1e-12)
    assert torch.allclose(kd_loss(S, V + c, 3.0), base, atol=1e-12)


def test_kd_loss_is_nonnegative_and_stable_for_huge_logits():
    s = torch.tensor([[1000.0, -1000.0, 0.0]])
    v = torch.tensor([[-1000.0, 1000.0, 0.0]])
    loss = kd_loss(s, v, 1.0)
    assert torch.isfinite(loss) and loss > 0


def test_soft_targets():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(soft_targets(z, 1.0), torch.softmax(z, 1))
    assert torch.allclose(soft_targets(z, 2.0), torch.exp(z / 2) / torch.exp(z / 2).sum())
    assert torch.allclose(soft_targets(z, 1e6), torch.full((1, 3), 1 / 3), atol=1e-5)  # T -> inf: uniform
    assert torch.allclose(soft_targets(z, 1.0).sum(), torch.tensor(1.0))


def test_distillation_loss_mixes_soft_and_hard():
    ce = F.cross_entropy(S, Y)
    for alpha in (0.0, 0.3, 1.0):
        expected = alpha * formula(S, V, 4.0) + (1 - alpha) * ce
        assert torch.allclose(distillation_loss(S, V, Y, 4.0, alpha), expected, rtol=1e-10)
    assert math.isclose(distillation_loss(S, V, Y, 4.0, 0.5).item(), GOLDEN["distillation_loss_T4_a0.5"],
                        rel_tol=1e-6)


def test_integer_targets_of_any_width():
    expected = distillation_loss(S, V, Y, 2.0, 0.5)
    for dtype in (torch.int32, torch.uint8):
        assert torch.equal(distillation_loss(S, V, Y.to(dtype), 2.0, 0.5), expected)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "hot", None, True])
def test_bad_temperature(bad):
    with pytest.raises(ValueError, match="^temperature: expected a positive finite number, got"):
        kd_loss(S, V, bad)
    with pytest.raises(ValueError, match="^temperature: expected a positive finite number, got"):
        soft_targets(S, bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_alpha(bad):
    with pytest.raises(ValueError, match=r"^alpha: expected a number in \[0, 1\], got"):
        distillation_loss(S, V, Y, 2.0, bad)


def test_mismatched_classes():
    with pytest.raises(ValueError, match=r"^teacher_logits: shape \(4, 100\) does not match student_logits \(4, 10\)"):
        kd_loss(torch.randn(4, 10), torch.randn(4, 100), 2.0)
    with pytest.raises(ValueError, match=r"^teacher_logits: shape \(3, 10\) does not match"):
        distillation_loss(torch.randn(4, 10), torch.randn(3, 10), torch.zeros(4, dtype=torch.long), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"^student_logits: expected shape \(batch, classes\)"):
        kd_loss(torch.randn(10), torch.randn(10), 2.0)


@pytest.mark.parametrize("targets, message", [
    (torch.tensor([0, 4, 1]), r"class indices must lie in \[0, 3\], got values from 0 to 4"),
    (torch.tensor([0, -1, 1]), r"class indices must lie in \[0, 3\], got values from -1 to 1"),
    (torch.tensor([0.0, 1.0, 2.0]), r"expected integer class indices of shape \(3,\), got torch.float32"),
    (torch.tensor([0, 1]), r"expected integer class indices of shape \(3,\), got torch.int64 of shape \(2,\)")])
def test_bad_targets(targets, message):
    with pytest.raises(ValueError, match="^targets: " + message):
        distillation_loss(S, V, targets, 2.0, 0.5)


# --- the objective ------------------------------------------------------------------------------------------------

def test_distillation_with_cached_logits_is_the_distillation_loss():
    out, batch = batch_of()
    cached = torch.randn(40, 10)
    batch = batch._replace(idx=torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]))
    objective = kd.Distillation(teacher_logits=cached, temperature=3, alpha=0.7)
    objective.setup(OnDevice(TensorDataset(torch.zeros(40, 784), torch.zeros(40, dtype=torch.long)), "cpu"), None)
    expected = kd.distillation_loss(out, cached[batch.idx], batch.y, temperature=3, alpha=0.7)
    assert torch.allclose(objective(out, batch, {}), expected)


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
