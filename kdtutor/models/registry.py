"""The models that ship with kdtutor: weights in ``weights/``, each beside a JSON record, verified by SHA-256.

A record says how the model was trained (the recipe), the SHA-256 and size of its weights file, and what it reached
(validation and test accuracy). ``python scripts/train_teacher.py NAME`` rebuilds an entry from scratch; on the same
CPU, torch version and thread count the weights come out bit-identical. Today's entries:

* ``teacher_fmnist`` — the book's Fashion-MNIST teacher (:func:`~kdtutor.models.teacher_cnn`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from kdtutor.checkpoint import load

__all__ = [
    "TEACHER_NAME", "WEIGHTS_DIR", "ShippedModelError", "pretrained", "pretrained_teacher", "record",
    "shipped_models", "teacher_record", "verify",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
TEACHER_NAME = "teacher_fmnist"


class ShippedModelError(ValueError):
    """A shipped model's weights are missing or do not match the SHA-256 in its record."""


def shipped_models() -> list[str]:
    """Names of the shipped models (one ``NAME.json`` record each)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def record(name: str = TEACHER_NAME) -> dict:
    """A shipped model's record: recipe, seed, data split, SHA-256 of the weights, accuracies, training time."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"name: expected one of {shipped_models()}, got {name!r}")
    return json.loads(path.read_text())


def verify(name: str = TEACHER_NAME) -> Path:
    """The path of a shipped model's weights after checking their SHA-256 against the record."""
    rec = record(name)
    path = WEIGHTS_DIR / rec["file"]
    if not path.is_file():
        raise ShippedModelError(f"{path}: missing; reinstall kdtutor or rebuild it with "
                                f"python scripts/train_teacher.py {name}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != rec["sha256"]:
        raise ShippedModelError(f"{path}: SHA-256 {digest} does not match the record's {rec['sha256']}; reinstall "
                                f"kdtutor or rebuild it with python scripts/train_teacher.py {name}")
    return path


def pretrained(name: str = TEACHER_NAME, device: str | torch.device | None = None) -> nn.Module:
    """A shipped model, weights verified by SHA-256, on ``device`` (CPU by default), in eval mode."""
    model, _ = load(verify(name), map_location="cpu")
    return model.to(device or "cpu").eval()


def teacher_record() -> dict:
    """The shipped teacher's record (:func:`record` of ``teacher_fmnist``)."""
    return record(TEACHER_NAME)


def pretrained_teacher(device: str | torch.device | None = None) -> nn.Module:
    """The shipped Fashion-MNIST teacher (:func:`~kdtutor.models.teacher_cnn`), verified, in eval mode.

    Retrain it from scratch with ``python scripts/train_teacher.py``; :func:`teacher_record` says how it was
    trained and what test accuracy it reached.
    """
    return pretrained(TEACHER_NAME, device)
