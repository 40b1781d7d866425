"""kdtutor.methods.focal: focal distillation against the loss written out per sample (F.kl_div and explicit
weights), kd_loss for the special case, bad input, and the objective trained by fit.
"""

import pytest
import torch
import torch.nn.functional as F

import kdtutor as kd
from kdtutor.losses import focal_distillation_loss
from kdtutor.training import FocalDistillation

from .helpers import toy


def focal_by_hand(z, v, y, t, base, focal):
    total = F.cross_entropy(z, y)
    for b in range(len(z)):
        w = base + focal * float(v[b].argmax() == y[b])
        p = F.softmax(v[b] / t, -1)
        kl = F.kl_div(F.log_softmax(z[b] / t, -1), p, reduction="sum")
        total = total + w * t * t * kl / len(z)
    return total


@pytest.mark.parametrize("t, base, focal", [(1.0, 1.0, 5.0), (2.0, 0.5, 0.0), (4.0, 0.0, 3.0)])
def test_focal_distillation_matches_the_formula_written_out(t, base, focal):
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    y[:3] = v[:3].argmax(1)  # the old model right on some samples
    got = focal_distillation_loss(z, v, y, t, base_weight=base, focal_weight=focal)
    assert got.item() == pytest.approx(focal_by_hand(z, v, y, t, base, focal).item(), rel=1e-6)


def test_focal_weight_zero_is_cross_entropy_plus_kd():
    g = torch.Generator().manual_seed(1)
    z, v, y = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    got = focal_distillation_loss(z, v, y, temperature=3.0, base_weight=1.0, focal_weight=0.0)
    assert got.item() == pytest.approx((F.cross_entropy(z, y) + kd.kd_loss(z, v, 3.0)).item(), rel=1e-5)


def test_focal_distillation_refuses_bad_input():
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="teacher_logits: shape"):
        focal_distillation_loss(z, torch.randn(4, 5), y)
    with pytest.raises(ValueError, match="focal_weight"):
        focal_distillation_loss(z, torch.randn(4, 3), y, focal_weight=-1)
    with pytest.raises(ValueError, match="base_weight"):
        focal_distillation_loss(z, torch.randn(4, 3), y, base_weight=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        focal_distillation_loss(z, torch.randn(4, 3), y, temperature=0)
    with pytest.raises(ValueError, match="targets"):
        focal_distillation_loss(z, torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


def test_focal_objective_matches_its_loss_function():
    data = toy(n=64)
    torch.manual_seed(0)
    old = kd.MLP(in_features=16, hidden=(8,), num_classes=10)
    old_logits = kd.compute_logits(old, data, verbose=False)
    objective = FocalDistillation(teacher_logits=old_logits, temperature=2.0, base_weight=1.0, focal_weight=4.0)
    assert "focal_weight=4.0" in repr(objective)
    student = kd.MLP(in_features=16, hidden=(8,), num_classes=10)
    kd.fit(student, data, loss=objective, epochs=1, batch_size=16, verbose=False)
    from kdtutor.data import Batch
    x, y = data.tensors
    batch = Batch(x, y, torch.arange(len(y)))
    out = student(x)
    expected = focal_distillation_loss(out, old_logits, y, 2.0, base_weight=1.0, focal_weight=4.0)
    assert objective(out, batch).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="focal_weight"):
        FocalDistillation(teacher_logits=old_logits, focal_weight=-2)
