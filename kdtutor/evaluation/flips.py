"""Regressions between two versions of a model: negative flips, overall and per class.

A **negative flip** is a sample the old model classified correctly and the new model gets wrong (Yan et al. 2021,
"Positive-congruent training"). Users notice them even when the new model is more accurate overall: something that
worked stopped working. The **negative flip rate** (NFR) is their share of all samples,

.. math::

   \\mathrm{NFR} = \\frac{1}{N} \\sum_n [\\hat y^{\\mathrm{old}}_n = y_n] \\, [\\hat y^{\\mathrm{new}}_n \\ne y_n],

and a *positive flip* is the reverse (wrong before, right now). Predictions are class indices (``argmax`` of the
logits); pass logits and they are reduced for you. A single column (``N x 1``) is refused: it is not logits (its
argmax is class 0 for every sample), and class indices are passed as a 1-D tensor.
"""

from __future__ import annotations

import torch

__all__ = ["flip_table", "negative_flip_rate"]


def _predictions(name: str, values, n: int | None = None) -> torch.Tensor:
    values = torch.as_tensor(values)
    if values.ndim == 2 and values.shape[1] == 1:  # argmax over one column would make every prediction class 0
        raise ValueError(f"{name}: expected a 1-D tensor of class indices or logits with one column per class, got "
                         f"{values.dtype} of shape {tuple(values.shape)}: one column is not logits; if it holds "
                         "class indices, pass it as a 1-D tensor (values.squeeze(1))")
    if values.ndim == 2 and values.is_floating_point():
        values = values.argmax(1)  # logits or probabilities: their predicted class
    if values.ndim != 1 or values.is_floating_point() or values.dtype == torch.bool:
        raise ValueError(f"{name}: expected a 1-D tensor of class indices (or 2-D logits), got {values.dtype} of "
                         f"shape {tuple(values.shape)}")
    if n is not None and len(values) != n:
        raise ValueError(f"{name}: expected {n} predictions, one per target, got {len(values)}")
    return values.long().cpu()


def negative_flip_rate(old_pred, new_pred, targets) -> float:
    """The share of samples the old model got right and the new one gets wrong (a fraction in [0, 1])."""
    y = _predictions("targets", targets)
    old, new = _predictions("old_pred", old_pred, len(y)), _predictions("new_pred", new_pred, len(y))
    if not len(y):
        raise ValueError("targets: expected at least one sample, got none")
    return ((old == y) & (new != y)).double().mean().item()


def flip_table(old_pred, new_pred, targets, classes=None) -> list[dict]:
    """One row per class (by true label): samples, old and new accuracy, negative and positive flips, and NFR.

    ``classes`` names the classes (a sequence of strings, e.g. ``kd.FASHION_CLASSES``); by default their indices.
    A final row ``"all"`` sums every class. The NFR of a class is its negative flips over its samples.
    """
    if classes is not None and (isinstance(classes, (str, bytes)) or not hasattr(classes, "__len__")
                                or not hasattr(classes, "__getitem__")):
        raise TypeError(f"classes: expected a sequence of class names such as kd.FASHION_CLASSES (or None for the "
                        f"indices), got {type(classes).__name__} {classes!r:.60}")
    y = _predictions("targets", targets)
    old, new = _predictions("old_pred", old_pred, len(y)), _predictions("new_pred", new_pred, len(y))
    n_classes = len(classes) if classes is not None else int(y.max()) + 1 if len(y) else 0
    if classes is not None and len(y) and int(y.max()) >= n_classes:
        raise ValueError(f"classes: {n_classes} names, but targets go up to class {int(y.max())}")
    names = list(classes) if classes is not None else list(range(n_classes))
    rows = []
    for c, mask in [(names[k], y == k) for k in range(n_classes)] + [("all", torch.ones_like(y, dtype=torch.bool))]:
        right_old, right_new = (old == y) & mask, (new == y) & mask
        n = int(mask.sum())
        negative, positive = int((right_old & ~right_new).sum()), int((~right_old & right_new).sum())
        rows.append({"class": c, "samples": n, "old_acc": int(right_old.sum()) / n if n else float("nan"),
                     "new_acc": int(right_new.sum()) / n if n else float("nan"), "negative_flips": negative,
                     "positive_flips": positive, "nfr": negative / n if n else float("nan")})
    return rows
