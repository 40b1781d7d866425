"""The book's models: MLPs, a small CNN student, the CNN teacher, and the teacher that ships with the package.

Every model maps a batch ``B x C x H x W`` of images to ``B x num_classes`` logits, and keeps the keyword
arguments it was built with in ``model.config`` so that :func:`kdtutor.checkpoint.load` can rebuild it.

Intermediate features are reachable by name (``model.features[3]``, ``model.classifier[0]``, ...): see
:func:`record_activations`, which wraps PyTorch forward hooks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"
TEACHER_NAME = "teacher_fmnist"


class MLP(nn.Module):
    """Fully connected net: flatten, then ``Linear -> ReLU -> Dropout`` for each hidden size, then a linear head.

    ``MLP(hidden=(1200, 1200), dropout=0.0)`` is Hinton et al.'s (2015) unregularized MNIST net;
    ``MLP(hidden=(128,))`` a tiny student.
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (128,), num_classes: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        hidden = tuple(int(h) for h in hidden)
        self.config = dict(in_features=in_features, hidden=hidden, num_classes=num_classes, dropout=dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CNN(nn.Module):
    """``[Conv3x3 -> (BatchNorm) -> ReLU -> MaxPool2]`` per entry of ``channels``, then ``[FC hidden -> ReLU]``, FC.

    ``channels=(32, 64), hidden=128, batch_norm=True`` is the book's teacher (about 0.42M parameters);
    ``channels=(8, 16), hidden=0`` a small student (about 9k parameters).
    """

    def __init__(self, channels: Sequence[int] = (32, 64), hidden: int = 128, num_classes: int = 10,
                 in_channels: int = 1, image_size: int = 28, batch_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("channels: expected at least one convolution width")
        if image_size % 2 ** len(channels):
            raise ValueError(f"image_size: {image_size} is not divisible by 2**{len(channels)} (one pool per conv)")
        self.config = dict(channels=channels, hidden=hidden, num_classes=num_classes, in_channels=in_channels,
                           image_size=image_size, batch_norm=batch_norm, dropout=dropout)
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        flat = c_in * (image_size // 2 ** len(channels)) ** 2
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Linear(flat, hidden), nn.ReLU()]
            if dropout:
                head.append(nn.Dropout(dropout))
            flat = hidden
        head.append(nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def teacher_cnn(num_classes: int = 10) -> CNN:
    """The book's teacher architecture: 32/64-channel CNN with BatchNorm and a 128-unit hidden layer."""
    return CNN(channels=(32, 64), hidden=128, num_classes=num_classes, batch_norm=True)


def student_cnn(num_classes: int = 10) -> CNN:
    """The book's small CNN student: 8/16 channels, no hidden layer, no BatchNorm (about 50x fewer parameters)."""
    return CNN(channels=(8, 16), hidden=0, num_classes=num_classes, batch_norm=False)


ARCHITECTURES = {"MLP": MLP, "CNN": CNN}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements, not tensors); buffers such as BatchNorm statistics are not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def record_activations(model: nn.Module, names: Iterable[str]):
    """Context manager: ``{name: output}`` of the named submodules, filled in by every forward pass inside it.

    Names are those of ``model.named_modules()``, e.g. ``"features.2"``. Uses forward hooks, removed on exit::

        with record_activations(teacher, ["features.3", "classifier.2"]) as acts:
            teacher(x)
        acts["features.3"].shape   # B x 32 x 14 x 14
    """
    modules = dict(model.named_modules())
    names = list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"names: {unknown} are not submodules of the model; choose from {list(modules)[1:]}")
    acts: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, out)) for n in names]
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


def teacher_record() -> dict:
    """The shipped teacher's record: recipe, seed, epochs, data split, SHA-256 of the weights, accuracies, time."""
    return json.loads((WEIGHTS_DIR / f"{TEACHER_NAME}.json").read_text())


def pretrained_teacher(device: str | torch.device | None = None) -> CNN:
    """The shipped Fashion-MNIST teacher (:func:`teacher_cnn`), weights verified by SHA-256, in eval mode.

    Retrain it from scratch with ``python scripts/train_teacher.py``; the record beside the weights
    (:func:`teacher_record`) says how it was trained and what test accuracy it reached.
    """
    from kdtutor.checkpoint import load

    path = WEIGHTS_DIR / f"{TEACHER_NAME}.pt"
    record = teacher_record()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != record["sha256"]:
        raise ValueError(f"{path}: SHA-256 {digest} does not match the record's {record['sha256']}; "
                         "reinstall kdtutor or retrain with scripts/train_teacher.py")
    model, _ = load(path, map_location="cpu")
    return model.to(device or "cpu").eval()
