"""kdtutor.methods.base: the Objective protocol, the teacher and feature bases, CrossEntropy and Sum.

The teacher checks of TeacherObjective (an online teacher, cached logits) are run through Distillation. Also the
checks that cover several methods at once: attention transfer, FitNets and decoupled KD read the teacher's rows
of their batch, the feature objectives refuse bad input, and every loss keeps float64 (gradcheck) while float32
and half give exactly the numbers they gave before float64 was kept.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdtutor as kd
from kdtutor.evaluation import compute_features
from kdtutor.losses import attention_transfer_loss, dkd_loss, hint_loss
from kdtutor.training import AttentionTransfer, CrossEntropy, DecoupledKD, FitNets, Sum

from .helpers import STUDENT_LAYERS, TEACHER_LAYERS, _precision_cases, batch_of

# --- CrossEntropy and Sum -----------------------------------------------------------------------------------------

def test_cross_entropy_is_torchs():
    out, batch = batch_of()
    assert torch.allclose(kd.CrossEntropy()(out, batch, {}), F.cross_entropy(out, batch.y))
    smooth = kd.CrossEntropy(label_smoothing=0.1)(out, batch, {})
    assert torch.allclose(smooth, F.cross_entropy(out, batch.y, label_smoothing=0.1))
    with pytest.raises(ValueError, match="label_smoothing"):
        kd.CrossEntropy(label_smoothing=1.5)


def test_sum_adds_its_terms():
    out, y = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    batch = kd.data.Batch(torch.zeros(4, 1), y, torch.arange(4))
    assert Sum(CrossEntropy(), CrossEntropy())(out, batch, {}).item() == pytest.approx(
        2 * F.cross_entropy(out, y).item())
    with pytest.raises(ValueError, match="terms"):
        Sum()


# --- your own objective: trainable parts reach the optimizer, features reach the loss -----------------------------

class Hint(kd.Objective):
    """A FitNets-like objective: cross-entropy plus matching a recorded feature through a trainable regressor."""

    features = ("features.1",)

    def __init__(self):
        super().__init__()
        self.regressor = nn.Linear(16, 4)
        self.seen = []

    def forward(self, out, batch, features):
        hidden = features["features.1"]
        self.seen.append(hidden.shape)
        target = batch.x.flatten(1)[:, :4]  # an arbitrary, learnable target for the regressed features
        return F.cross_entropy(out, batch.y) + F.mse_loss(self.regressor(hidden), target)


def test_objectives_may_train_parameters_and_read_features(small):
    train, _ = small
    torch.manual_seed(0)
    model, objective = kd.MLP(hidden=(16,)), Hint()
    before = objective.regressor.weight.detach().clone()
    kd.fit(model, train, epochs=1, batch_size=500, loss=objective, device="cpu", verbose=False)
    assert objective.seen == [(500, 16)] * 4  # the ReLU output of the hidden layer, every step
    assert not torch.equal(before, objective.regressor.weight)  # fit added the regressor to the optimizer
    assert all(not m._forward_hooks for m in model.modules())  # the feature hooks are removed after fit
    with pytest.raises(ValueError, match="loss: give the teacher"):
        kd.fit(model, train, epochs=1, loss=Hint(), temperature=2)
    with pytest.raises(TypeError, match="loss: expected an Objective"):
        kd.fit(model, train, epochs=1, loss=F.cross_entropy)


# --- teacher objectives: an online teacher or cached logits, checked once -----------------------------------------

def test_an_online_teacher_is_not_part_of_the_objective():
    teacher = kd.MLP(hidden=(8,))
    objective = kd.Distillation(teacher=teacher)
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    assert objective.teacher is teacher and "(teacher, temperature" in repr(objective)
    assert "teacher, online=True" in repr(kd.Distillation(teacher=teacher, online=True))
    t = kd.training
    for make in (t.Distillation, t.LogitMatching, t.DecoupledKD, t.FocalDistillation,
                 lambda **kw: t.LearningWithoutForgetting([0, 1], **kw)):  # every teacher objective takes it
        assert make(teacher=teacher, online=True).online and not make(teacher=teacher).online
    with pytest.raises(TypeError, match="teacher: expected an nn.Module"):
        kd.Distillation(teacher=torch.zeros(3, 10))
    with pytest.raises(ValueError, match="exactly one"):
        kd.Distillation()


def test_cached_logits_are_checked_and_converted_once():
    as_numpy = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float64)
    objective = kd.Distillation(teacher_logits=as_numpy)
    assert objective.logits.dtype == torch.float32 and objective.logits.shape == (5, 10)
    with pytest.raises(ValueError, match="teacher_logits: contains NaN or infinite"):
        kd.Distillation(teacher_logits=torch.tensor([[0.0, -float("inf")]]))
    with pytest.raises(ValueError, match="teacher_logits: expected a floating-point tensor"):
        kd.Distillation(teacher_logits=torch.ones(4, 10, dtype=torch.long))
    with pytest.warns(UserWarning, match="look like probabilities"):
        kd.Distillation(teacher_logits=torch.softmax(torch.randn(6, 10), 1))


# --- feature objectives: the teacher rows of the batch, bad input -------------------------------------------------

def _batch(train, idx):
    return kd.data.Batch(train.tensors[0][idx], train.tensors[1][idx], idx)


def test_feature_objectives_read_the_teacher_rows_of_the_batch(tiny):
    """Each objective equals its loss function on the teacher's rows picked by the batch's sample indices."""
    train, teacher, feats = tiny
    idx = torch.tensor([7, 2, 30, 11])
    student_feats = {"features.2": torch.randn(4, 8, 14, 14), "features.5": torch.randn(4, 16, 7, 7)}
    pairs = dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True))
    at = AttentionTransfer(feats, pairs, weight=10.0)
    expected = 10.0 * sum(attention_transfer_loss(student_feats[s], feats[t][idx]) for s, t in pairs.items())
    assert at(torch.zeros(4, 10), _batch(train, idx), student_feats).item() == pytest.approx(expected.item())
    hints = FitNets(feats, {"features.5": "features.7"}, weight=2.0)
    hints.attach(kd.student_cnn(), kd.data.OnDevice(train, "cpu"))
    r = hints.regressors["features_5"]
    expected = 2.0 * hint_loss(r(student_feats["features.5"]), feats["features.7"][idx])
    assert hints(torch.zeros(4, 10), _batch(train, idx), student_feats).item() == pytest.approx(expected.item())
    logits = kd.compute_logits(teacher, train, verbose=False)
    out = torch.randn(4, 10)
    dkd = DecoupledKD(teacher_logits=logits, temperature=2, tckd_weight=0.5, nckd_weight=3)
    expected = dkd_loss(out, logits[idx], train.tensors[1][idx], 2.0, 0.5, 3.0)
    assert dkd(out, _batch(train, idx)).item() == pytest.approx(expected.item())


def test_feature_objectives_bad_input(tiny):
    train, _, feats = tiny
    pairs = dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True))
    with pytest.raises(ValueError, match=r"teacher layers \['features.9'\]"):
        AttentionTransfer(feats, {"features.2": "features.9"})
    with pytest.raises(ValueError, match="pairs"):
        FitNets(feats, {})
    short = {k: v[:10] for k, v in feats.items()}
    with pytest.raises(ValueError, match="10 rows"):
        kd.fit(kd.student_cnn(), train, loss=AttentionTransfer(short, pairs), epochs=1, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="augment"):
        kd.fit(kd.student_cnn(), train, loss=AttentionTransfer(feats, pairs), epochs=1, device="cpu",
               augment=kd.RandomShiftFlip(), verbose=False)
    flat = FitNets(feats, {"features.1": "features.3"})  # an MLP's hidden layer is not a feature map
    with pytest.raises(ValueError, match=r"pairs \(the output of student layer 'features.1'\).*\(2, 128\)"):
        kd.fit(kd.MLP(hidden=(128,)), train, loss=Sum(CrossEntropy(), flat), epochs=1, device="cpu", verbose=False)
    crossed = {"features.2": "features.7"}  # 14 x 14 against 7 x 7
    with pytest.raises(ValueError, match=r"\(16, 64, 7, 7\).*\(16, 8, 14, 14\)"):
        kd.fit(kd.student_cnn(), train, loss=AttentionTransfer(feats, crossed), epochs=1, batch_size=16,
               device="cpu", verbose=False)


# --- precision: float64 stays float64 (gradcheck), float32 and half give exactly the numbers they gave before ---------

@pytest.mark.parametrize("name", list(_precision_cases()))
def test_float64_inputs_stay_float64_and_pass_gradcheck(name):
    loss, old, s, t = _precision_cases()[name]
    assert loss(s, t).dtype == torch.float64
    torch.testing.assert_close(loss(s, t), old(s, t).double(), rtol=1e-5, atol=1e-6)  # the same loss, in float32
    assert torch.autograd.gradcheck(lambda a: loss(a, t), (s.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda b: loss(s, b), (t.clone().requires_grad_(),))


@pytest.mark.parametrize("name", list(_precision_cases()))
def test_float32_and_half_give_bit_identical_results_to_the_float_upcast(name):
    loss, old, s, t = _precision_cases()[name]
    for s_dtype, t_dtype in ((torch.float32, torch.float32), (torch.float32, torch.float64),
                             (torch.float16, torch.float16), (torch.bfloat16, torch.float32)):
        a, b = s.to(s_dtype).requires_grad_(), t.to(t_dtype)
        got, want = loss(a, b), old(a, b)
        assert got.dtype == torch.float32 and torch.equal(got, want), (s_dtype, t_dtype)
        (g_got,) = torch.autograd.grad(got, a)
        (g_want,) = torch.autograd.grad(want, a)
        assert torch.equal(g_got, g_want), (s_dtype, t_dtype)


# kdtutor.evaluation.compute_features: the rows the feature objectives read, one per sample, in order

def test_compute_features_returns_one_row_per_sample_in_order(tiny):
    train, teacher, feats = tiny
    assert feats["features.3"].shape == (48, 32, 14, 14) and feats["features.7"].shape == (48, 64, 7, 7)
    with kd.record_activations(teacher, ["features.7"]) as acts, torch.no_grad():
        teacher(train.tensors[0][5:6])
    assert torch.allclose(feats["features.7"][5:6], acts["features.7"], atol=1e-6)
    with pytest.raises(ValueError, match="layers"):
        compute_features(teacher, train, [])
