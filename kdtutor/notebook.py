"""Small helpers for the book's notebooks; they work the same in Jupyter, in the book build and on Colab.

:func:`glue` stores a value for the prose (myst-nb's ``{glue:text}`` role) *and* prints it, so the number is also
visible where MyST roles show as raw text (Colab, plain Jupyter). :func:`timed` measures a step of a chapter.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


def glue(name: str, value, fmt: str = "") -> None:
    """Glue ``value`` under ``name`` for the book (if myst-nb is installed) and print ``name = value``.

    ``fmt`` is a format spec for the printed line only (e.g. ``".2%"``); the prose formats the glued value itself,
    as in ``{glue:text}`name:.1%```.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # on Colab or in plain Jupyter: printing is enough
        myst_glue = None
    if myst_glue is not None:
        myst_glue(name, _Text(value) if isinstance(value, str) else value, display=False)
    print(f"{name} = {value:{fmt}}")


class _Text:
    """A string whose repr is itself, so ``{glue:text}`` shows ``Shirt`` rather than ``'Shirt'``."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


@contextmanager
def timed(label: str, store: dict | None = None):
    """``with timed("train"):`` prints how long the block took; with ``store`` also records it as ``store[label]``."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    if store is not None:
        store[label] = seconds
    print(f"{label}: {seconds:.2f} s")
