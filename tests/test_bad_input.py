"""What students do wrong: one row per mistake — the input, the exception it must raise, a fragment of its message.

Every public function checks its input at the boundary and names the argument, what was expected and what was
given. Below the table: tests that nothing is lost (a failed run keeps finite weights and its history; a saved
checkpoint always loads), and the mistakes that are accepted and converted rather than refused.
"""

import gzip
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_clear_error, quick_fit, write_idx
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import kdtutor as kd
from kdtutor.data import datasets as kdata
from kdtutor.evaluation import expected_calibration_error, fit_temperature, reliability
from kdtutor.experiments import paired_gain

G = torch.Generator().manual_seed(0)
X, Y = torch.randn(64, 1, 28, 28, generator=G), torch.randint(0, 10, (64,), generator=G)
DATA = TensorDataset(X, Y)
LOGITS = torch.randn(64, 10, generator=G)


def mlp():
    torch.manual_seed(0)
    return kd.MLP(hidden=(8,))


class PILLike(Dataset):
    """A torchvision-style dataset without ToTensor: samples are PIL images."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        from PIL import Image

        return Image.new("L", (28, 28)), 0


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * x.flatten(1).sum(1)  # one number per image, not logits


def fit(**kwargs):
    return quick_fit(kwargs.pop("model", None) or mlp(), kwargs.pop("data", DATA), **kwargs)


def later_bad_label():
    y = Y.clone()
    y[-1] = 10  # only the last batch has it
    return TensorDataset(X, y)


CASES = {
    # fit: arguments
    "temperature without a teacher": (lambda: fit(temperature=4), ValueError, "temperature: only used for distil"),
    "alpha without a teacher": (lambda: fit(alpha=0.5), ValueError, "alpha: only used for distillation"),
    "T=True": (lambda: fit(teacher=mlp(), temperature=True), ValueError, "temperature: expected a positive"),
    "teacher is a tensor": (lambda: fit(teacher=LOGITS), TypeError, "teacher: expected an nn.Module"),
    "augment is the class": (lambda: fit(augment=kd.RandomShiftFlip), ValueError, "augment: expected an augment"),
    "seed=None": (lambda: fit(seed=None), ValueError, "seed: expected an integer, got None"),
    "momentum with AdamW": (lambda: fit(momentum=0.9), ValueError, "momentum: only optimizer='sgd' uses it"),
    "lr=inf": (lambda: fit(lr=float("inf")), ValueError, "lr: expected a finite number >= 0, got inf"),
    "a misspelt setting": (lambda: fit(epoch=2), TypeError, "unexpected keyword argument(s) ['epoch']"),
    "model is a function": (lambda: kd.fit(lambda x: x, DATA, epochs=1), TypeError, "model: expected an nn.Module"),
    "a model with nothing to train": (lambda: fit(model=nn.Flatten()), ValueError,
                                      "model: has no trainable parameters"),
    # fit: data
    "val=[]": (lambda: fit(val=[]), ValueError, "val: the dataset is empty"),
    "val is a DataLoader": (lambda: fit(val=DataLoader(DATA)), TypeError, "val: expected a dataset"),
    "train is a DataLoader": (lambda: fit(data=DataLoader(DATA)), TypeError, "train: expected a dataset"),
    "val of the wrong shape": (lambda: fit(val=TensorDataset(torch.zeros(4, 784), torch.zeros(4, dtype=torch.long))),
                               ValueError, "val: samples of shape (784,) do not match the training samples' (1, 28"),
    "a bad label in a later batch": (lambda: fit(data=later_bad_label(), batch_size=16), ValueError,
                                     "train: labels must lie in [0, 9] (the model has 10 outputs), got labels from 0"),
    "float labels": (lambda: fit(data=TensorDataset(X, Y.float())), ValueError, "train: expected integer class lab"),
    "PIL images": (lambda: fit(data=PILLike()), TypeError, "expected each input to be a tensor or array, got PIL"),
    "a model with 1-D output": (lambda: fit(model=Flat()), ValueError, "model: returns outputs of shape (64,)"),
    # fit: teacher logits
    "teacher logit of -inf": (lambda: fit(teacher_logits=torch.where(LOGITS > 2.5, -float("inf"), LOGITS)), ValueError,
                              "teacher_logits: contains NaN or infinite values"),
    "teacher logits of another split": (lambda: fit(teacher_logits=LOGITS[:10]), ValueError,
                                        "teacher_logits: expected one row per training sample, shape (64, classes)"),
    "teacher logits as integers": (lambda: fit(teacher_logits=LOGITS.long()), ValueError,
                                   "teacher_logits: expected a floating-point tensor"),
    "teacher and its logits": (lambda: fit(teacher=mlp(), teacher_logits=LOGITS), ValueError,
                               "teacher_logits: pass either a teacher or its cached logits, not both"),
    # evaluation
    "evaluate on empty data": (lambda: kd.evaluate(mlp(), TensorDataset(torch.zeros(0, 784), torch.zeros(0))),
                               ValueError, "data: the dataset is empty"),
    "evaluate a model with 1-D output": (lambda: kd.evaluate(Flat(), DATA), ValueError,
                                         "model: returns outputs of shape (64,)"),
    "compute_logits of a parameterless 1-D model": (lambda: kd.compute_logits(nn.Flatten(0), DATA), ValueError,
                                                    "model: returns outputs of shape"),
    "evaluate a DataLoader": (lambda: kd.evaluate(mlp(), DataLoader(DATA)), TypeError,
                              "data: expected a dataset (e.g. a TensorDataset), got a DataLoader"),
    "ECE at temperature -1": (lambda: expected_calibration_error(LOGITS, Y, temperature=-1), ValueError,
                              "temperature: expected a positive finite number, got -1"),
    "reliability with 0 bins": (lambda: reliability(LOGITS, Y, n_bins=0), ValueError, "n_bins: expected a positive"),
    "calibration labels misaligned": (lambda: expected_calibration_error(LOGITS, Y[:5]), ValueError,
                                      "labels: expected shape (64,)"),
    "fit_temperature low > high": (lambda: fit_temperature(LOGITS, Y, low=5, high=1), ValueError,
                                   "high: expected a number above low=5"),
    # data
    "subset with float indices": (lambda: kd.subset(DATA, torch.tensor([0.0, 1.0])), ValueError,
                                  "indices: expected a 1-D sequence of integer indices or a boolean mask"),
    "subset with a 2-D index": (lambda: kd.subset(DATA, [[0, 1]]), ValueError, "indices: expected a 1-D sequence"),
    "subset with a short mask": (lambda: kd.subset(DATA, Y[:10] == 1), ValueError,
                                 "indices: a boolean mask needs one entry per sample (64)"),
    "stratified above the smallest class": (lambda: kd.stratified_indices(torch.tensor([0] * 53 + [1] * 43), 50),
                                            ValueError, "n_per_class: expected an int from 1 to 43 (the smallest"),
    "stratified with float labels": (lambda: kd.stratified_indices(torch.rand(10), 1), ValueError,
                                     "labels: expected a non-empty 1-D tensor of integer class labels"),
    # losses
    "kd_loss with T=0": (lambda: kd.kd_loss(LOGITS, LOGITS, 0), ValueError, "temperature: expected a positive"),
    "distillation_loss with alpha=2": (lambda: kd.distillation_loss(LOGITS, LOGITS, Y, 2, 2), ValueError,
                                       "alpha: expected a number in [0, 1], got 2"),
    "distillation_loss with float targets": (lambda: kd.distillation_loss(LOGITS, LOGITS, Y.float(), 2, .5),
                                             ValueError, "targets: expected integer class indices of shape (64,)"),
    # checkpoints and experiments
    "save to a directory": (lambda: kd.save(mlp(), "."), ValueError, "path: . is a directory"),
    "save an object in metadata": (lambda: kd.save(mlp(), "/tmp/kdtutor-never.pt", note=object()), ValueError,
                                   "metadata: note is a object"),
    "save something not a model": (lambda: kd.save({"w": 1}, "/tmp/kdtutor-never.pt"), TypeError,
                                   "model: expected an nn.Module"),
    "pretrained model that is not shipped": (lambda: kd.pretrained("teacher_cifar"), ValueError,
                                             "name: expected one of ['lm_student_kjv', 'lm_teacher_kjv', "
                                             "'teacher_fmnist', "),
    "paired_gain with other seeds": (lambda: paired_gain([{"seed": 0, "a": 1}], [{"seed": 1, "a": 1}], "a"),
                                     ValueError, "control: seeds [1] differ from the treatment's [0]"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_gets_a_clear_error(case):
    assert_clear_error(case, *CASES[case])


def test_the_suite_is_large():
    assert len(CASES) >= 40


# --- data files --------------------------------------------------------------------------------------------------

def test_a_flipped_byte_inside_a_gz_file_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5000) % 10)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=f"{path}: cannot be read or decompressed"):
        kdata.read_idx(path)


def test_the_data_command_reports_a_corrupt_file_without_a_traceback(fmnist, tmp_path, monkeypatch, capsys):
    from kdtutor.__main__ import main

    folder, _ = kdata.locate_fashion_mnist()
    for name in kdata.FMNIST_FILES:
        src = next(folder.glob(f"{name}*"))
        shutil.copy(src, tmp_path / src.name)
    target = next(tmp_path.glob("t10k-labels*"))
    raw = gzip.decompress(target.read_bytes()) if target.suffix == ".gz" else target.read_bytes()
    raw = raw[:-1] + bytes([(raw[-1] + 1) % 256])
    target.write_bytes(gzip.compress(raw) if target.suffix == ".gz" else raw)
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    assert main(["data", "--no-download"]) == 1
    assert "t10k-labels" in capsys.readouterr().out


def test_download_false_looks_in_the_download_cache(fmnist, tmp_path, monkeypatch):
    folder, _ = kdata.locate_fashion_mnist()
    cache = tmp_path / "cache"
    (cache / "FashionMNIST" / "raw").mkdir(parents=True)
    for name in kdata.FMNIST_FILES:
        src = next(folder.glob(f"{name}*"))
        shutil.copy(src, cache / "FashionMNIST" / "raw" / src.name)
    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    monkeypatch.setattr(kdata, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(kdata, "CACHE_DIR", cache)
    train, test = kd.load_fashion_mnist(download=False)
    assert len(train) == 60_000
    monkeypatch.setattr(kdata, "CACHE_DIR", tmp_path / "empty")
    with pytest.raises(kd.DatasetNotFoundError, match="the download cache"):
        kd.load_fashion_mnist(download=False)


# --- accepted and converted, not refused -----------------------------------------------------------------------------

def test_masks_select_samples():
    for mask in (Y != 9, (Y != 9).tolist(), (Y != 9).numpy()):
        chosen = kd.subset(DATA, mask)
        assert len(chosen) == int((Y != 9).sum()) and bool((chosen.tensors[1] != 9).all())
    assert torch.equal(kd.subset(DATA, np.array([3, 1])).tensors[1], Y[[3, 1]])
    assert len(kd.subset(DATA, [])) == 0


def test_numpy_teacher_logits_and_other_integer_labels_are_accepted():
    history = fit(teacher_logits=LOGITS.numpy().astype(np.float64), data=TensorDataset(X, Y.to(torch.int32)))
    assert len(history) == 1


def test_probabilities_as_teacher_logits_warn():
    with pytest.warns(UserWarning, match="look like probabilities"):
        fit(teacher_logits=torch.softmax(LOGITS, 1))


def test_fit_temperature_says_when_it_hits_its_bound():
    with pytest.warns(UserWarning, match="fit_temperature: the best temperature is at the bound low=0.05"):
        t = fit_temperature(LOGITS, LOGITS.argmax(1))  # every prediction right: the NLL falls as T falls
    assert t == pytest.approx(0.05, rel=1e-3)


# --- nothing is lost -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lr", [1e4, 1e30])
def test_a_diverging_run_keeps_finite_weights_and_its_history(small, lr):
    train, _ = small
    model, history = mlp(), kd.History()
    kd.fit(model, train, epochs=1, device="cpu", verbose=False, history=history)  # one good epoch
    good = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="epoch 2.*back at its weights from the start of epoch 2") as err:
        kd.fit(model, train, epochs=2, lr=lr, optimizer="sgd", device="cpu", verbose=False, history=history)
    assert err.value.history is history and len(history) == 1
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(good, model.parameters(), strict=True))


def test_an_online_teacher_that_outputs_inf_is_named():
    class Broken(nn.Module):
        def forward(self, x):
            out = torch.zeros(len(x), 10)
            out[:, 3] = float("inf")
            return out

    with pytest.raises(FloatingPointError, match="teacher's logits on the last batch are NaN or infinite"):
        fit(teacher=Broken(), check_every=1, online=True)
    first = r"teacher: its logits are NaN or infinite for 64 training sample\(s\), the first being sample 0"
    with pytest.raises(ValueError, match=first):
        fit(teacher=Broken())  # run once, before the first step


def test_interrupt_at_the_first_batch_of_an_epoch_names_that_step(small, capsys):
    from test_train import Tripwire

    train, _ = small
    model = Tripwire(mlp(), at=32 + 1, action="interrupt")  # the first batch of epoch 2
    history = kd.fit(model, train, epochs=3, batch_size=64, device="cpu")
    assert history.interrupted and "Interrupted in epoch 2, step 1:" in capsys.readouterr().out
    again = kd.fit(mlp(), train, epochs=1, device="cpu", verbose=False, history=history)
    assert not again.interrupted and history.epoch == [1, 2]  # a clean continuation clears the flag


def test_a_saved_checkpoint_always_loads(tmp_path):
    history = fit()
    path = kd.save(mlp(), tmp_path / "m.pt", acc=np.float64(0.9), n=np.int64(3), classes=np.arange(3),
                   history=history, where=tmp_path, flags=(np.bool_(True), None), nested={"a": [np.float32(1)]})
    _, meta = kd.load(path)
    assert meta["acc"] == 0.9 and type(meta["acc"]) is float and meta["n"] == 3 and meta["classes"] == [0, 1, 2]
    assert meta["history"]["epoch"] == [1] and meta["where"] == str(tmp_path) and meta["flags"] == (True, None)
    assert meta["nested"] == {"a": [1.0]}


def test_misaligned_teacher_logits_warn(small):
    train, _ = small
    torch.manual_seed(0)
    teacher = kd.MLP(hidden=(16,))
    kd.fit(teacher, train, epochs=2, device="cpu", verbose=False)
    logits = kd.compute_logits(teacher, train)
    with pytest.warns(UserWarning, match="agrees with the labels on only"):
        kd.fit(mlp(), train, epochs=1, teacher_logits=logits.flip(0), device="cpu", verbose=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # aligned logits of a trained teacher: no warning
        kd.fit(mlp(), train, epochs=1, teacher_logits=logits, device="cpu", verbose=False)
