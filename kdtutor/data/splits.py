"""Splits and subsets: validation hold-outs, scarce-label subsets, transfer sets without some classes.

The book's convention: :func:`~kdtutor.data.split` holds ``5,000`` of the 60,000 training images out for validation
with seed 0 (:func:`~kdtutor.data.book_split`). Choices are made on validation; the test set only reports.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = ["BOOK_N_VAL", "BOOK_SPLIT_SEED", "book_split", "split", "stratified_indices", "subset", "without_classes"]

BOOK_N_VAL, BOOK_SPLIT_SEED = 5000, 0


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
    """The samples at ``indices`` (integers, or a boolean mask such as ``labels != 9``): a TensorDataset for a
    TensorDataset (fast path kept), else a ``Subset``.

    Index cached teacher logits with the same ``indices`` to keep them aligned.
    """
    idx = torch.as_tensor(np.asarray(indices) if not torch.is_tensor(indices) else indices)
    if idx.numel() == 0 and idx.ndim == 1:
        idx = idx.long()  # an empty list reads as float64: an empty selection, not a mistake
    if idx.dtype == torch.bool:  # a mask: keep the samples where it is True
        if idx.shape != (len(dataset),):
            raise ValueError(f"indices: a boolean mask needs one entry per sample ({len(dataset)}), got shape "
                             f"{tuple(idx.shape)}")
        idx = idx.nonzero().flatten()
    if idx.is_floating_point() or idx.is_complex() or idx.ndim != 1:
        raise ValueError(f"indices: expected a 1-D sequence of integer indices or a boolean mask, got {idx.dtype} of "
                         f"shape {tuple(idx.shape)}")
    idx = idx.long()
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return Subset(dataset, idx.tolist())


def stratified_indices(labels: torch.Tensor, n_per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``n_per_class`` random samples of every class present in ``labels`` (seeded, deterministic).

    A scarce-label regime with balanced classes: ``subset(train, stratified_indices(y, 50, seed))``.
    """
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool or not len(labels):
        raise ValueError(f"labels: expected a non-empty 1-D tensor of integer class labels, got {labels.dtype} of "
                         f"shape {tuple(labels.shape)}")
    classes, counts = labels.unique(return_counts=True)
    smallest = int(counts.argmin())
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or not 1 <= n_per_class <= counts.min():
        raise ValueError(f"n_per_class: expected an int from 1 to {int(counts.min())} (the smallest class, "
                         f"{int(classes[smallest])}, has {int(counts.min())} samples), got {n_per_class!r}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes.tolist():
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:n_per_class]])
    return torch.cat(chosen).sort().values


def without_classes(labels: torch.Tensor, classes) -> torch.Tensor:
    """Sorted indices of the samples whose label is *not* in ``classes`` (Hinton's omitted-class transfer set).

    ``labels`` is the label tensor (``train.tensors[1]``), not the dataset; ``classes`` a sequence of class labels
    such as ``[8, 9]`` (a single int is one class). Select the samples with ``subset(train, indices)``.
    """
    if isinstance(labels, Dataset):
        raise TypeError(f"labels: expected a 1-D tensor of integer class labels (a dataset's labels, e.g. "
                        f"train.tensors[1]), got {type(labels).__name__}; pass its labels, not the dataset")
    labels = _integers(labels, "labels", "a 1-D tensor of integer class labels (e.g. train.tensors[1])")
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, (bool, np.bool_)):
        classes = [int(classes)]
    if isinstance(classes, (Dataset, str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes: expected a sequence of class labels such as [8, 9], got "
                        f"{type(classes).__name__}")
    drop = _integers(list(classes) if not torch.is_tensor(classes) else classes.flatten(), "classes",
                     "a sequence of integer class labels such as [8, 9]")
    return (~torch.isin(labels, drop.to(labels.dtype))).nonzero().flatten()


def _integers(values, name: str, expected: str) -> torch.Tensor:
    """``values`` as a 1-D integer tensor; ``TypeError`` for what is not an array of numbers, ``ValueError`` for
    non-integer numbers or another shape."""
    try:
        tensor = values if torch.is_tensor(values) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name}: expected {expected}, got {type(values).__name__}") from err
    if tensor.numel() == 0 and tensor.ndim == 1:
        return tensor.long()  # an empty list reads as float64: nothing to drop
    if tensor.ndim != 1 or tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name}: expected {expected}, got {tensor.dtype} of shape {tuple(tensor.shape)}")
    return tensor


def book_split(train: Dataset):
    """The book's convention: ``split(train, 5000, seed=0)``."""
    return split(train, BOOK_N_VAL, BOOK_SPLIT_SEED)
