"""Updating a deployed model: negative flips and checkpoint lineage.

Oracles: hand counts on a small example. The update methods (focal distillation, Learning without Forgetting)
are tested in tests/methods/test_focal.py and tests/methods/test_lwf.py.
"""

import pytest
import torch
import torch.nn.functional as F

import kdtutor as kd
from kdtutor.checkpoint import CheckpointError, describe_lineage, lineage, provenance
from kdtutor.evaluation import flip_table, negative_flip_rate

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
