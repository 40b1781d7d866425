"""Datasets as in-memory tensors: Fashion-MNIST offline-first, MNIST and CIFAR-10 through torchvision.

Every loader returns ``(train, test)``: two :class:`torch.utils.data.TensorDataset` of float images ``N x C x H x W``
normalized with the *training* set's per-channel mean and std, and int64 labels. In-memory tensors keep the book's
experiments fast on a laptop CPU: :func:`kdtutor.train.fit` moves them to the device once and shuffles by index.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence) is looked up, in this order, in

1. the ``root`` argument,
2. the folder named by the ``KDTUTOR_DATA`` environment variable,
3. Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
4. a torchvision download into ``~/.cache/kdtutor`` (needs the internet).

A folder may hold the four ``*-ubyte.gz`` files (or the unpacked ``*-ubyte`` files), directly or in torchvision's
layout ``FashionMNIST/raw/``. The decoded bytes of each file are checked against their SHA-256, so a truncated or
corrupt file is an error, not a silently smaller dataset.

The book's convention: :func:`split` holds ``5,000`` of the 60,000 training images out for validation with seed 0
(:func:`book_split`). Choices are made on validation; the test set only reports.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Pixel statistics of the 60,000 training images scaled to [0, 1] (tests recompute the Fashion-MNIST ones).
FMNIST_MEAN, FMNIST_STD = 0.2860406, 0.3530242
MNIST_MEAN, MNIST_STD = 0.1306605, 0.3081078
CIFAR10_MEAN, CIFAR10_STD = (0.4913997, 0.4821584, 0.4465309), (0.2470322, 0.2434851, 0.2615878)

DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdtutor"
BOOK_N_VAL, BOOK_SPLIT_SEED = 5000, 0

# SHA-256 of each file's decoded (gunzipped) bytes. The Debian .gz files differ byte-wise from the ones torchvision
# downloads, but their contents are the same official Fashion-MNIST release.
FMNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


class DatasetNotFoundError(FileNotFoundError):
    """No usable copy of a dataset was found; the message lists what was tried and how to fix it."""


# --- reading IDX files -------------------------------------------------------------------------------------------


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not, into a uint8 array.

    The header is a magic number ``0x0000 08 D`` (unsigned bytes, D dimensions) followed by D big-endian int32
    sizes. With ``sha256`` the decoded bytes must hash to it. Any mismatch raises ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: cannot be read or decompressed ({err}); the file is truncated or corrupt") from err
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(f"{path}: contents do not match the expected SHA-256; the file is truncated or corrupt")
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_file(folder: Path, name: str) -> Path | None:
    for sub in ("", "FashionMNIST/raw"):
        for candidate in (folder / sub / f"{name}.gz", folder / sub / name):
            if candidate.is_file():
                return candidate
    return None


def _read_fmnist_folder(folder: Path) -> dict[str, np.ndarray] | None:
    """The four arrays from ``folder``; ``None`` if any file is missing; ``ValueError`` if any is corrupt."""
    paths = {name: _find_file(folder, name) for name in FMNIST_FILES}
    if any(p is None for p in paths.values()):
        return None
    return {name: read_idx(p, FMNIST_FILES[name]) for name, p in paths.items()}


def _download_fmnist(folder: Path) -> None:
    import torchvision

    for train in (True, False):
        torchvision.datasets.FashionMNIST(folder, train=train, download=True)


# --- tensors -----------------------------------------------------------------------------------------------------


def to_tensor_dataset(images, labels, mean, std) -> TensorDataset:
    """uint8 images (``N x H x W`` or ``N x H x W x C``) and labels -> normalized float ``N x C x H x W`` + int64.

    ``mean`` and ``std`` are floats or per-channel sequences of the [0, 1]-scaled training pixels.
    """
    x = images.detach().clone() if torch.is_tensor(images) else torch.from_numpy(np.array(images))
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        raise ValueError(f"images: expected uint8 N x H x W or N x H x W x C, got {x.dtype} of shape {tuple(x.shape)}")
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = (labels.detach().clone() if torch.is_tensor(labels) else torch.from_numpy(np.array(labels))).long()
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels: expected shape ({x.shape[0]},) to match the images, got {tuple(y.shape)}")
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    x = (x.float().div_(255) - mean) / std
    return TensorDataset(x.contiguous(), y)


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True):
    """Fashion-MNIST as ``(train, test)`` TensorDatasets: ``60000 x 1 x 28 x 28`` and ``10000 x 1 x 28 x 28``.

    Images are normalized with the training set's mean and std (:data:`FMNIST_MEAN`, :data:`FMNIST_STD`); labels
    index :data:`FASHION_CLASSES`. See the module docstring for where the files are looked up. With
    ``download=False`` the last step (the internet) is not tried.
    """
    tried: list[str] = []
    candidates = []
    if root is not None:
        candidates.append(("the root argument", Path(root)))
    if os.environ.get("KDTUTOR_DATA"):
        candidates.append(("$KDTUTOR_DATA", Path(os.environ["KDTUTOR_DATA"])))
    candidates.append(("Debian's dataset-fashion-mnist", DEBIAN_FMNIST_DIR))
    arrays = None
    for label, folder in candidates:
        arrays = _read_fmnist_folder(folder)
        if arrays is not None:
            break
        tried.append(f"{label}: {folder} (files not found)")
    if arrays is None and download:
        try:
            _download_fmnist(CACHE_DIR)
            arrays = _read_fmnist_folder(CACHE_DIR)
        except Exception as err:  # torchvision raises several kinds when offline
            tried.append(f"torchvision download into {CACHE_DIR} (failed: {type(err).__name__}: {err})")
    if arrays is None:
        raise DatasetNotFoundError(
            "Fashion-MNIST was not found. Tried:\n  - " + "\n  - ".join(tried) + "\n"
            "Fix it in one of two ways:\n"
            "  1. offline on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist\n"
            "  2. put the four *-ubyte.gz files in a folder and pass root=... or set KDTUTOR_DATA to it"
        )
    train = to_tensor_dataset(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"],
                              FMNIST_MEAN, FMNIST_STD)
    test = to_tensor_dataset(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"],
                             FMNIST_MEAN, FMNIST_STD)
    return train, test


def load_mnist(root: str | os.PathLike | None = None, download: bool = True):
    """MNIST through ``torchvision.datasets.MNIST`` as ``(train, test)`` TensorDatasets (needs the internet once)."""
    import torchvision

    root = Path(root) if root is not None else CACHE_DIR
    parts = [torchvision.datasets.MNIST(root, train=t, download=download) for t in (True, False)]
    return tuple(to_tensor_dataset(d.data, d.targets, MNIST_MEAN, MNIST_STD) for d in parts)


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True):
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` as ``(train, test)`` TensorDatasets of ``3 x 32 x 32``."""
    import torchvision

    root = Path(root) if root is not None else CACHE_DIR
    parts = [torchvision.datasets.CIFAR10(root, train=t, download=download) for t in (True, False)]
    return tuple(to_tensor_dataset(d.data, d.targets, CIFAR10_MEAN, CIFAR10_STD) for d in parts)


# --- splits and augmentation -------------------------------------------------------------------------------------


def split(dataset: Dataset, n_val: int, seed: int = 0):
    """Deterministically hold ``n_val`` random samples out: ``(train, val)``.

    The same ``(len(dataset), n_val, seed)`` always gives the same indices (a seeded ``torch.randperm``). A
    TensorDataset splits into TensorDatasets (so training keeps its fast path); any other dataset into Subsets.
    """
    n = len(dataset)
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 0 < n_val < n:
        raise ValueError(f"n_val: expected an int between 1 and {n - 1} (the dataset has {n} samples), got {n_val!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    if isinstance(dataset, TensorDataset):
        return (TensorDataset(*(t[train_idx] for t in dataset.tensors)),
                TensorDataset(*(t[val_idx] for t in dataset.tensors)))
    return Subset(dataset, train_idx.tolist()), Subset(dataset, val_idx.tolist())


def subset(dataset: Dataset, indices) -> Dataset:
    """The samples at ``indices``: a TensorDataset for a TensorDataset (fast path kept), else a ``Subset``.

    Index cached teacher logits with the same ``indices`` to keep them aligned.
    """
    idx = torch.as_tensor(indices, dtype=torch.int64)
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return Subset(dataset, idx.tolist())


def stratified_indices(labels: torch.Tensor, n_per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``n_per_class`` random samples of every class present in ``labels`` (seeded, deterministic).

    A scarce-label regime with balanced classes: ``subset(train, stratified_indices(y, 50, seed))``.
    """
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        if n_per_class > len(members) or n_per_class < 1:
            raise ValueError(f"n_per_class: expected 1 to {len(members)} (class {c} has {len(members)} samples), "
                             f"got {n_per_class}")
        chosen.append(members[torch.randperm(len(members), generator=g)[:n_per_class]])
    return torch.cat(chosen).sort().values


def without_classes(labels: torch.Tensor, classes) -> torch.Tensor:
    """Sorted indices of the samples whose label is *not* in ``classes`` (Hinton's omitted-class transfer set)."""
    labels = torch.as_tensor(labels)
    drop = torch.as_tensor(list(classes), dtype=labels.dtype)
    return (~torch.isin(labels, drop)).nonzero().flatten()


def book_split(train: Dataset):
    """The book's convention: ``split(train, 5000, seed=0)``."""
    return split(train, BOOK_N_VAL, BOOK_SPLIT_SEED)


class RandomShiftFlip:
    """On-device batch augmentation: shift each image by up to ``max_shift`` pixels and flip half horizontally.

    Works on a batch tensor ``B x C x H x W`` on any device (zero padding, then a random crop per image), so it
    runs inside :func:`kdtutor.train.fit` without DataLoader workers. Randomness comes from torch's global RNG,
    which ``fit(seed=...)`` seeds.
    """

    def __init__(self, max_shift: int = 2, flip: bool = True):
        if max_shift < 0:
            raise ValueError(f"max_shift: expected >= 0, got {max_shift}")
        self.max_shift, self.flip = max_shift, flip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        s = self.max_shift
        if s:
            padded = torch.nn.functional.pad(x, (s, s, s, s))
            dy = torch.randint(0, 2 * s + 1, (b, 1, 1), device=x.device)
            dx = torch.randint(0, 2 * s + 1, (b, 1, 1), device=x.device)
            rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(b, h, w)
            cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(b, h, w)
            batch = torch.arange(b, device=x.device).view(b, 1, 1).expand(b, h, w)
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            mask = torch.rand(b, device=x.device) < 0.5
            x = torch.where(mask.view(b, 1, 1, 1), x.flip(-1), x)
        return x

    def __repr__(self) -> str:
        return f"RandomShiftFlip(max_shift={self.max_shift}, flip={self.flip})"
