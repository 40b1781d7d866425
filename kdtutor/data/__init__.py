"""Data: datasets as in-memory tensors, splits, on-device augmentation, and batches that stay on the device.

Knows nothing of models or training. Modules: :mod:`~kdtutor.data.datasets` (loading Fashion-MNIST, MNIST,
CIFAR-10), :mod:`~kdtutor.data.splits`, :mod:`~kdtutor.data.augment`, :mod:`~kdtutor.data.device`.
"""

from kdtutor.data.augment import RandomShiftFlip
from kdtutor.data.datasets import (
    CACHE_DIR,
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DEBIAN_FMNIST_DIR,
    FASHION_CLASSES,
    FMNIST_FILES,
    FMNIST_MEAN,
    FMNIST_STD,
    MNIST_CLASSES,
    MNIST_MEAN,
    MNIST_STD,
    DatasetNotFoundError,
    denormalize,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    locate_fashion_mnist,
    read_idx,
    to_tensor_dataset,
)
from kdtutor.data.device import Batch, OnDevice, Stream, move, nonempty
from kdtutor.data.splits import (
    BOOK_N_VAL,
    BOOK_SPLIT_SEED,
    book_split,
    split,
    stratified_indices,
    subset,
    without_classes,
)

__all__ = [
    "RandomShiftFlip",
    "CACHE_DIR", "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "DEBIAN_FMNIST_DIR", "FMNIST_FILES",
    "FASHION_CLASSES", "FMNIST_MEAN", "FMNIST_STD", "MNIST_CLASSES",
    "MNIST_MEAN", "MNIST_STD", "DatasetNotFoundError", "denormalize", "load_cifar10", "load_fashion_mnist",
    "load_mnist", "locate_fashion_mnist", "read_idx", "to_tensor_dataset",
    "Batch", "OnDevice", "Stream", "move", "nonempty",
    "BOOK_N_VAL", "BOOK_SPLIT_SEED", "book_split", "split", "stratified_indices", "subset", "without_classes",
]
