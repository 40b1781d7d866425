"""Part V's text: the King James Version of the Bible (1611; out of copyright), as printed by Debian's package
``bible-kjv`` (``bible -f "Gen1:1-Rev22:21"``), one verse per line with its reference (``Ge1:1``) stripped: 4,137,850
characters of 63 kinds. The derived text is checked by SHA-256, so another edition or a truncated file is an error,
not a different corpus. Characters are the tokens (:class:`~kdtutor.lm.Corpus`: the vocabulary and the split by
position: the first 90% trains, the next 5% validates, the last 5%, the end of the New Testament, tests). The
language-model room :mod:`kdtutor.lm` re-exports these names.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["KJV_SHA256", "Corpus", "CorpusNotFoundError", "kjv_text", "load_kjv"]

KJV_SHA256 = "b5c4940bcfeee072c0935b5200d0f9d88a00a0199cb0961d16133458fcdfae5d"  # of the derived text, UTF-8
KJV_RANGE = "Gen1:1-Rev22:21"
SPLIT = (0.90, 0.05)  # fractions for training and validation; the rest is the test text
_REFERENCE = re.compile(r"^\S+ ")  # "Ge1:1 ", "1Co13:4 ": the verse reference that starts each printed line


class CorpusNotFoundError(FileNotFoundError):
    """The corpus could not be found or derived; the message says what was tried and how to fix it."""


def kjv_text(path: str | os.PathLike | None = None) -> str:
    """The corpus as one string, checked against ``KJV_SHA256``.

    Read from ``path`` if given (a text file saved earlier, e.g. with ``python -m kdtutor corpus --write FILE``);
    otherwise looked up in ``$KDTUTOR_DATA/kjv.txt``, then derived from Debian's ``bible`` program (package
    ``bible-kjv``) in about 0.2 s.
    """
    if path is not None:  # asked for by name: no fallback
        if not Path(path).is_file():
            raise CorpusNotFoundError(f"path: expected the corpus' text file, got {str(path)!r} (not found)")
        return _checked(Path(path).read_text(encoding="utf-8"), str(path))
    tried = []
    if os.environ.get("KDTUTOR_DATA"):
        file = Path(os.environ["KDTUTOR_DATA"]) / "kjv.txt"
        if file.is_file():
            return _checked(file.read_text(encoding="utf-8"), str(file))
        tried.append(f"{file} (not found)")
    program = shutil.which("bible")
    if program is not None:
        done = subprocess.run([program, "-f", KJV_RANGE], capture_output=True, text=True, encoding="utf-8")
        if done.returncode == 0:
            return _checked("".join(_REFERENCE.sub("", line) + "\n" for line in done.stdout.splitlines()), program)
        tried.append(f"{program} -f {KJV_RANGE} (failed with exit status {done.returncode}: {done.stderr.strip()})")
    else:
        tried.append("the bible program of Debian's bible-kjv (not installed)")
    raise CorpusNotFoundError(
        "The King James Version corpus was not found. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        "Fix it in one of two ways:\n"
        "  1. on Debian, Ubuntu or Colab: sudo apt-get update && sudo apt-get install bible-kjv\n"
        "  2. on a machine that has it, python -m kdtutor corpus --write kjv.txt; copy the file here and pass "
        "path=... or put it in $KDTUTOR_DATA")


def _checked(text: str, source: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != KJV_SHA256:
        raise ValueError(f"{source}: its text has SHA-256 {digest}, not the corpus' {KJV_SHA256} ({len(text):,} "
                         "characters): another edition, or a truncated or altered file")
    return text


@dataclass(frozen=True, eq=False)
class Corpus:
    """A text, its character vocabulary, and its split by position into ``train``, ``val`` and ``test`` ids."""

    text: str
    vocab: str = field(init=False)   # the distinct characters, sorted: id k is vocab[k]
    train: torch.Tensor = field(init=False, repr=False)  # uint8 ids of the first 90% of the text
    val: torch.Tensor = field(init=False, repr=False)    # the next 5%
    test: torch.Tensor = field(init=False, repr=False)   # the last 5%

    def __post_init__(self):
        vocab = "".join(sorted(set(self.text)))
        if not 2 <= len(vocab) <= 256:
            raise ValueError(f"text: expected 2 to 256 distinct characters, got {len(vocab)}")
        object.__setattr__(self, "vocab", vocab)
        ids = self.encode(self.text)
        a, b = int(SPLIT[0] * len(ids)), int((SPLIT[0] + SPLIT[1]) * len(ids))
        for name, part in (("train", ids[:a]), ("val", ids[a:b]), ("test", ids[b:])):
            object.__setattr__(self, name, part)

    def encode(self, text: str) -> torch.Tensor:
        """Character ids of ``text`` (uint8); an unknown character is an error naming it."""
        table = {c: i for i, c in enumerate(self.vocab)}
        try:
            return torch.tensor([table[c] for c in text], dtype=torch.uint8)
        except KeyError as err:
            raise ValueError(f"text: character {err.args[0]!r} is not in the corpus' vocabulary") from None

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of ids."""
        return "".join(self.vocab[int(i)] for i in ids)


@functools.cache
def load_kjv() -> Corpus:
    """The King James Version as a :class:`Corpus` (read once per process; see :func:`kjv_text`)."""
    return Corpus(kjv_text())
