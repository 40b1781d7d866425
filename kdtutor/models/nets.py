"""The book's architectures: MLPs, a small CNN student and the CNN teacher.

Every model maps a batch ``B x C x H x W`` of images to ``B x num_classes`` logits, and keeps the keyword
arguments it was built with in ``model.config``; registered with :func:`kdtutor.checkpoint.architecture`, it can
be rebuilt by :func:`kdtutor.checkpoint.load` from the file alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdtutor.checkpoint import architecture

__all__ = ["CNN", "MLP", "count_params", "student_cnn", "teacher_cnn"]


@architecture
class MLP(nn.Module):
    """Fully connected net: flatten, then ``Linear -> ReLU -> Dropout`` for each hidden size, then a linear head.

    Hinton et al. (2015, §3) used two MNIST nets of this kind. Their regularized net, the teacher, had two hidden
    layers of 1200 units, was strongly regularized with dropout and weight constraints, and saw inputs jittered by
    up to two pixels (67 test errors): the size of ``MLP(hidden=(1200, 1200), dropout=0.5)``, trained with
    ``augment=RandomShiftFlip(flip=False)`` for the jitter (no weight constraints here). Their unregularized net had
    two hidden layers of 800 units (146 errors): ``MLP(hidden=(800, 800))``. ``MLP(hidden=(128,))`` is the book's
    tiny student.
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


@architecture
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




def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements, not tensors); buffers such as BatchNorm statistics are not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
