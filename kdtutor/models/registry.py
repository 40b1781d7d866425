"""The models that ship with kdtutor: weights in ``weights/``, each beside a JSON record, verified by SHA-256.

A record says how the model was trained (the recipe), the SHA-256 and size of its weights file, and what it reached
(validation and test accuracy). Each weights file is a checkpoint of :mod:`kdtutor.checkpoint` (format 2): plain
``torch.load(path, weights_only=True)`` opens it, a dict holding the ``state_dict``, the architecture's name and
``config``, and the metadata. The command in the record rebuilds an entry from scratch; on the same CPU, torch
version and thread count the weights come out bit-identical. Today's entries:

* ``teacher_fmnist`` — the book's Fashion-MNIST teacher (:func:`~kdtutor.models.teacher_cnn`), built by
  ``python scripts/train_teacher.py``;
* ``teacher_fmnist_v2`` — the improved teacher of Part IV: the same architecture, trained longer on images shifted
  by up to a pixel, built by ``python scripts/train_teacher.py teacher_fmnist_v2``;
* ``teacher_fmnist_pruned`` — the compression pipeline's model: that teacher with 60% of its channels and hidden
  units pruned, distilled back from the teacher's soft targets (a :class:`~kdtutor.models.CNN` with narrower
  widths), built by ``python scripts/build_compressed.py``;
* ``vgg12_fmnist`` — the appendix's VGG-style teacher: the source article's twelve-convolution network at 1/16 of
  its widths, for grey 28x28 images (:func:`~kdtutor.models.vgg12_fmnist`), built by
  ``python scripts/train_teacher.py vgg12_fmnist``;
* ``lm_teacher_kjv`` and ``lm_student_kjv`` — Part V's character-level language models
  (:class:`kdtutor.lm.CharTransformer`): a teacher trained on the King James Version and a several times smaller
  student pretrained briefly on it, built by ``python scripts/train_lm.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from kdtutor.checkpoint import load

__all__ = [
    "TEACHER_NAME", "WEIGHTS_DIR", "ShippedModelError", "pretrained", "pretrained_teacher", "record",
    "rebuild", "shipped_models", "teacher_record", "verify", "write_record",
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
    rebuild = rec.get("command", f"python scripts/train_teacher.py {name}")
    if not path.is_file():
        raise ShippedModelError(f"{path}: missing; reinstall kdtutor or rebuild it with {rebuild}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != rec["sha256"]:
        raise ShippedModelError(f"{path}: SHA-256 {digest} does not match the record's {rec['sha256']}; reinstall "
                                f"kdtutor or rebuild it with {rebuild}")
    return path


def pretrained(name: str = TEACHER_NAME, device: str | torch.device | None = None) -> nn.Module:
    """A shipped model, weights verified by SHA-256, on ``device`` (CPU by default), in eval mode.

    A record may name the ``module`` that defines its architecture (``kdtutor.lm`` for the language models, a room
    this one may not import by name); it is imported first, which registers the architecture with the checkpoints.
    """
    path = verify(name)
    module = record(name).get("module")
    if module is not None:
        if not module.startswith("kdtutor."):
            raise ShippedModelError(f"{name}: its record names module {module!r}; expected one of kdtutor's")
        importlib.import_module(module)
    model, _ = load(path, map_location="cpu")
    return model.to(device or "cpu").eval()


def write_record(weights: Path, command: str, model: nn.Module, **fields) -> dict:
    """Write the record ``NAME.json`` beside a shipped model's ``weights`` file (``NAME.pt``), and return it.

    The record holds the name, file, SHA-256, size and parameter count, then ``fields`` (the recipe, accuracies,
    history ...), the software it was built with, and the ``command`` that rebuilds it. The build scripts call it.
    """
    weights = Path(weights)
    rec = {"name": weights.stem, "file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
           "parameters": sum(p.numel() for p in model.parameters()), "size_bytes": weights.stat().st_size,
           **fields,
           "trained_on": {"torch": torch.__version__, "python": platform.python_version(),
                          "machine": platform.machine(), "device": "cpu"},
           "command": command}
    (weights.parent / f"{weights.stem}.json").write_text(json.dumps(rec, indent=1) + "\n")
    return rec


def rebuild(description: str, recipes: dict, build, argv: list[str] | None = None) -> None:
    """The command line of the scripts that rebuild shipped models: ``NAME ...`` (default: every recipe) and
    ``--out DIR`` (default: the package's weights folder); ``build(name, recipe, out)`` makes each, timed."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *recipes], metavar="NAME",
                        help=f"which models to rebuild (default: all of {', '.join(recipes)})")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or recipes:
        start = time.perf_counter()
        build(name, recipes[name], args.out)
        print(f"  ({time.perf_counter() - start:.0f} s in all)")


def teacher_record() -> dict:
    """The shipped teacher's record (:func:`record` of ``teacher_fmnist``)."""
    return record(TEACHER_NAME)


def pretrained_teacher(device: str | torch.device | None = None) -> nn.Module:
    """The shipped Fashion-MNIST teacher (:func:`~kdtutor.models.teacher_cnn`), verified, in eval mode.

    Retrain it from scratch with ``python scripts/train_teacher.py``; :func:`teacher_record` says how it was
    trained and what test accuracy it reached.
    """
    return pretrained(TEACHER_NAME, device)
