"""Rebuild a shipped model from scratch, deterministically, and record how (the model registry's build script).

    python scripts/train_teacher.py                      # every shipped model, into kdtutor/models/weights/
    python scripts/train_teacher.py teacher_fmnist       # one
    python scripts/train_teacher.py --out DIR            # elsewhere (e.g. to compare with the shipped files)

``RECIPES`` below is the single source of truth: each entry is one object, the record beside the weights repeats
it (a test checks the two agree), and every field of it is used. On the same CPU, torch version and thread count the
weights come out bit-identical.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

import kdtutor as kd
from kdtutor.models import registry


@dataclass(frozen=True)
class Recipe:
    """How one shipped model is built."""

    architecture: str         # a builder in kdtutor (kd.<architecture>()), e.g. "teacher_cnn"
    data: str                 # "book_split": Fashion-MNIST's training set minus the book's 5,000 validation images
    config: kd.TrainConfig    # everything fit is told
    init_seed: int = 0        # torch.manual_seed before the model is built: its initial weights
    threads: int = 2          # CPU threads; bit-identical weights need the same count

    def as_record(self) -> dict:
        return {"architecture": self.architecture, "data": self.data, **self.config.as_record(),
                "init_seed": self.init_seed, "threads": self.threads}


# channels_last=False: the layout the shipped weights were trained in (channels-last rounds differently)
RECIPES = {
    "teacher_fmnist": Recipe(
        architecture="teacher_cnn",
        data="book_split",
        config=kd.TrainConfig(epochs=8, batch_size=128, lr=1e-3, weight_decay=1e-4, optimizer="adamw",
                              schedule="cosine", augment=None, seed=0, channels_last=False),
    ),
    # The improved teacher of Part IV ("the teacher improves"): the same architecture, a better recipe — more
    # epochs, on images shifted by up to one pixel (against the first teacher's overfitting).
    "teacher_fmnist_v2": Recipe(
        architecture="teacher_cnn",
        data="book_split",
        config=kd.TrainConfig(epochs=20, batch_size=128, lr=1e-3, weight_decay=1e-4, optimizer="adamw",
                              schedule="cosine", augment=kd.RandomShiftFlip(max_shift=1, flip=False), seed=1,
                              channels_last=False),
        init_seed=1,
    ),
    # The appendix's VGG-style teacher: the article's twelve-convolution network at 1/16 of its widths, for grey
    # 28x28 images (kdtutor.models.vgg12_fmnist), trained like the first teacher.
    "vgg12_fmnist": Recipe(
        architecture="vgg12_fmnist",
        data="book_split",
        config=kd.TrainConfig(epochs=8, batch_size=128, lr=1e-3, weight_decay=1e-4, optimizer="adamw",
                              schedule="cosine", augment=None, seed=0, channels_last=False),
    ),
}


def load_data(name: str):
    """(train, val, test) for a recipe's ``data`` field."""
    if name != "book_split":
        raise ValueError(f"data: expected 'book_split', got {name!r}")
    train_full, test = kd.load_fashion_mnist()
    train, val = kd.book_split(train_full)
    return train, val, test


def build(name: str, recipe: Recipe, out: Path) -> None:
    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    train, val, test = load_data(recipe.data)
    torch.manual_seed(recipe.init_seed)
    model = getattr(kd, recipe.architecture)()
    start = time.perf_counter()
    history = kd.fit(model, train, recipe.config, val=val, device="cpu")
    seconds = time.perf_counter() - start
    if history.interrupted:
        raise SystemExit("interrupted: nothing written")
    test_acc, val_acc = kd.evaluate(model, test), kd.evaluate(model, val)
    weights = kd.save(model, out / f"{name}.pt", recipe=recipe.as_record(), test_acc=test_acc)
    record = registry.write_record(weights, f"python scripts/train_teacher.py {name}", model,
                                   recipe=recipe.as_record(), val_acc=val_acc, test_acc=test_acc,
                                   train_seconds=round(seconds, 1), history=history.as_dict())
    print(f"{name}: test accuracy {100 * test_acc:.2f}%, val accuracy {100 * val_acc:.2f}%, {seconds:.0f} s; "
          f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB, SHA-256 {record['sha256'][:12]}…)")


if __name__ == "__main__":
    registry.rebuild(__doc__, RECIPES, build)
