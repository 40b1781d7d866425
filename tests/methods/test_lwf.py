"""kdtutor.methods.lwf: Learning without Forgetting against the loss written out with F.kl_div and explicit
column selection, its class-mapping checks, and the objective trained by fit with an old model of fewer classes.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

import kdtutor as kd
from kdtutor.losses import lwf_loss
from kdtutor.training import LearningWithoutForgetting

from .helpers import toy


def lwf_by_hand(z, v, y, old_classes, t, weight):
    kept = torch.stack([z[:, c] for c in old_classes], 1)
    kl = F.kl_div(F.log_softmax(kept / t, 1), F.softmax(v / t, 1), reduction="batchmean")
    return F.cross_entropy(z, y) + weight * t * t * kl


def test_lwf_distils_only_the_old_classes():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 10, generator=g, dtype=torch.float64)
    v = torch.randn(5, 8, generator=g, dtype=torch.float64)  # the old model knew 8 classes
    y = torch.tensor([8, 9, 9, 8, 2])
    old_classes = [0, 1, 2, 3, 4, 5, 6, 7]
    got = lwf_loss(z, v, y, old_classes, temperature=2.0, lwf_weight=1.0)
    assert got.item() == pytest.approx(lwf_by_hand(z, v, y, old_classes, 2.0, 1.0).item(), rel=1e-6)
    shuffled = [7, 0, 1, 2, 3, 4, 5, 6]  # the mapping matters: old output k is new class old_classes[k]
    again = lwf_loss(z, v, y, shuffled, temperature=2.0, lwf_weight=0.5)
    assert again.item() == pytest.approx(lwf_by_hand(z, v, y, shuffled, 2.0, 0.5).item(), rel=1e-6)
    assert lwf_loss(z, v, y, old_classes, lwf_weight=0).item() == pytest.approx(F.cross_entropy(z, y).item())


@pytest.mark.parametrize("old_classes, match", [
    ([0, 1, 2], "old_classes: expected 8 integer indices"),
    ([0, 1, 2, 3, 4, 5, 6, 6], "old_classes: expected distinct indices"),
    ([0, 1, 2, 3, 4, 5, 6, 10], "old_classes: expected distinct indices"),
    ([0.0, 1, 2, 3, 4, 5, 6, 7], "old_classes: expected 8 integer indices"),
])
def test_lwf_checks_the_class_mapping_explicitly(old_classes, match):
    z, v, y = torch.randn(4, 10), torch.randn(4, 8), torch.tensor([8, 9, 8, 9])
    with pytest.raises(ValueError, match=match):
        lwf_loss(z, v, y, old_classes)


def test_lwf_refuses_a_batch_mismatch():
    with pytest.raises(ValueError, match="old_logits: expected shape"):
        lwf_loss(torch.randn(4, 10), torch.randn(3, 8), torch.tensor([8, 9, 8, 9]), list(range(8)))


def test_lwf_objective_trains_with_an_old_model_of_fewer_classes():
    data = toy()
    new_only = kd.subset(data, data.tensors[1] >= 8)  # the new data: classes 8 and 9 only
    torch.manual_seed(0)
    old = kd.MLP(in_features=16, hidden=(32,), num_classes=8)
    old_logits = kd.compute_logits(old, new_only, verbose=False)
    student = kd.MLP(in_features=16, hidden=(32,), num_classes=10)
    objective = LearningWithoutForgetting(list(range(8)), teacher_logits=old_logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no misalignment warning: the old model cannot know classes 8 and 9
        history = kd.fit(student, new_only, loss=objective, epochs=2, batch_size=32, verbose=False)
    assert len(history.train_loss) == 2 and history.train_loss[-1] < history.train_loss[0]
    with pytest.raises(ValueError, match="old_classes"):
        kd.fit(kd.MLP(in_features=16, hidden=(8,), num_classes=10), new_only, epochs=1, verbose=False,
               loss=LearningWithoutForgetting(list(range(7)), teacher_logits=old_logits))
