"""Progress bars for long work (``tqdm.auto``: a widget in a notebook, a text bar in a terminal), off in the book.

Bars appear on multi-run experiments, on :func:`~kdtutor.evaluation.compute_logits` over large data, inside a
:func:`~kdtutor.training.fit` epoch that runs longer than about two seconds, and in the scripts that rebuild the
shipped models. They are switched off

* by ``verbose=False`` (every function that shows one takes it),
* while the book's notebooks are executed for storage or checked by nbval (``KDTUTOR_BOOK=1``, set by
  ``scripts/common.sh`` and ``book/conftest.py``), so stored outputs never hold a widget or stderr,
* everywhere, by ``KDTUTOR_PROGRESS=0``.
"""

from __future__ import annotations

import os

__all__ = ["bar", "enabled"]


def enabled(verbose: bool = True) -> bool:
    """Whether a bar may be shown: ``verbose`` and neither ``KDTUTOR_BOOK=1`` nor ``KDTUTOR_PROGRESS=0``."""
    return bool(verbose) and os.environ.get("KDTUTOR_BOOK") != "1" and os.environ.get("KDTUTOR_PROGRESS") != "0"


def bar(iterable=None, *, total: int | None = None, desc: str = "", verbose: bool = True, delay: float = 0.0,
        leave: bool = True):
    """``tqdm.auto.tqdm(iterable, ...)``, disabled (it iterates, draws nothing) unless :func:`enabled`.

    ``delay`` seconds pass before the bar appears, so short work shows nothing.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, delay=delay, leave=leave, dynamic_ncols=True,
                disable=not enabled(verbose))
