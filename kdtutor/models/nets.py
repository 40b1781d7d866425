"""The book's architectures: MLPs, a small CNN student, the CNN teacher, and the article's VGG-style teacher.

Every model maps a batch ``B x C x H x W`` of images to ``B x num_classes`` logits, and keeps the keyword
arguments it was built with in ``model.config``; registered with :func:`kdtutor.checkpoint.architecture`, it can
be rebuilt by :func:`kdtutor.checkpoint.load` from the file alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdtutor.checkpoint import architecture

__all__ = ["CNN", "MLP", "VGG12", "cost_on_meta", "count_params", "student_cnn", "teacher_cnn", "vgg12", "vgg12_fmnist"]


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


STAGES = (64, 128, 256, 512, 1024, 2048)  # channels of each VGG12 stage's two convolutions, at width 1
POOLED = (True, True, True, False, False, False)  # a 2x2 max-pool after the stage: 32 -> 16 -> 8 -> 4


@architecture
class VGG12(nn.Module):
    """Twelve 3x3 convolutions in six stages of two, then two fully connected layers: a VGG-style classifier.

    The teacher of the article the book started from (see the appendix "The VGG-style example, done right"), made to
    run: each convolution (padding 1) is followed by BatchNorm (``batch_norm=True``, the default) and a ReLU; stage
    ``s`` has ``STAGES[s] * width`` channels (64 to 2048 at ``width=1``); a 2x2 max-pool (ceil mode) follows the first
    three stages, so 32x32 images reach 4x4, and 28x28 ones too (28 -> 14 -> 7 -> 4); an adaptive average pool to 4x4
    then accepts any image size. The head is ``FC(16 * C_6 -> 512 * width) -> ReLU -> (Dropout) -> FC(-> classes)``.

    At ``width=1`` on 3x32x32 images it has about 92M parameters and needs about 1.4G multiply-accumulates per image
    (:func:`cost_on_meta` counts both without allocating the weights). Stacks of small 3x3 convolutions are the design
    of Simonyan & Zisserman (2015), "Very deep convolutional networks for large-scale image recognition"; this depth
    and these widths are the article's, not one of theirs.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, batch_norm: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
            raise ValueError(f"width: expected a multiplier in (0, 4], got {width!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.config = dict(in_channels=in_channels, num_classes=num_classes, width=float(width),
                           batch_norm=batch_norm, dropout=dropout)
        layers: list[nn.Module] = []
        c_in = in_channels
        for channels, pooled in zip(STAGES, POOLED, strict=True):
            c = max(1, round(channels * width))
            for _ in range(2):
                layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=not batch_norm))
                layers += [nn.BatchNorm2d(c), nn.ReLU()] if batch_norm else [nn.ReLU()]
                c_in = c
            if pooled:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        layers.append(nn.AdaptiveAvgPool2d(4))
        self.features = nn.Sequential(*layers)
        hidden = max(1, round(512 * width))
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(16 * c_in, hidden), nn.ReLU()]
        if dropout:
            head.append(nn.Dropout(dropout))
        self.classifier = nn.Sequential(*head, nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vgg12(in_channels: int = 3, num_classes: int = 10, width: float = 1.0, batch_norm: bool = True) -> VGG12:
    """The article's VGG-style teacher, made to run (:class:`VGG12`); ``width=1`` on 3x32x32 images is its full size."""
    return VGG12(in_channels=in_channels, num_classes=num_classes, width=width, batch_norm=batch_norm)


def vgg12_fmnist(num_classes: int = 10) -> VGG12:
    """The width-reduced VGG12 that ships for Fashion-MNIST: grey 28x28 images, 1/16 of the article's widths."""
    return VGG12(in_channels=1, num_classes=num_classes, width=1 / 16)


def cost_on_meta(build: Callable[[], nn.Module], input_shape: Sequence[int]) -> dict[str, int]:
    """Parameters and multiply-accumulates (MACs) of ``build()`` on one input of ``input_shape``, e.g. ``(3, 32, 32)``.

    The model is built on PyTorch's ``meta`` device, where tensors have shapes but no storage, so a model of 92M
    parameters is measured without allocating them. The MACs are half the FLOPs that PyTorch's own counter
    (``torch.utils.flop_counter.FlopCounterMode``) finds in one forward pass: the convolutions (``output elements x
    in_channels / groups x kernel area``) and the matrix products (a linear layer: ``output elements x
    in_features``; attention's too). Normalisation, activations, pooling and bias additions are not counted.
    """
    with torch.device("meta"):
        model = build()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, *input_shape, device="meta"))
    return {"params": count_params(model), "macs": counter.get_total_flops() // 2}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements, not tensors); buffers such as BatchNorm statistics are not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
