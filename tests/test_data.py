import gzip
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import write_idx
from torch.utils.data import Subset, TensorDataset

import kdtutor as kd
from kdtutor.data import datasets as kdata

FILES = list(kdata.FMNIST_FILES)


REAL_DIRS = (os.environ.get("KDTUTOR_DATA"), kdata.DEBIAN_FMNIST_DIR)  # before any test patches them


def real_file(name):
    """Where the real file is on this machine (KDTUTOR_DATA or Debian's folder, as the fmnist fixture found it)."""
    for folder in REAL_DIRS:
        if folder and (path := kdata._find_file(kdata.Path(folder), name)):
            return path
    raise FileNotFoundError(name)


# --- IDX reading --------------------------------------------------------------------------------------------------

def test_read_idx_roundtrip_plain_and_gzipped(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        assert np.array_equal(kdata.read_idx(write_idx(tmp_path / name, a)), a)


def test_read_idx_rejects_bad_files(tmp_path):
    a = np.zeros((5, 2, 2), dtype=np.uint8)
    p = write_idx(tmp_path / "x-ubyte", a)
    p.write_bytes(p.read_bytes()[:-3])  # truncated
    with pytest.raises(ValueError, match="header says shape"):
        kdata.read_idx(p)
    p.write_bytes(b"\x12\x34" + b"\x00" * 40)
    with pytest.raises(ValueError, match="magic"):
        kdata.read_idx(p)
    g = write_idx(tmp_path / "y-ubyte.gz", a)
    g.write_bytes(g.read_bytes()[:-8])  # truncated gzip stream
    with pytest.raises(ValueError, match="truncated or corrupt"):
        kdata.read_idx(g)
    z = write_idx(tmp_path / "z-ubyte", a)
    actual = hashlib.sha256(z.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"SHA-256 \\(decoded bytes hash to {actual}, expected {'0' * 64}\\)"):
        kdata.read_idx(z, sha256="0" * 64)  # both digests named: which file, and how it differs


# --- Fashion-MNIST lookup -----------------------------------------------------------------------------------------

@pytest.fixture
def gz_folder(tmp_path_factory, fmnist):
    """A folder with links to the four real .gz files (found where the fmnist fixture found them)."""
    folder = tmp_path_factory.mktemp("gz")
    for name in FILES:
        (folder / f"{name}.gz").symlink_to(real_file(name))
    return folder


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No environment variable, no Debian folder, no network: every lookup step fails."""
    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    monkeypatch.setattr(kdata, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(kdata, "CACHE_DIR", tmp_path / "cache")

    def offline(folder):
        raise OSError("network unreachable")
    monkeypatch.setattr(kdata, "_download_fmnist", offline)
    return tmp_path


def test_fashion_mnist_contents(fmnist):
    train, test = fmnist
    assert isinstance(train, TensorDataset) and isinstance(test, TensorDataset)
    (x, y), (xt, yt) = train.tensors, test.tensors
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the official order
    assert torch.bincount(y).tolist() == [6000] * 10 and torch.bincount(yt).tolist() == [1000] * 10
    assert len(kd.FASHION_CLASSES) == 10
    # the exported constants are the training set's statistics: normalized data has mean 0, std 1
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-5
    pixels = x * kd.FMNIST_STD + kd.FMNIST_MEAN
    assert torch.allclose(pixels.min(), torch.tensor(0.0), atol=1e-5)
    assert torch.allclose(pixels.max(), torch.tensor(1.0), atol=1e-5)


def test_root_with_gz_files_wins_over_environment(gz_folder, nowhere, monkeypatch):
    monkeypatch.setenv("KDTUTOR_DATA", str(nowhere / "empty"))
    train, test = kd.load_fashion_mnist(root=gz_folder)
    assert len(train) == 60000 and len(test) == 10000


def _decoded(path):
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def test_environment_variable_and_torchvision_layout(fmnist, nowhere, monkeypatch):
    raw = nowhere / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:  # torchvision's layout holds the unpacked files
        (raw / name).write_bytes(_decoded(real_file(name)))
    monkeypatch.setenv("KDTUTOR_DATA", str(nowhere / "tv"))
    train, _ = kd.load_fashion_mnist()
    assert torch.equal(train.tensors[1], fmnist[0].tensors[1])


def test_debian_folder_is_used_when_nothing_else_is_given(gz_folder, nowhere, monkeypatch):
    monkeypatch.setattr(kdata, "DEBIAN_FMNIST_DIR", gz_folder)
    assert len(kd.load_fashion_mnist(download=False)[1]) == 10000


def test_corrupt_file_is_an_error(gz_folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(gz_folder, bad, symlinks=False)
    labels = bad / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: same size, valid header
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="t10k-labels.*SHA-256"):
        kd.load_fashion_mnist(root=bad)


def test_nothing_found_lists_what_was_tried_and_the_fixes(nowhere):
    with pytest.raises(kd.DatasetNotFoundError) as err:
        kd.load_fashion_mnist(root=nowhere / "mine")
    msg = str(err.value)
    for expected in ("the root argument", "no-debian", "download", "network unreachable",
                     "apt-get install dataset-fashion-mnist", "KDTUTOR_DATA"):
        assert expected in msg


def test_cli_reports_missing_data(nowhere, capsys):
    from kdtutor.__main__ import main

    assert main(["data", "--no-download"]) == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().out


# --- online loaders: kdtutor's side, on small fake data -----------------------------------------------------------

def test_load_mnist_reads_torchvision_layout(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    train, test = kd.load_mnist(root=tmp_path, download=False)
    assert train.tensors[0].shape == (12, 1, 28, 28) and test.tensors[1].shape == (5,)
    img = kdata.read_idx(raw / "train-images-idx3-ubyte")[3]
    expected = (torch.from_numpy(img.copy()).float() / 255 - kdata.MNIST_MEAN) / kdata.MNIST_STD
    assert torch.allclose(train.tensors[0][3, 0], expected)


def test_load_cifar10_converts_torchvision_arrays(monkeypatch):
    """torchvision checks CIFAR-10's MD5s, so fake files cannot pass it: test only kdtutor's conversion."""
    import torchvision

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            n = 6 if train else 4
            self.data = np.full((n, 32, 32, 3), [0, 128, 255], dtype=np.uint8)
            self.targets = list(range(n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    train, test = kd.load_cifar10(root="unused")
    x = train.tensors[0]
    assert x.shape == (6, 3, 32, 32) and len(test) == 4
    for c, v in enumerate((0, 128, 255)):
        expected = (v / 255 - kdata.CIFAR10_MEAN[c]) / kdata.CIFAR10_STD[c]
        assert torch.allclose(x[:, c], torch.tensor(expected, dtype=torch.float32))


def test_to_tensor_dataset_rejects_bad_input():
    with pytest.raises(ValueError, match="images"):
        kdata.to_tensor_dataset(np.zeros((2, 3, 3), dtype=np.float32), [0, 1], 0.5, 0.5)
    with pytest.raises(ValueError, match="labels"):
        kdata.to_tensor_dataset(np.zeros((2, 3, 3), dtype=np.uint8), [0, 1, 2], 0.5, 0.5)


# --- split and augmentation ---------------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_complete():
    ds = TensorDataset(torch.arange(100).float().unsqueeze(1), torch.arange(100))
    tr, va = kd.split(ds, 20, seed=0)
    tr2, va2 = kd.split(ds, 20, seed=0)
    assert torch.equal(va.tensors[1], va2.tensors[1]) and torch.equal(tr.tensors[1], tr2.tensors[1])
    ids = set(tr.tensors[1].tolist()) | set(va.tensors[1].tolist())
    assert len(va) == 20 and len(tr) == 80 and ids == set(range(100))
    assert not torch.equal(kd.split(ds, 20, seed=1)[1].tensors[1], va.tensors[1])


def test_split_of_other_datasets_gives_subsets():
    ds = list(zip(range(10), range(10), strict=True))
    tr, va = kd.split(ds, 3, seed=0)
    assert isinstance(tr, Subset) and sorted(tr.indices + va.indices) == list(range(10))


@pytest.mark.parametrize("n_val", [0, 100, -1, 2.5, True])
def test_split_rejects_bad_n_val(n_val):
    ds = TensorDataset(torch.zeros(100, 1), torch.zeros(100))
    with pytest.raises(ValueError, match="n_val"):
        kd.split(ds, n_val, seed=0)


def test_book_split(fmnist):
    train, val = kd.book_split(fmnist[0])
    assert len(train) == 55000 and len(val) == 5000
    # golden: the first validation labels of the book's split never change
    assert val.tensors[1][:8].tolist() == GOLDEN_VAL_LABELS


GOLDEN_VAL_LABELS = [0, 3, 3, 3, 1, 7, 8, 9]


def test_random_shift_flip():
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 4, 3] = 1.0
    assert torch.equal(kd.RandomShiftFlip(0, flip=False)(x), x)
    torch.manual_seed(0)
    out = kd.RandomShiftFlip(max_shift=2, flip=False)(x)
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) == 1)  # one pixel, moved, never lost here
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 8 - 4, pos % 8 - 3
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2 and len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 5
    flipped = kd.RandomShiftFlip(0, flip=True)(x)
    n_flipped = (flipped[:, 0, 4, 8 - 1 - 3] == 1).sum().item()
    assert 10 < n_flipped < 54
    with pytest.raises(ValueError, match="max_shift"):
        kd.RandomShiftFlip(-1)
