"""Helpers for the book's notebooks; they work the same in Jupyter, in the book build and on Colab.

:func:`glue` stores a value for the prose (myst-nb's ``{glue:text}`` role) and prints it, so the number is also
visible where MyST roles show as raw text (Colab, plain Jupyter). When the book's notebooks are executed for storage
or checked by nbval (``KDTUTOR_BOOK=1``, set by ``scripts/common.sh`` and ``book/conftest.py``) it does not print:
the rendered page shows the number in the prose only, and nbval still compares the glued value itself (the stored
record holds its full ``repr``). :func:`timed` measures a step of a chapter, :func:`pm` formats a mean and its spread,
:func:`show_image` draws a normalized image. Only :mod:`kdtutor.experiments` imports from here (it re-exports
``pm`` for older notebooks).

:func:`pin_numerics` fixes the floating-point numerics of the book's stored outputs (see its docstring).
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager

from kdtutor.data import FMNIST_MEAN, FMNIST_STD, denormalize

__all__ = ["BOOK_NUMERICS", "book_mode", "glue", "pin_numerics", "pm", "show_image", "timed"]


def glue(name: str, value, fmt: str = "") -> None:
    """Glue ``value`` under ``name`` for the book (if myst-nb is installed) and print ``name = value``.

    Nothing is printed while the book is built or checked (:func:`book_mode`).

    ``fmt`` is a format spec for the printed line only (e.g. ``".2%"``); the prose formats the glued value itself,
    as in ``{glue:text}`name:.1%```.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # on Colab or in plain Jupyter: printing is enough
        myst_glue = None
    if myst_glue is not None:
        myst_glue(name, _Text(value) if isinstance(value, str) else value, display=False)
    if not book_mode():
        print(f"{name} = {value:{fmt}}")


def book_mode() -> bool:
    """True while the book's notebooks are executed for storage or under nbval (``KDTUTOR_BOOK=1``)."""
    return os.environ.get("KDTUTOR_BOOK") == "1"


#: The numerics the book's stored outputs are made and checked with (``scripts/execute.sh``, and nbval through
#: ``book/conftest.py``): variable -> value, set by :func:`pin_numerics`.
BOOK_NUMERICS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own CPU kernels at AVX2: every x86 CPU of the last decade has it
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's convolutions and matmuls capped the same way (AVX-512 rounds otherwise)
    "OMP_NUM_THREADS": "2",  # a float sum split over n threads rounds per n: the book's machines have 2 cores
}


def pin_numerics(environ=None) -> dict:
    """Fix the numerics that differ between x86 CPUs, for the processes (kernels) started from ``environ`` after it.

    The same seed gives different floats on CPUs with and without AVX-512 (PyTorch picks its kernels at start-up,
    oneDNN its instruction set), and a float sum split over another thread count rounds differently; a verdict near
    an interval's edge can then flip. Capping both at AVX2 and using 2 threads reproduces the stored outputs
    exactly on either kind of CPU the book was checked on. Sets each variable of :data:`BOOK_NUMERICS` that
    ``environ`` (default ``os.environ``) does not already set — an explicit value wins, which is how
    ``scripts/robustness.py`` runs its variants — and returns the ones it set. Does nothing with
    ``KDTUTOR_NUMERICS=native`` or on a CPU that is not x86 (where AVX2 means nothing). A reader's own runs
    (``scripts/lab.sh``, Colab) are not pinned: they run at the machine's full speed, and their last digits may differ.
    """
    environ = os.environ if environ is None else environ
    if environ.get("KDTUTOR_NUMERICS") == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    pinned = {name: value for name, value in BOOK_NUMERICS.items() if name not in environ}
    environ.update(pinned)
    return pinned


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


def pm(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    """``"91.23 ± 0.15"``: a mean and its spread, scaled (default: fractions to percentage points)."""
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def show_image(ax, image, title: str | None = None, mean=FMNIST_MEAN, std=FMNIST_STD, **title_style):
    """Draw one normalized image (``C x H x W``) on a matplotlib axis: un-normalized, grey for one channel, no axes.

    ``title_style`` goes to ``ax.set_title`` (e.g. ``fontsize=9, color="red"``).
    """
    pixels = denormalize(image.detach().cpu().float(), mean, std).clamp(0, 1)
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        ax.imshow(pixels[0].numpy(), cmap="gray_r")
    else:
        ax.imshow((pixels.permute(1, 2, 0) if pixels.ndim == 3 else pixels).numpy())
    if title is not None:
        ax.set_title(title, **title_style)
    ax.axis("off")
    return ax
