"""Data that stays on the device: moved once, shuffled there, sliced per step (nothing crosses the bus per step).

:class:`OnDevice` holds a dataset's tensors on the training device. A :class:`~torch.utils.data.TensorDataset` —
what every loader of :mod:`kdtutor.data` returns — and a ``Subset`` of one are moved with one copy per tensor;
:func:`~kdtutor.data.move` is the only place where that copy happens (the tests count its calls). Any other map-style
dataset (e.g. a torchvision dataset with per-sample random transforms) is not copied: its samples are read and
stacked batch by batch every epoch, so its transforms stay random.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from kdtutor import checks

__all__ = ["Batch", "OnDevice", "Stream", "move", "nonempty"]


class Batch(NamedTuple):
    """One training step's inputs: images ``x``, labels ``y`` and the samples' indices ``idx`` in the dataset (None for
    a :class:`Stream`, whose batches are drawn afresh)."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor | None


def move(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy ``tensor`` to ``device`` (a no-op if it is already there)."""
    return tensor.to(device)


def _tensors(data: Dataset) -> tuple[torch.Tensor, ...] | None:
    """The tensors of a TensorDataset, or of a (nested) Subset of one, gathered on the host; else None."""
    if isinstance(data, TensorDataset):
        return data.tensors
    if isinstance(data, Subset):
        inner = _tensors(data.dataset)
        if inner is not None:
            idx = torch.as_tensor(data.indices, dtype=torch.int64)
            return tuple(t[idx] for t in inner)
    return None


def _check_sample(data: Dataset) -> None:
    """A map-style dataset read sample by sample must give (tensor or array, integer label) pairs."""
    if len(data) == 0:
        return
    sample = data[0]
    if not isinstance(sample, (tuple, list)) or len(sample) < 2:
        raise TypeError(f"data: expected samples that are (input, label) pairs, got {type(sample).__name__}")
    x, y = sample[0], sample[1]
    if not (torch.is_tensor(x) or hasattr(x, "__array__") and not hasattr(x, "getpixel")):
        raise TypeError(f"data: expected each input to be a tensor or array, got {type(x).__module__}."
                        f"{type(x).__name__}; give the dataset a transform such as torchvision's ToTensor(), or use "
                        "kdtutor's loaders, which return tensors")
    if isinstance(y, float) or torch.is_tensor(y) and y.is_floating_point():
        raise TypeError(f"data: expected integer class labels, got {y!r}")


def nonempty(name: str, data):
    """``data`` if it is a non-empty map-style dataset (or an :class:`OnDevice`); else an error naming ``name``."""
    if isinstance(data, OnDevice):
        return data
    if isinstance(data, DataLoader):
        raise TypeError(f"{name}: expected a dataset (e.g. a TensorDataset), got a DataLoader; pass its dataset "
                        f"({name}=loader.dataset) — kdtutor batches and shuffles itself")
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{name}: expected a map-style dataset such as a TensorDataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name}: the dataset is empty")
    return data


class OnDevice:
    """A dataset of ``(x, y)`` pairs ready for a device: ``batches()`` yields :class:`Batch` objects there.

    ``OnDevice(train, device)`` copies an in-memory dataset once; iterate with ``batches(batch_size, generator)``
    (shuffled with a device-side permutation when a generator is given, in order otherwise). Passing an
    ``OnDevice`` where a dataset is expected reuses it without another copy. ``channels_last=True`` stores images
    in the channels-last memory format (see :class:`~kdtutor.training.TrainConfig`).
    """

    def __init__(self, data: Dataset, device: torch.device | str, channels_last: bool = False):
        self.device = torch.device(device)
        self.data = data
        if isinstance(data, OnDevice):
            self.data, self.tensors = data.data, data.tensors
            if data.device != self.device:
                self.tensors = tuple(move(t, self.device) for t in data.tensors)
        else:
            tensors = _tensors(data)
            if tensors is None:
                _check_sample(data)
            elif len(tensors) < 2 or any(len(t) != len(tensors[0]) for t in tensors[:2]):
                raise ValueError(f"data: expected a TensorDataset of (inputs, labels) with one label per input, got "
                                 f"tensors of shapes {[tuple(t.shape) for t in tensors]}")
            self.tensors = None if tensors is None else tuple(move(t, self.device) for t in tensors[:2])
        if channels_last and self.tensors is not None and self.tensors[0].ndim == 4:
            x, y = self.tensors  # images stored N x H x W x C in memory (the shape stays N x C x H x W)
            self.tensors = (x.contiguous(memory_format=torch.channels_last), y)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def labels(self) -> torch.Tensor:
        """All labels as a tensor (on the device for in-memory data, on the host otherwise)."""
        if self.tensors is not None:
            return self.tensors[1]
        return torch.as_tensor([int(self.data[i][1]) for i in range(len(self.data))], dtype=torch.int64)

    def generator(self, seed: int) -> torch.Generator:
        """A seeded generator for :meth:`batches`: on the device for in-memory data, on the host otherwise."""
        return torch.Generator(self.device if self.tensors is not None else "cpu").manual_seed(seed)

    def steps(self, batch_size: int, world_size: int = 1) -> int:
        """The number of batches in one pass of :meth:`batches`."""
        return math.ceil(len(self) / (batch_size * world_size))

    def batches(self, batch_size: int, generator: torch.Generator | None = None, drop_single: bool = False,
                rank: int = 0, world_size: int = 1):
        """Yield :class:`Batch` objects on the device, shuffled by ``generator`` (from :meth:`generator`).

        ``drop_single`` skips a final batch of one sample when shuffling (BatchNorm cannot train on it).

        **Shards.** With ``world_size`` processes (distributed training), every process draws the same order (the
        same seed) and cuts it into *global* batches of ``batch_size * world_size`` samples; process ``rank`` takes
        its part of each (``tensor_split``: parts differ by at most one sample). So every process takes the same
        number of steps, the parts are disjoint, and together they cover the epoch — except that, with
        ``drop_single``, a last global batch too small to give every process two samples is skipped. Sample
        indices stay global (they look up cached teacher logits).
        """
        n = len(self)
        if self.tensors is None:  # the order a DataLoader over the indices draws (as kdtutor always did)
            loader = DataLoader(range(n), batch_size=n, shuffle=generator is not None, generator=generator)
            order = torch.cat(list(loader))
        elif generator is not None:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        step = batch_size * world_size
        for start in range(0, n, step):
            idx = order[start:start + step]
            if drop_single and len(idx) < 2 * world_size and n > 2:
                break
            if world_size > 1:
                idx = idx.tensor_split(world_size)[rank]
            yield self._fetch(idx)

    def _fetch(self, idx: torch.Tensor) -> Batch:
        if self.tensors is not None:
            x_all, y_all = self.tensors
            return Batch(x_all[idx], y_all[idx], idx)
        samples = [self.data[int(i)] for i in idx]
        x = torch.stack([torch.as_tensor(s[0]) for s in samples]).to(self.device)
        y = torch.as_tensor([int(s[1]) for s in samples], dtype=torch.int64, device=self.device)
        return Batch(x, y, idx.to(self.device))


class Stream:
    """A training set drawn afresh at every step, for :func:`~kdtutor.training.fit`: each pass yields ``steps``
    batches, each ``batches(generator)`` — e.g. random windows of a text (:func:`kdtutor.lm.windows`).

    ``batches`` returns ids of shape ``(B, L + 1)`` on ``device``; a batch is then the inputs ``x = ids[:, :-1]`` and
    the next ids ``y = ids[:, 1:]`` (a language model's targets), with no sample indices. The generator is a seeded
    CPU generator (``fit``'s ``seed``), so a seed draws the same batches on any device. A stream has no fixed
    samples: nothing can be cached per sample, augmented or checked in advance (fit refuses cached teacher
    outputs, cached features, a ``labelled`` mask and ``augment`` with it), and it trains on one process.
    """

    tensors = None  # no stored samples
    labels = None   # none known in advance: fit checks each batch's targets against the outputs on the first

    def __init__(self, batches, steps: int, device: torch.device | str = "cpu"):
        if not callable(batches) or isinstance(batches, torch.Tensor):
            raise TypeError(f"batches: expected a function of a torch.Generator returning (B, L + 1) ids, e.g. "
                            f"lambda g: windows(ids, 32, 128, g), got {type(batches).__name__}")
        self.draw, self.device, self.n = batches, torch.device(device), checks.positive_int("steps", steps)

    def __len__(self) -> int:
        return self.n

    def steps(self, batch_size: int | None = None, world_size: int = 1) -> int:
        """The number of batches in one pass (``batch_size`` is the draw's business)."""
        if world_size > 1:
            raise ValueError("train: a Stream trains on one process (its batches are drawn, not sharded)")
        return self.n

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def batches(self, batch_size: int | None = None, generator: torch.Generator | None = None,
                drop_single: bool = False, rank: int = 0, world_size: int = 1):
        for _ in range(self.steps(batch_size, world_size)):
            ids = self.draw(generator)
            if not torch.is_tensor(ids) or ids.ndim != 2 or ids.shape[1] < 2 or ids.is_floating_point():
                raise ValueError(f"batches: expected the function to return integer ids of shape (B, L + 1), got "
                                 f"{getattr(ids, 'dtype', type(ids).__name__)} of shape "
                                 f"{tuple(getattr(ids, 'shape', ()))}")
            yield Batch(ids[:, :-1], ids[:, 1:], None)
