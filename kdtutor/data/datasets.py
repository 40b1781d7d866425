"""Loading datasets as in-memory tensors: Fashion-MNIST offline-first, MNIST and CIFAR-10 through torchvision.

Every loader returns ``(train, test)``: two :class:`torch.utils.data.TensorDataset` of float images ``N x C x H x W``
normalized with the *training* set's per-channel mean and std, and int64 labels. In-memory tensors keep the book's
experiments fast on a laptop CPU: :func:`~kdtutor.training.fit` moves them to the device once and shuffles there
(:class:`kdtutor.data.OnDevice`).

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence) is looked up, in this order, in

1. the ``root`` argument,
2. the folder named by the ``KDTUTOR_DATA`` environment variable,
3. Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
4. the download cache ``~/.cache/kdtutor`` (an earlier download),
5. a torchvision download into ``~/.cache/kdtutor`` (needs the internet).

A folder may hold the four ``*-ubyte.gz`` files (or the unpacked ``*-ubyte`` files), directly or in torchvision's
layout ``FashionMNIST/raw/``. The decoded bytes of each file are checked against their SHA-256, so a truncated or
corrupt file is an error, not a silently smaller dataset.

Shown images are un-normalized with :func:`~kdtutor.data.denormalize`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "FASHION_CLASSES", "FMNIST_MEAN", "FMNIST_STD", "MNIST_CLASSES",
    "MNIST_MEAN", "MNIST_STD", "DatasetNotFoundError", "denormalize", "load_cifar10", "load_fashion_mnist",
    "load_mnist", "locate_fashion_mnist", "read_idx", "to_tensor_dataset",
]

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
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: cannot be read or decompressed ({err}); the file is truncated or corrupt") from err
    digest = hashlib.sha256(raw).hexdigest() if sha256 is not None else None
    if digest != sha256:
        raise ValueError(f"{path}: contents do not match the expected SHA-256 (decoded bytes hash to {digest}, "
                         f"expected {sha256}); the file is truncated or corrupt")
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


def locate_fashion_mnist(root: str | os.PathLike | None = None):
    """Where Fashion-MNIST is: ``(folder, arrays)`` of the first complete copy, else ``(None, what was tried)``.

    Looks, in order, in ``root``, ``$KDTUTOR_DATA``, Debian's folder and the download cache (``~/.cache/kdtutor``),
    never the internet. A corrupt file raises ``ValueError`` naming it.
    """
    candidates = []
    if root is not None:
        candidates.append(("the root argument", Path(root)))
    if os.environ.get("KDTUTOR_DATA"):
        candidates.append(("$KDTUTOR_DATA", Path(os.environ["KDTUTOR_DATA"])))
    candidates += [("Debian's dataset-fashion-mnist", DEBIAN_FMNIST_DIR), ("the download cache", CACHE_DIR)]
    tried = []
    for label, folder in candidates:
        arrays = _read_fmnist_folder(folder)
        if arrays is not None:
            return folder, arrays
        tried.append(f"{label}: {folder} (files not found)")
    return None, tried


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True):
    """Fashion-MNIST as ``(train, test)`` TensorDatasets: ``60000 x 1 x 28 x 28`` and ``10000 x 1 x 28 x 28``.

    Images are normalized with the training set's mean and std (:data:`FMNIST_MEAN`, :data:`FMNIST_STD`); labels
    index :data:`FASHION_CLASSES`. See the module docstring for where the files are looked up
    (:func:`locate_fashion_mnist`). With ``download=False`` the last step (the internet) is not tried.
    """
    folder, found = locate_fashion_mnist(root)
    arrays = found if folder is not None else None
    tried = [] if folder is not None else found
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


def denormalize(images: torch.Tensor, mean=FMNIST_MEAN, std=FMNIST_STD) -> torch.Tensor:
    """Undo the normalization, ``images * std + mean`` per channel, back to [0, 1] pixels (for showing images)."""
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device)
    if mean.ndim:  # per channel: broadcast over C x H x W
        mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    return images * std + mean
