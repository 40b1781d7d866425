"""Training objectives: each against its formula, trainable parts reach the optimizer, features reach the loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.data import Batch, OnDevice


def batch_of(n=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(n, classes, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return out, Batch(torch.randn(n, 784, generator=g), y, torch.arange(n))


def test_cross_entropy_is_torchs():
    out, batch = batch_of()
    assert torch.allclose(kd.CrossEntropy()(out, batch, {}), F.cross_entropy(out, batch.y))
    smooth = kd.CrossEntropy(label_smoothing=0.1)(out, batch, {})
    assert torch.allclose(smooth, F.cross_entropy(out, batch.y, label_smoothing=0.1))
    with pytest.raises(ValueError, match="label_smoothing"):
        kd.CrossEntropy(label_smoothing=1.5)


def test_distillation_with_cached_logits_is_the_distillation_loss():
    out, batch = batch_of()
    cached = torch.randn(40, 10)
    batch = batch._replace(idx=torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]))
    objective = kd.Distillation(teacher_logits=cached, temperature=3, alpha=0.7)
    objective.setup(OnDevice(TensorDataset(torch.zeros(40, 784), torch.zeros(40, dtype=torch.long)), "cpu"), None)
    expected = kd.distillation_loss(out, cached[batch.idx], batch.y, temperature=3, alpha=0.7)
    assert torch.allclose(objective(out, batch, {}), expected)


def test_an_online_teacher_is_not_part_of_the_objective():
    teacher = kd.MLP(hidden=(8,))
    objective = kd.Distillation(teacher=teacher)
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    assert objective.teacher is teacher and "online teacher" in repr(objective)
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


class TinySequenceModel(nn.Module):
    """Predicts the next token of a sequence from the current one: logits of shape B x T x V."""

    def __init__(self, vocab=7):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab, 16), nn.Linear(16, vocab)

    def forward(self, x):
        return self.head(torch.relu(self.embed(x)))


def test_fit_trains_sequence_outputs_with_the_same_loop():
    """B x T x V outputs (a language model's shape) with B x T labels: the loop and accuracy need nothing else."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (256, 12), generator=g)
    data = TensorDataset(x, (x + 1) % 7)  # the next token is the current one plus one
    torch.manual_seed(0)
    model = TinySequenceModel()
    history = kd.fit(model, data, epochs=20, batch_size=64, lr=1e-2, device="cpu", verbose=False)
    assert history.train_acc[-1] > 0.99 and kd.evaluate(model, data) > 0.99


def test_train_config_is_one_printable_object_and_fit_uses_it(small):
    train, _ = small
    cfg = kd.TrainConfig(epochs=2, batch_size=1000, lr=5e-3, optimizer="sgd", momentum=0.0, schedule="constant")
    assert "epochs=2" in repr(cfg) and cfg.as_record()["optimizer"] == "sgd"
    history = kd.fit(kd.MLP(hidden=(8,)), train, cfg, device="cpu", verbose=False)
    assert len(history) == 2 and history.lr == [5e-3, 5e-3]
    overridden = kd.fit(kd.MLP(hidden=(8,)), train, cfg, epochs=1, device="cpu", verbose=False)
    assert len(overridden) == 1  # a keyword overrides the config's field
    with pytest.raises(TypeError, match="config: expected a TrainConfig"):
        kd.fit(kd.MLP(), train, {"epochs": 1})
