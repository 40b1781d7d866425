"""Repeated runs and honest summaries: every comparison in the book is over several seeds.

A *run* is a function ``run(seed) -> dict`` of metrics. :func:`over_seeds` calls it for each seed and returns a
tidy table — a list of rows, one per run, each a dict holding the configuration, the seed and the metrics — that
:func:`summarize` reduces to mean and sample standard deviation, and :func:`paired_gain` compares two arms run with
the *same* seeds: the gain is computed per seed, then averaged, and called **clear** only when its mean exceeds
twice the standard deviation of the per-seed gains.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence

import torch

from kdtutor.evaluation import evaluate
from kdtutor.notebook import pm
from kdtutor.progress import bar
from kdtutor.training import fit

__all__ = ["best_class_shift", "mean_std", "over_seeds", "paired_gain", "pm", "run_arm", "shift_class", "summarize"]


def over_seeds(run: Callable[[int], dict], seeds: Iterable[int], **config) -> list[dict]:
    """``[{**config, "seed": s, **run(s)} for s in seeds]``: one tidy row per seed."""
    return [{**config, "seed": seed, **run(seed)} for seed in seeds]


def run_arm(arm: str, make_model: Callable[[], object], train, seeds: Iterable[int], evaluate_on: dict,
            progress: bool = True, **fit_kwargs) -> list[dict]:
    """Train a fresh ``make_model()`` per seed with :func:`~kdtutor.training.fit` and evaluate it: one row per seed.

    The seed fixes both the initial weights (``torch.manual_seed(seed)`` before ``make_model()``) and the training
    order (``fit(seed=seed)``), so two arms run with the same seeds differ only in what they are told to do. Rows
    hold ``arm``, ``seed``, ``<name>_acc`` for each dataset in ``evaluate_on``, ``train_acc`` (last epoch),
    ``model`` and ``history`` (the trained module and its :class:`~kdtutor.training.History`). ``fit_kwargs`` go to
    ``fit`` (``verbose`` defaults to ``False``). A progress bar counts the seeds unless ``progress=False``.
    """
    fit_kwargs.setdefault("verbose", False)

    def run(seed: int) -> dict:
        torch.manual_seed(seed)
        model = make_model()
        history = fit(model, train, seed=seed, **fit_kwargs)
        row = {f"{name}_acc": evaluate(model, data) for name, data in evaluate_on.items()}
        return {**row, "train_acc": history.train_acc[-1], "model": model, "history": history}

    return over_seeds(run, bar(list(seeds), desc=arm, verbose=progress), arm=arm)


def mean_std(values: Sequence, key: str | None = None) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``, or of ``row[key]`` over rows."""
    values = [row[key] for row in values] if key is not None else list(values)
    if not values:
        raise ValueError("values: expected at least one number")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: list[dict], value: str, by: Sequence[str] = ()) -> list[dict]:
    """Group ``rows`` by the keys ``by`` and give each group's ``n``, ``mean`` and ``std`` of ``value``."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row[value])
    out = []
    for key, values in groups.items():
        mean, std = mean_std(values)
        out.append({**dict(zip(by, key, strict=True)), "n": len(values), "mean": mean, "std": std})
    return out


def paired_gain(treatment: list[dict], control: list[dict], value: str) -> dict:
    """Per-seed gain ``treatment - control`` of ``value``; both lists must hold the same seeds.

    Returns the per-seed gains, their mean and std, ``clear`` (``mean > 2 * std`` with at least 3 seeds) and a
    ``verdict``: ``"clear gain"``, ``"clear loss"`` (``mean < -2 * std``) or ``"no clear difference"``.
    """
    a = {row["seed"]: row[value] for row in treatment}
    b = {row["seed"]: row[value] for row in control}
    if set(a) != set(b):
        raise ValueError(f"control: seeds {sorted(b)} differ from the treatment's {sorted(a)}; pair runs by seed")
    gains = [a[s] - b[s] for s in sorted(a)]
    mean, std = mean_std(gains)
    enough = len(gains) >= 3
    clear, loss = enough and mean > 2 * std, enough and mean < -2 * std
    verdict = "clear gain" if clear else "clear loss" if loss else "no clear difference"
    return {"gains": gains, "mean": mean, "std": std, "n": len(gains), "clear": clear, "verdict": verdict}


def best_class_shift(logits, labels, cls: int, shifts) -> tuple[float, float]:
    """Hinton's bias correction: the shift added to class ``cls``'s logit that maximises accuracy.

    Tune it on the validation split, then add it to the bias of the model's output unit for ``cls``. Returns
    ``(shift, accuracy)``; of equally good shifts, the first in ``shifts`` wins.
    """
    best = (float("nan"), -1.0)
    for shift in shifts:
        acc = (shift_class(logits, cls, shift).argmax(1) == labels).double().mean().item()
        if acc > best[1]:
            best = (float(shift), acc)
    if best[1] < 0:
        raise ValueError("shifts: expected at least one value")
    return best


def shift_class(logits: torch.Tensor, cls: int, shift: float) -> torch.Tensor:
    """A copy of ``logits`` with ``shift`` added to column ``cls`` (the bias fix of :func:`best_class_shift`)."""
    shifted = logits.clone()
    shifted[:, cls] += float(shift)
    return shifted
