"""Checkpoints that any PyTorch can open, written atomically, that keep their metadata and refuse to load when corrupt.

File layout (format ``kdtutor-checkpoint/2``): a plain ``torch.save`` of one dict, so ``torch.load(path,
weights_only=True)`` opens it without kdtutor::

    {"format": "kdtutor-checkpoint/2",
     "state_dict": {name: tensor, ...},
     "metadata": {...},                  # save's keyword arguments, as plain values
     "arch": "CNN", "module": "kdtutor.models.nets", "config": {...},   # None for unregistered models
     "sha256": "..."}                    # over everything else in the dict (see below)

The integrity check is a SHA-256 over the dict without its ``sha256`` entry, walked in a fixed order: keys sorted,
each tensor as its dtype, shape and raw bytes, each plain value as its JSON text. :func:`load` recomputes it, so a
truncated or altered file is a :class:`CheckpointError`, not silently different weights. Files written by kdtutor
before format 2 (one line ``kdtutor-checkpoint 1 <sha256>\\n`` followed by the ``torch.save`` payload, hashed as
bytes) still load.

The write goes to a temporary file in the same folder, is flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows): an interrupted save leaves the old file intact. The same framing
(:func:`write_verified`, :func:`read_verified`) stores any payload of tensors and plain values, e.g. cached logits.

Architectures are registered by exact type with the :func:`architecture` decorator: a reader's own ``class MLP``
is not kdtutor's ``MLP`` and is saved without a name (load it with ``load(path, model=...)``). :func:`save` refuses
what :func:`load` could not rebuild: weights whose shapes no longer match the stored config (a channel-pruned MLP)
and tensor subclasses such as torchao's int8 weights.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from kdtutor import checks

__all__ = [
    "ARCHITECTURES", "FORMAT", "CheckpointError", "architecture", "describe_lineage", "lineage", "load", "provenance",
    "read_verified", "save", "write_verified",
]

FORMAT = "kdtutor-checkpoint/2"
LEGACY_MAGIC = b"kdtutor-checkpoint 1 "  # format 1: this, the payload's SHA-256 and a newline, then the payload

# name stored in the file -> the class that rebuilds it from its ``config`` (filled by @architecture)
ARCHITECTURES: dict[str, type[nn.Module]] = {}
# kdtutor's architectures that live in a module the package does not import itself: load imports it on demand. Only
# these names, and only these modules, are ever imported because of what a file says.
LAZY_ARCHITECTURES = {"CharTransformer": "kdtutor.lm"}


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


# --- the verified file: write_verified / read_verified -------------------------------------------------------------


def _digest(payload: dict) -> str:
    """SHA-256 of a payload of tensors and plain values, independent of how ``torch.save`` laid the file out."""
    h = hashlib.sha256()

    def chunk(data: bytes) -> None:  # length-prefixed, so that no two payloads feed the same bytes
        h.update(len(data).to_bytes(8, "little") + data)

    def feed(value) -> None:
        if torch.is_tensor(value):
            t = value.detach().cpu().contiguous()
            chunk(f"tensor {t.dtype} {tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            chunk(f"dict {len(value)}".encode())
            for key in sorted(value, key=str):
                feed(str(key))
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            chunk(f"list {len(value)}".encode())
            for item in value:
                feed(item)
        else:  # None, bool, int, float, str
            chunk(json.dumps(value, default=repr).encode())

    feed(payload)
    return h.hexdigest()


def write_verified(path: str | os.PathLike, payload: dict) -> Path:
    """``torch.save`` of ``payload`` plus its format and SHA-256 (see the module docstring), written atomically
    (temporary file, fsync, rename). ``payload`` is a dict of tensors and plain values."""
    path = Path(path)
    if not isinstance(payload, dict):
        raise TypeError(f"payload: expected a dict of tensors and plain values, got {type(payload).__name__}")
    clash = {"format", "sha256"} & set(payload)
    if clash:
        raise ValueError(f"payload: keys {sorted(clash)} are the file's own; use other names")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload, "sha256": _digest(payload)}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_verified(path: str | os.PathLike, map_location="cpu") -> dict:
    """The payload of a file written by :func:`write_verified` (either format), without its format and SHA-256;
    :class:`CheckpointError` if it is not intact."""
    path = Path(path)
    blob = path.read_bytes()
    if blob.startswith(LEGACY_MAGIC):
        head, sep, data = blob.partition(b"\n")
        if not sep or hashlib.sha256(data).hexdigest() != head[len(LEGACY_MAGIC):].decode(errors="replace"):
            raise CheckpointError(f"{path}: checksum mismatch; the file is truncated or corrupt")
        return _torch_load(path, data, map_location)
    payload = _torch_load(path, blob, map_location)
    if isinstance(payload, dict) and str(payload.get("format")).startswith("kdtutor-checkpoint/") and \
            payload["format"] != FORMAT:
        raise CheckpointError(f"{path}: written in {payload['format']} by a newer kdtutor; this one reads "
                              f"kdtutor-checkpoint 1 and {FORMAT}: upgrade kdtutor")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kdtutor checkpoint (a torch file without format {FORMAT!r}); a plain "
                              "state_dict loads with model.load_state_dict(torch.load(path, weights_only=True))")
    payload = dict(payload)
    del payload["format"]
    expected = payload.pop("sha256", None)
    if _digest(payload) != expected:
        raise CheckpointError(f"{path}: checksum mismatch; the file is truncated or corrupt")
    return payload


def _torch_load(path: Path, data: bytes, map_location):
    """``torch.load(..., weights_only=True)`` of ``data``; whatever it cannot read is a :class:`CheckpointError`."""
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # not a zip file, a damaged archive, a pickle weights_only refuses
        raise CheckpointError(f"{path}: not a readable kdtutor checkpoint ({type(err).__name__}); the file is "
                              "truncated or corrupt, or not a checkpoint") from err


# --- models: save / load -------------------------------------------------------------------------------------------


def save(model: nn.Module, path: str | os.PathLike, **metadata) -> Path:
    """Save ``model``'s weights and ``metadata`` to ``path`` (a file; its folder is created), in format 2.

    Metadata holds plain values — numbers, strings, booleans, None, lists, tuples, dicts with string keys, tensors
    — so that :func:`load` (and ``torch.load(path, weights_only=True)``) can read it back. NumPy scalars and arrays
    are converted to Python numbers and lists, a :class:`~kdtutor.training.History` (anything with ``as_dict()``) to
    its columns, and a path to its string; anything else is refused here, at save time, naming the key. Weights are
    stored in the standard (contiguous) layout, whatever the memory format they were trained in. A
    :func:`provenance` dict under ``updated_from`` is stored with its path relative to the checkpoint's folder, so
    that :func:`lineage` still finds the parent after the folder is moved.

    Refused too, because :func:`load` could not rebuild them: a registered architecture whose weights no longer
    match its ``config`` (e.g. an MLP after :func:`~kdtutor.compression.prune_channels`, which rebuilds only a
    :class:`~kdtutor.models.CNN` with its new widths) and weights held in tensor subclasses (e.g. after
    :func:`~kdtutor.compression.int8_linear`: save before quantizing, and quantize again after loading).

    Under ``torchrun`` (several processes, see :mod:`kdtutor.training.distributed`) every process runs the script,
    but only rank 0 writes; the others return ``path`` at once, without writing or waiting.
    """
    checks.nn_module("model", model)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path: {path} is a directory; give a file name such as {path / 'model.pt'}")
    state = model.state_dict()
    odd = next(filter(None, (_not_plain(k, v) for k, v in state.items())), None)
    if odd:
        raise ValueError(f"model: expected weights in plain tensors, got {odd}, as in a quantized model (torchao's "
                         "int8_linear, torch.ao's quantize_dynamic), which a checkpoint cannot load again; save the "
                         "model before quantizing it, and quantize it again after loading")
    arch = _architecture_name(model)
    config = _plain(getattr(model, "config", None), "config")
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if arch is not None:
        _check_rebuildable(arch, config, state)
    metadata = {key: _plain(value, key) for key, value in metadata.items()}
    parent = metadata.get("updated_from")
    if isinstance(parent, dict) and isinstance(parent.get("path"), str):
        metadata["updated_from"] = {**parent, "path": _relative(parent["path"], path.parent)}
    payload = {"state_dict": state, "metadata": metadata, "arch": arch,
               "module": type(model).__module__ if arch else None, "config": config}
    # built (and checked) on every process, written by one
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
        return path
    return write_verified(path, payload)


def _not_plain(key: str, value) -> str | None:
    """What is wrong with a ``state_dict`` entry a ``weights_only`` load could not give back as saved; None if fine."""
    if not torch.is_tensor(value):
        return f"{key}: a {type(value).__name__}, not a tensor"
    if type(value) not in (torch.Tensor, nn.Parameter):
        return f"{key}: a tensor subclass, {type(value).__name__}"
    return f"{key}: a quantized tensor ({value.dtype})" if value.is_quantized else None


def _check_rebuildable(arch: str, config, state: dict) -> None:
    """ValueError unless ``ARCHITECTURES[arch](**config)`` has exactly ``state``'s names and shapes (built on the
    meta device: shapes only, no memory, no random numbers drawn)."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in ARCHITECTURES[arch](**config).state_dict().items()}
    except Exception:  # an architecture that cannot be built on the meta device: load will tell
        return
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got == expected:
        return
    key = next((k for k in got if got[k] != expected.get(k)), None) or next(k for k in expected if k not in got)
    raise ValueError(f"model: this {arch}'s weights no longer fit its config ({key}: shape {got.get(key, 'absent')}, "
                     f"but {arch}(**model.config) has {expected.get(key, 'no such entry')}), so load could not "
                     f"rebuild it from the file. A model changed after it was built (e.g. channel-pruned) must be "
                     f"rebuilt first: a new {arch}(...) with the new sizes, given these weights by load_state_dict "
                     f"(prune_channels does this itself for a CNN); save that one")


def _relative(parent: str, folder: Path) -> str:
    """``parent`` (a path as given, relative to the working directory) relative to ``folder``."""
    try:
        return os.path.relpath(os.path.abspath(parent), os.path.abspath(folder))
    except ValueError:  # another drive (Windows): no relative path exists
        return os.path.abspath(parent)


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
    """Load a checkpoint written by :func:`save` (either format): returns ``(model, metadata)``.

    With ``model`` (an instance) the weights are loaded into it (strictly: names and shapes must match). Without it,
    a registered architecture (:class:`~kdtutor.models.MLP`, :class:`~kdtutor.models.CNN`, ...) is rebuilt from the
    stored config; :class:`kdtutor.lm.CharTransformer` too, importing :mod:`kdtutor.lm` if needed. Any other model
    needs ``model=``.
    """
    if model is not None:
        checks.nn_module("model", model)
    payload = read_verified(path, map_location)
    if model is None:
        arch = payload["arch"]
        if arch not in ARCHITECTURES and arch in LAZY_ARCHITECTURES:
            importlib.import_module(LAZY_ARCHITECTURES[arch])  # registers it
        if arch not in ARCHITECTURES:
            what = f"a {arch} (defined in {payload.get('module') or 'a module it does not name'})" if arch else \
                "a model of an unregistered class"
            hint = f"import {payload['module']} first, or " if arch and payload.get("module") else ""
            raise ValueError(f"model: {path} holds {what}, which kdtutor cannot rebuild; {hint}pass the module to "
                             f"load into, e.g. load(path, model={arch or 'MyModel'}(...))")
        model = ARCHITECTURES[arch](**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model, payload["metadata"]


# --- lineage: what a checkpoint descends from ----------------------------------------------------------------------
# A model that was updated records where it came from in its metadata: ``updated_from=provenance(old_path)``, a dict
# holding the parent checkpoint's path and SHA-256 (save stores the path relative to the child's folder); likewise
# ``teacher=provenance(teacher_path)`` (or a shipped model's record). lineage() follows ``updated_from`` back to the
# first checkpoint, checking each parent's hash.


def provenance(path: str | os.PathLike) -> dict:
    """``{"path": ..., "sha256": ...}`` of a file: what a child checkpoint records about its parent (or teacher)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no file at {path}")
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _find_parent(child: str, parent: dict) -> dict:
    """The :func:`provenance` of ``child``'s recorded parent, looked for where it can be: a relative path against the
    child's folder (as :func:`save` stores it), then against the working directory (as files saved before kdtutor
    stored it relative), then the child's folder under the parent's file name (a folder moved whole); the first
    file there with the recorded SHA-256."""
    recorded, folder = Path(str(parent["path"])), Path(child).parent
    candidates = [recorded] if recorded.is_absolute() else [Path(os.path.normpath(folder / recorded)), recorded]
    for candidate in dict.fromkeys([*candidates, folder / recorded.name]):
        if candidate.is_file():
            found = provenance(candidate)
            if found["sha256"] == parent["sha256"]:
                return found
    raise CheckpointError(f"{child}: its parent {candidates[0]} is missing or has changed since (SHA-256 differs from "
                          "the one recorded)")


def lineage(path: str | os.PathLike, max_depth: int = 100) -> list[dict]:
    """The chain of checkpoints ``path`` descends from, newest first: ``[{"path", "sha256", "metadata"}, ...]``.

    Each step follows the metadata key ``updated_from`` (a :func:`provenance` dict) to the parent and checks that
    the parent file still has the recorded SHA-256: a parent that was overwritten since is a
    :class:`CheckpointError`, not a silently wrong history. A relative parent path is resolved against the child
    checkpoint's own folder, not the working directory, so a chain survives ``os.chdir`` and moving its folder.
    The chain ends at a checkpoint with no ``updated_from``.
    """
    chain, seen = [], set()
    current = provenance(path)
    while current is not None:
        where = os.path.abspath(current["path"])
        if where in seen or len(chain) >= max_depth:
            raise CheckpointError(f"{current['path']}: the updated_from chain loops or is deeper than {max_depth}")
        seen.add(where)
        metadata = read_verified(current["path"])["metadata"]
        chain.append({**current, "metadata": metadata})
        parent = metadata.get("updated_from")
        if parent is not None and (not isinstance(parent, dict) or not {"path", "sha256"} <= set(parent)):
            raise CheckpointError(f"{current['path']}: updated_from should be a provenance() dict, got {parent!r}")
        current = None if parent is None else _find_parent(current["path"], parent)
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
