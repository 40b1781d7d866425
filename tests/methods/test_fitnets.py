"""kdtutor.methods.fitnets: the hint loss against its formula, and FitNets' regressors sized, seeded and trained
through fit on a tiny random problem.
"""

import math

import pytest
import torch

import kdtutor as kd
from kdtutor.losses import hint_loss
from kdtutor.training import CrossEntropy, FitNets, Sum

from .helpers import STUDENT_LAYERS, TEACHER_LAYERS


def test_hint_loss_is_half_the_mean_squared_difference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    expected = 0.5 * sum((a - b) ** 2 for a, b in zip(s.flatten().tolist(), t.flatten().tolist(), strict=True)) / 96
    assert hint_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert hint_loss(t, t).item() == 0.0


def test_hint_loss_names_both_shapes_when_no_regressor_was_applied():
    with pytest.raises(ValueError, match=r"\(2, 8, 14, 14\).*\(2, 32, 14, 14\).*regressor"):
        hint_loss(torch.zeros(2, 8, 14, 14), torch.zeros(2, 32, 14, 14))


def test_fitnets_sizes_its_regressors_from_the_student_and_trains_them(tiny):
    train, _, feats = tiny
    torch.manual_seed(0)
    student = kd.student_cnn()
    hints = FitNets(feats, dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True)), weight=1.0)
    hints.attach(student, kd.data.OnDevice(train, "cpu"))
    conv = hints.regressors["features_2"]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (8, 32, (1, 1))
    assert hints.regressors["features_5"].weight.shape == (64, 16, 1, 1)
    before = conv.weight.detach().clone()
    history = kd.fit(student, train, loss=Sum(CrossEntropy(), hints), epochs=1, batch_size=16, device="cpu",
                     verbose=False)
    assert hints.regressors["features_2"] is conv  # same widths: kept, and trained by fit's optimizer
    assert not torch.equal(conv.weight, before)
    assert math.isfinite(history.train_loss[-1])
    assert not any(k.startswith("regressors") for k in student.state_dict())  # not part of the student
    wider = kd.CNN(channels=(12, 16), hidden=0, batch_norm=False)
    kd.fit(wider, train, loss=Sum(CrossEntropy(), hints), epochs=1, batch_size=16, device="cpu", verbose=False)
    assert hints.regressors["features_2"].in_channels == 12  # another student: new regressors


def test_fitnets_regressors_start_from_the_runs_seed(tiny):
    train, _, feats = tiny
    weights = []
    for draws in (1, 7):
        torch.manual_seed(0)
        student = kd.student_cnn()
        torch.rand(draws)  # a different global random state each time
        hints = FitNets(feats, {"features.2": "features.3"})
        kd.fit(student, train, loss=hints, epochs=1, batch_size=16, seed=3, device="cpu", verbose=False)
        weights.append(hints.regressors["features_2"].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
