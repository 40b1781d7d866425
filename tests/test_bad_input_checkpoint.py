"""Mistakes with checkpoints and class subsets: one row per mistake — the input, the exception, a message fragment
(the table style of tests/test_bad_input.py). Each row gets a fresh folder, ``tmp``, for the files it writes."""

import io
import warnings

import pytest
import torch
from conftest import assert_clear_error
from torch.utils.data import Subset, TensorDataset

import kdtutor as kd
from kdtutor.checkpoint import CheckpointError, write_verified
from kdtutor.data import without_classes

LABELS = torch.arange(20) % 4
DATA = TensorDataset(torch.randn(20, 1, 28, 28), LABELS)


def mlp():
    torch.manual_seed(0)
    return kd.MLP(in_features=4, hidden=(3,), num_classes=2)


def saved(tmp):
    return kd.save(mlp(), tmp / "m.pt")


def pruned_mlp():
    kc = pytest.importorskip("kdtutor.compression")
    pytest.importorskip("torch_pruning")
    return kc.prune_channels(mlp(), 0.5, example=torch.zeros(2, 4))


def int8_mlp():
    kc = pytest.importorskip("kdtutor.compression")
    pytest.importorskip("torchao")
    return kc.int8_linear(mlp())


def torch_ao_dynamic():
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated: what a student might still find online
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(4, 2)), {torch.nn.Linear})


def plain_state_dict(tmp):
    torch.save(mlp().state_dict(), tmp / "plain.pt")
    return tmp / "plain.pt"


def unknown_architecture(tmp):
    return write_verified(tmp / "u.pt", {"state_dict": mlp().state_dict(), "metadata": {}, "arch": "Mystery",
                                         "module": "their_package.nets", "config": {}})


def newer_format(tmp):
    torch.save({"format": "kdtutor-checkpoint/3", "state_dict": {}}, tmp / "new.pt")
    return tmp / "new.pt"


def not_a_file(tmp):
    (tmp / "notes.pt").write_text("my notes")
    return tmp / "notes.pt"


def truncated(tmp):
    path = saved(tmp)
    path.write_bytes(path.read_bytes()[:-100])
    return path


def torch_but_not_a_dict(tmp):
    buffer = io.BytesIO()
    torch.save([torch.zeros(2)], buffer)
    (tmp / "list.pt").write_bytes(buffer.getvalue())
    return tmp / "list.pt"


CASES = {
    # load: the model to load into is an instance
    "load into a class": (lambda tmp: kd.load(saved(tmp), model=kd.MLP), TypeError,
                          "model: expected an nn.Module instance, got the class MLP itself; create the model first"),
    "load into a state_dict": (lambda tmp: kd.load(saved(tmp), model=mlp().state_dict()), TypeError,
                               "model: expected an nn.Module, got OrderedDict"),
    "load a plain torch.save state_dict": (lambda tmp: kd.load(plain_state_dict(tmp)), CheckpointError,
                                           "not a kdtutor checkpoint (a torch file without format "
                                           "'kdtutor-checkpoint/2'); a plain state_dict loads with"),
    "load a torch file holding a list": (lambda tmp: kd.load(torch_but_not_a_dict(tmp)), CheckpointError,
                                         "not a kdtutor checkpoint"),
    "load a file of a newer format": (lambda tmp: kd.load(newer_format(tmp)), CheckpointError,
                                      "written in kdtutor-checkpoint/3 by a newer kdtutor; this one reads "
                                      "kdtutor-checkpoint 1 and kdtutor-checkpoint/2: upgrade kdtutor"),
    "load a text file": (lambda tmp: kd.load(not_a_file(tmp)), CheckpointError,
                         "not a readable kdtutor checkpoint"),
    "load a truncated file": (lambda tmp: kd.load(truncated(tmp)), CheckpointError, "truncated or corrupt"),
    "load an architecture never imported": (lambda tmp: kd.load(unknown_architecture(tmp)), ValueError,
                                            "holds a Mystery (defined in their_package.nets), which kdtutor cannot "
                                            "rebuild; import their_package.nets first, or pass the module"),
    # save: refuses what load could not rebuild
    "save a channel-pruned MLP": (lambda tmp: kd.save(pruned_mlp(), tmp / "p.pt"), ValueError,
                                  "model: this MLP's weights no longer fit its config"),
    "save an int8_linear model": (lambda tmp: kd.save(int8_mlp(), tmp / "q.pt"), ValueError,
                                  "model: expected weights in plain tensors, got features.1.weight: a tensor subclass"),
    "save a torch.ao quantize_dynamic model": (lambda tmp: kd.save(torch_ao_dynamic(), tmp / "d.pt"), ValueError,
                                               "model: expected weights in plain tensors, got 0._packed_params.dtype: "
                                               "a dtype, not a tensor"),
    "save a class": (lambda tmp: kd.save(kd.MLP, tmp / "c.pt"), TypeError,
                     "model: expected an nn.Module instance, got the class MLP itself"),
    "write_verified with the file's own keys": (lambda tmp: write_verified(tmp / "w.pt", {"sha256": "x"}), ValueError,
                                                "payload: keys ['sha256'] are the file's own"),
    # without_classes(labels, classes)
    "without_classes given the dataset": (lambda tmp: without_classes(DATA, [1]), TypeError,
                                          "labels: expected a 1-D tensor of integer class labels (a dataset's labels, "
                                          "e.g. train.tensors[1]), got TensorDataset"),
    "without_classes given a Subset": (lambda tmp: without_classes(Subset(DATA, [0, 1]), [1]), TypeError,
                                       "labels: expected a 1-D tensor of integer class labels (a dataset's labels, "
                                       "e.g. train.tensors[1]), got Subset"),
    "without_classes given the dataset as classes": (lambda tmp: without_classes(LABELS, DATA), TypeError,
                                                     "classes: expected a sequence of class labels such as [8, 9], "
                                                     "got TensorDataset"),
    "without_classes given a class name": (lambda tmp: without_classes(LABELS, "Sneaker"), TypeError,
                                           "classes: expected a sequence of class labels such as [8, 9], got str"),
    "without_classes given None": (lambda tmp: without_classes(LABELS, None), TypeError,
                                   "classes: expected a sequence of class labels such as [8, 9], got NoneType"),
    "without_classes given fractional classes": (lambda tmp: without_classes(LABELS, [1.5]), ValueError,
                                                 "classes: expected a sequence of integer class labels such as "
                                                 "[8, 9], got torch.float64 of shape (1,)"),
    "without_classes given float labels": (lambda tmp: without_classes(LABELS.float(), [1]), ValueError,
                                           "labels: expected a 1-D tensor of integer class labels (e.g. "
                                           "train.tensors[1]), got torch.float32 of shape (20,)"),
    "without_classes given images": (lambda tmp: without_classes(DATA.tensors[0], [1]), ValueError,
                                     "labels: expected a 1-D tensor of integer class labels"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_gets_a_clear_error(case, tmp_path):
    call, error, fragment = CASES[case]
    assert_clear_error(case, lambda: call(tmp_path), error, fragment)


def test_without_classes_still_accepts_what_it_did():
    """The accepted forms give the same indices as the formula: samples whose label is not dropped."""
    expected = torch.tensor([i for i, y in enumerate(LABELS.tolist()) if y not in (1, 3)])
    for classes in ([1, 3], (1, 3), torch.tensor([1, 3]), range(1, 4, 2), {1, 3}):
        assert torch.equal(without_classes(LABELS, classes), expected)
    assert torch.equal(without_classes(LABELS.numpy(), [1, 3]), expected)
    assert torch.equal(without_classes(LABELS, 1), without_classes(LABELS, [1]))  # one class, as an int
    assert torch.equal(without_classes(LABELS, []), torch.arange(20))
