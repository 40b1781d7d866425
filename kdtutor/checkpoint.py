"""Checkpoints that are written atomically, keep their metadata, and refuse to load when corrupt.

File layout: one line ``kdtutor-checkpoint 1 <sha256>\\n`` followed by a ``torch.save`` payload holding the state
dict, the metadata and, for registered architectures, the architecture's name and its ``config``. :func:`load`
checks the hash of the payload before unpickling anything (with ``weights_only=True``), so a truncated or altered
file is an error.

The write goes to a temporary file in the same folder, is flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows): an interrupted save leaves the old file intact. The same framing
(:func:`write_verified`, :func:`read_verified`) stores any payload of tensors and plain values, e.g. cached logits.

Architectures are registered by exact type with the :func:`architecture` decorator: a reader's own ``class MLP``
is not kdtutor's ``MLP`` and is saved without a name (load it with ``load(path, model=...)``).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES", "CheckpointError", "architecture", "describe_lineage", "lineage", "load", "provenance",
    "read_verified", "save", "write_verified",
]

MAGIC = b"kdtutor-checkpoint 1 "

# name stored in the file -> the class that rebuilds it from its ``config`` (filled by @architecture)
ARCHITECTURES: dict[str, type[nn.Module]] = {}


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, or not a kdtutor checkpoint."""


def architecture(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: let :func:`load` rebuild ``cls`` from its ``config`` dict (saved under the class name)."""
    name = cls.__name__
    if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
        raise ValueError(f"cls: an architecture named {name!r} is already registered ({ARCHITECTURES[name]})")
    ARCHITECTURES[name] = cls
    return cls


def _architecture_name(model: nn.Module) -> str | None:
    """The registered name of ``type(model)`` itself (not of a subclass or a look-alike), if it has a config."""
    name = type(model).__name__
    return name if ARCHITECTURES.get(name) is type(model) and hasattr(model, "config") else None


def write_verified(path: str | os.PathLike, payload: dict) -> Path:
    """``torch.save(payload)`` behind a SHA-256 header, written atomically (temporary file, fsync, rename)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    header = MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(header + data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_verified(path: str | os.PathLike, map_location="cpu") -> dict:
    """The payload of a file written by :func:`write_verified`; :class:`CheckpointError` if it is not intact."""
    path = Path(path)
    blob = path.read_bytes()
    head, sep, data = blob.partition(b"\n")
    if not head.startswith(MAGIC) or not sep:
        raise CheckpointError(f"{path}: not a kdtutor checkpoint (no '{MAGIC.decode().strip()}' header)")
    if hashlib.sha256(data).hexdigest() != head[len(MAGIC):].decode(errors="replace"):
        raise CheckpointError(f"{path}: checksum mismatch; the file is truncated or corrupt")
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def save(model: nn.Module, path: str | os.PathLike, **metadata) -> Path:
    """Save ``model``'s weights and ``metadata`` to ``path`` (a file; its folder is created).

    Metadata holds plain values — numbers, strings, booleans, None, lists, tuples, dicts with string keys, tensors
    — so that :func:`load` can read it back with ``weights_only=True``. NumPy scalars and arrays are converted to
    Python numbers and lists, a :class:`~kdtutor.training.History` (anything with ``as_dict()``) to its columns,
    and a path to its string; anything else is refused here, at save time, naming the key. Weights are stored in
    the standard (contiguous) layout, whatever the memory format they were trained in.

    Under ``torchrun`` (several processes, see :mod:`kdtutor.training.distributed`) every process runs the script,
    but only rank 0 writes; the others return ``path`` at once, without writing or waiting.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path: {path} is a directory; give a file name such as {path / 'model.pt'}")
    payload = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "metadata": {key: _plain(value, key) for key, value in metadata.items()},
        "arch": _architecture_name(model),
        "config": _plain(getattr(model, "config", None), "config"),
    }  # built (and checked) on every process, written by one
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
        return path
    return write_verified(path, payload)


def _plain(value, where: str):
    """``value`` as the plain types a ``weights_only`` load accepts; ValueError naming ``where`` otherwise."""
    if value is None:
        return value
    for kind in (bool, int, float, str):  # subclasses too (NumPy's float64 is a float): stored as the plain type
        if isinstance(value, kind):
            return kind(value)
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ValueError(f"metadata: {where} has non-string keys {bad[:3]}; use strings")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "as_dict"):  # a History
        return _plain(value.as_dict(), where)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a NumPy scalar
        return value.item()
    if hasattr(value, "tolist"):  # a NumPy array
        return _plain(value.tolist(), where)
    raise ValueError(f"metadata: {where} is a {type(value).__name__}, which a checkpoint cannot store so that it "
                     "loads again; store plain values (numbers, strings, lists, dicts, tensors)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load(path: str | os.PathLike, model: nn.Module | None = None, map_location="cpu"):
    """Load a checkpoint written by :func:`save`: returns ``(model, metadata)``.

    With ``model`` the weights are loaded into it (strictly: names and shapes must match). Without it, a registered
    architecture (:class:`~kdtutor.models.MLP`, :class:`~kdtutor.models.CNN`, ...) is rebuilt from the stored
    config; any other model needs ``model=``.
    """
    payload = read_verified(path, map_location)
    if model is None:
        if payload["arch"] not in ARCHITECTURES:
            raise ValueError(f"model: {path} holds a model kdtutor cannot rebuild; pass the module to load into")
        model = ARCHITECTURES[payload["arch"]](**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model, payload["metadata"]


# --- lineage: what a checkpoint descends from ----------------------------------------------------------------------
# A model that was updated records where it came from in its metadata: ``updated_from=provenance(old_path)``, a dict
# holding the parent checkpoint's path and SHA-256; likewise ``teacher=provenance(teacher_path)`` (or a shipped
# model's record). lineage() follows ``updated_from`` back to the first checkpoint, checking each parent's hash.


def provenance(path: str | os.PathLike) -> dict:
    """``{"path": ..., "sha256": ...}`` of a file: what a child checkpoint records about its parent (or teacher)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no file at {path}")
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def lineage(path: str | os.PathLike, max_depth: int = 100) -> list[dict]:
    """The chain of checkpoints ``path`` descends from, newest first: ``[{"path", "sha256", "metadata"}, ...]``.

    Each step follows the metadata key ``updated_from`` (a :func:`provenance` dict) to the parent and checks that
    the parent file still has the recorded SHA-256: a parent that was overwritten since is a
    :class:`CheckpointError`, not a silently wrong history. The chain ends at a checkpoint with no ``updated_from``.
    """
    chain, seen = [], set()
    current = provenance(path)
    while current is not None:
        if current["path"] in seen or len(chain) >= max_depth:
            raise CheckpointError(f"{current['path']}: the updated_from chain loops or is deeper than {max_depth}")
        seen.add(current["path"])
        metadata = read_verified(current["path"])["metadata"]
        chain.append({**current, "metadata": metadata})
        parent = metadata.get("updated_from")
        if parent is not None:
            if not isinstance(parent, dict) or not {"path", "sha256"} <= set(parent):
                raise CheckpointError(f"{current['path']}: updated_from should be a provenance() dict, got {parent!r}")
            actual = provenance(parent["path"]) if Path(parent["path"]).is_file() else None
            if actual is None or actual["sha256"] != parent["sha256"]:
                raise CheckpointError(f"{current['path']}: its parent {parent['path']} is missing or has changed since "
                                      "(SHA-256 differs from the one recorded)")
        current = parent
    return chain


def describe_lineage(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> str:
    """A readable account of :func:`lineage`: one line per checkpoint, newest first, with the metadata ``keys``."""
    lines = []
    for depth, step in enumerate(lineage(path)):
        meta = step["metadata"]
        teacher = meta.get("teacher")
        if isinstance(teacher, dict) and "sha256" in teacher:  # a shipped record's name, or a file's name
            name = teacher.get("name") or Path(str(teacher.get("path", "?"))).name
            teacher = f", teacher {name} ({teacher['sha256'][:12]})"
        else:
            teacher = ""
        shown = "".join(f", {k}={meta[k]}" for k in keys if k in meta)
        arrow = "" if depth == 0 else "  " * (depth - 1) + "└ updated from "
        lines.append(f"{arrow}{Path(step['path']).name} ({step['sha256'][:12]}){teacher}{shown}")
    return "\n".join(lines)
