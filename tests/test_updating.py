"""Updating a deployed model: negative flips, focal distillation, Learning without Forgetting, checkpoint lineage.

Oracles: hand counts on a small example; each loss written out here a second way (per sample, with
``F.kl_div`` and explicit weights or column selection); ``kd.kd_loss`` for the special cases.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.checkpoint import CheckpointError, describe_lineage, lineage, provenance
from kdtutor.evaluation import flip_table, negative_flip_rate
from kdtutor.losses import focal_distillation_loss, lwf_loss
from kdtutor.training import FocalDistillation, LearningWithoutForgetting

# --- negative flips -----------------------------------------------------------------------------------------------

Y = torch.tensor([0, 1, 2, 3, 0, 1])
OLD = torch.tensor([0, 1, 0, 3, 1, 1])  # right on 0, 1, 3, 5
NEW = torch.tensor([0, 2, 2, 1, 0, 1])  # right on 0, 2, 4, 5


def test_negative_flip_rate_by_hand():
    # negative flips: sample 1 and 3 (right before, wrong now) -> 2 of 6
    assert negative_flip_rate(OLD, NEW, Y) == pytest.approx(2 / 6)
    assert negative_flip_rate(NEW, OLD, Y) == pytest.approx(2 / 6)  # the reverse: samples 2 and 4
    assert negative_flip_rate(OLD, OLD, Y) == 0.0


def test_logits_are_reduced_to_their_predicted_class():
    old_logits = F.one_hot(OLD, 4).float() * 3 + 0.1
    assert negative_flip_rate(old_logits, NEW, Y) == negative_flip_rate(OLD, NEW, Y)


def test_flip_table_by_hand():
    rows = flip_table(OLD, NEW, Y, classes=["a", "b", "c", "d"])
    by = {row["class"]: row for row in rows}
    assert [row["class"] for row in rows] == ["a", "b", "c", "d", "all"]
    assert by["a"] == {"class": "a", "samples": 2, "old_acc": 0.5, "new_acc": 1.0, "negative_flips": 0,
                       "positive_flips": 1, "nfr": 0.0}
    assert by["b"]["negative_flips"] == 1 and by["b"]["nfr"] == 0.5 and by["b"]["positive_flips"] == 0
    assert by["c"]["positive_flips"] == 1 and by["d"]["negative_flips"] == 1 and by["d"]["new_acc"] == 0.0
    assert by["all"]["negative_flips"] == 2 and by["all"]["positive_flips"] == 2 and by["all"]["samples"] == 6
    assert by["all"]["nfr"] == pytest.approx(negative_flip_rate(OLD, NEW, Y))


def test_flip_inputs_are_checked():
    with pytest.raises(ValueError, match="new_pred: expected 6 predictions"):
        negative_flip_rate(OLD, NEW[:5], Y)
    with pytest.raises(ValueError, match="old_pred: expected a 1-D tensor of class indices"):
        negative_flip_rate(OLD.float(), NEW, Y)
    with pytest.raises(ValueError, match="classes: 2 names"):
        flip_table(OLD, NEW, Y, classes=["a", "b"])


# --- focal distillation -------------------------------------------------------------------------------------------

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


# --- Learning without Forgetting ----------------------------------------------------------------------------------

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


# --- both as objectives trained by fit ----------------------------------------------------------------------------

def toy(n=256, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, 16, generator=g) * 2
    return TensorDataset(centres[y] + torch.randn(n, 16, generator=g), y)


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


# --- lineage ------------------------------------------------------------------------------------------------------

def test_lineage_follows_updates_back_and_checks_each_parent(tmp_path):
    teacher = kd.save(kd.MLP(in_features=4, hidden=(3,), num_classes=2), tmp_path / "teacher.pt")
    first = kd.save(kd.MLP(in_features=4, hidden=(3,), num_classes=2), tmp_path / "v1.pt",
                    teacher=provenance(teacher), temperature=4.0, seed=0)
    second = kd.save(kd.MLP(in_features=4, hidden=(3,), num_classes=2), tmp_path / "v2.pt",
                     teacher=provenance(teacher), updated_from=provenance(first), seed=1)
    third = kd.save(kd.MLP(in_features=4, hidden=(3,), num_classes=2), tmp_path / "v3.pt",
                    updated_from=provenance(second), seed=2)
    chain = lineage(third)
    assert [step["path"] for step in chain] == [str(third), str(second), str(first)]
    assert [step["metadata"]["seed"] for step in chain] == [2, 1, 0]
    assert chain[2]["metadata"]["teacher"]["sha256"] == provenance(teacher)["sha256"]
    text = describe_lineage(third, keys=("seed",))
    assert text.splitlines()[0].startswith("v3.pt") and "updated from v1.pt" in text and "seed=0" in text
    sha = provenance(teacher)["sha256"][:12]
    assert f"teacher teacher.pt ({sha})" in text and str(tmp_path) not in text  # file names, not folders
    kd.save(kd.MLP(in_features=4, hidden=(3,), num_classes=2), first, seed=99)  # the parent overwritten
    with pytest.raises(CheckpointError, match="v1.pt is missing or has changed"):
        lineage(third)


def test_provenance_needs_a_file(tmp_path):
    with pytest.raises(ValueError, match="path: no file"):
        provenance(tmp_path / "none.pt")
