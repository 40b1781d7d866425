r"""Repeated runs and honest summaries: every comparison in the book is over several seeds.

A *run* is a function ``run(seed) -> dict`` of metrics. :func:`over_seeds` calls it for each seed and returns a
tidy table — a list of rows, one per run, each a dict holding the configuration, the seed and the metrics — that
:func:`summarize` reduces to mean and sample standard deviation, and :func:`paired_gain` compares two arms run with
the *same* seeds.

**How the book compares two arms.** The gain is computed per seed (the same seed gives both arms the same initial
weights, batch order and, where a chapter uses one, the same labelled subset), then averaged; its 95% confidence
interval is :math:`\bar g \pm t_{0.975,\,n-1}\, s / \sqrt{n}` (Student's t over the :math:`n` per-seed gains
with sample standard deviation :math:`s`). A difference is **clear** only when that interval excludes zero. At least
3 seeds (5 where the budget allows). What the rule does not cover: many settings compared at once (a grid will throw
up a "clear" difference by chance now and then — settings are chosen on validation, reported on test), one teacher,
and one test set.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence

import torch

from kdtutor.data import stratified_indices, subset
from kdtutor.evaluation import compute_logits, evaluate
from kdtutor.notebook import pm
from kdtutor.progress import bar
from kdtutor.training import fit

__all__ = [
    "T_975", "best_class_shift", "compare", "describe_gain", "few_labels", "mean_std", "over_seeds", "paired_gain",
    "plot_gains", "pm", "run_arm", "shift_class", "summarize", "t_quantile",
]


def over_seeds(run: Callable[[int], dict], seeds: Iterable[int], **config) -> list[dict]:
    """``[{**config, "seed": s, **run(s)} for s in seeds]``: one tidy row per seed."""
    return [{**config, "seed": seed, **run(seed)} for seed in seeds]


def run_arm(arm: str, make_model: Callable[[], object], train, seeds: Iterable[int], evaluate_on: dict,
            verbose: bool = True, **fit_kwargs) -> list[dict]:
    """Train a fresh ``make_model()`` per seed with :func:`~kdtutor.training.fit` and evaluate it: one row per seed.

    The seed fixes the initial weights (``torch.manual_seed(seed)`` before ``make_model()``), the training order
    (``fit(seed=seed)``) and, when ``train`` is a function, the data: ``train(seed)`` returns the training set, or a
    dict of ``fit`` arguments holding ``"train"`` and whatever belongs to that data (e.g. its ``teacher_logits``) —
    how a chapter draws a fresh labelled subset per seed. Two arms run with the same seeds differ only in what they
    are told to do. Rows hold ``arm``, ``seed``, ``<name>_acc`` for each dataset in ``evaluate_on``, ``train_acc``
    (last epoch), ``model`` and ``history`` (the trained module and its :class:`~kdtutor.training.History`).
    ``fit_kwargs`` go to ``fit``, which trains quietly. A progress bar counts the seeds unless ``verbose=False``.
    """
    if "progress" in fit_kwargs:
        raise TypeError("progress: renamed verbose (run_arm(..., verbose=False)), as in fit and the rest of kdtutor")

    def run(seed: int) -> dict:
        data, extra = train, {}
        if callable(train) and not isinstance(train, torch.utils.data.Dataset):
            data = train(seed)
            if isinstance(data, dict):
                if "train" not in data:
                    raise ValueError(f"train: train({seed}) returned a dict without the key 'train' (the training "
                                     f"set); got keys {sorted(data)}")
                extra = {k: v for k, v in data.items() if k != "train"}
                data = data["train"]
            clash = sorted(set(extra) & set(fit_kwargs))
            if clash:
                raise ValueError(f"train: train({seed}) and the arm's keyword arguments both set {clash}; set each "
                                 "in one place")
        torch.manual_seed(seed)
        model = make_model()
        history = fit(model, data, seed=seed, verbose=False, **extra, **fit_kwargs)
        row = {f"{name}_acc": evaluate(model, ds) for name, ds in evaluate_on.items()}
        return {**row, "train_acc": history.train_acc[-1], "model": model, "history": history}

    return over_seeds(run, bar(list(seeds), desc=arm, verbose=verbose), arm=arm)


def few_labels(train, n_per_class: int, teacher_logits: torch.Tensor | None = None, teacher=None) -> Callable:
    """``data(seed)`` for :func:`run_arm`: ``n_per_class`` labelled images of every class, drawn by the seed.

    The few-labels regime of the book (:func:`~kdtutor.data.stratified_indices`, so every seed draws another balanced
    subset, the same for every arm run with that seed). ``train`` is a ``TensorDataset`` of images and labels. For a
    distilled arm give the teacher one of two ways: ``teacher_logits``, its logits on *all* of ``train`` in order
    (cached once; each draw takes the rows of its images), or ``teacher``, a model run on each drawn subset. With
    neither, ``data(seed)`` is the subset alone; with one, a dict ``{"train": subset, "teacher_logits": ...}``.
    """
    labels = train.tensors[1] if hasattr(train, "tensors") else None
    if labels is None:
        raise TypeError(f"train: expected a TensorDataset of images and labels, got {type(train).__name__}")
    if teacher_logits is not None and teacher is not None:
        raise ValueError("teacher_logits, teacher: give the teacher's cached logits or the teacher, not both")
    if teacher_logits is not None and len(teacher_logits) != len(train):
        raise ValueError(f"teacher_logits: expected one row per image of train ({len(train)}), got "
                         f"{len(teacher_logits)}")
    stratified_indices(labels, n_per_class)  # checks n_per_class now, rather than at the first seed

    def data(seed: int):
        idx = stratified_indices(labels, n_per_class, seed=seed)
        images = subset(train, idx)
        if teacher_logits is not None:
            return {"train": images, "teacher_logits": teacher_logits[idx]}
        if teacher is not None:
            return {"train": images, "teacher_logits": compute_logits(teacher, images, verbose=False)}
        return images

    return data


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


# Student's t distribution, two-sided 95%: t_{0.975, df} for df = 1 ... 30, then a few larger df (from any table;
# the tests recompute each entry by integrating the t density).
T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622,
         10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314, 16: 2.1199, 17: 2.1098, 18: 2.1009,
         19: 2.0930, 20: 2.0860, 21: 2.0796, 22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595, 26: 2.0555, 27: 2.0518,
         28: 2.0484, 29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799}


def t_quantile(df: int) -> float:
    """:math:`t_{0.975,\\,df}`, the two-sided 95% quantile; between tabulated df the smaller df's (wider) value."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df: expected a positive integer (degrees of freedom), got {df!r}")
    return T_975[max(k for k in T_975 if k <= df)] if df <= 120 else 1.9600


def paired_gain(treatment: list[dict], control: list[dict], value: str) -> dict:
    """Per-seed gain ``treatment - control`` of ``value`` with its 95% confidence interval; same seeds in both.

    Returns ``gains`` (per seed, in seed order), their ``mean``, ``std`` and ``n``, the interval ``ci = (low,
    high)`` (``mean ± t_{0.975, n-1} * std / sqrt(n)``), ``clear`` (the interval lies above zero), ``loss`` (it lies
    below zero) and a ``verdict``: ``"clear gain"``, ``"clear loss"`` or ``"no clear difference"``. Needs at least
    3 seeds. See the module docstring for what the rule does and does not cover.
    """
    a = {row["seed"]: row[value] for row in treatment}
    b = {row["seed"]: row[value] for row in control}
    if set(a) != set(b):
        raise ValueError(f"control: seeds {sorted(b)} differ from the treatment's {sorted(a)}; pair runs by seed")
    if len(a) < 3:
        raise ValueError(f"treatment: expected runs with at least 3 seeds for a paired comparison, got {len(a)}")
    gains = [a[s] - b[s] for s in sorted(a)]
    mean, std = mean_std(gains)
    half = t_quantile(len(gains) - 1) * std / math.sqrt(len(gains))
    low, high = mean - half, mean + half
    clear, loss = low > 0, high < 0
    verdict = "clear gain" if clear else "clear loss" if loss else "no clear difference"
    return {"gains": gains, "mean": mean, "std": std, "n": len(gains), "ci": (low, high), "clear": clear,
            "loss": loss, "verdict": verdict}


def describe_gain(gain: dict, scale: float = 100.0, unit: str = "points", digits: int = 2) -> str:
    """``"+1.31 points (95% CI +1.08 to +1.54) -> clear gain"``: a :func:`paired_gain` result in one line, its
    numbers times ``scale`` with ``digits`` decimals."""
    low, high = gain["ci"]
    f = f"+.{digits}f"
    return (f"{scale * gain['mean']:{f}} {unit} (95% CI {scale * low:{f}} to {scale * high:{f}}) "
            f"-> {gain['verdict']}")


def compare(treatment: list[dict], control: list[dict], value: str = "test_acc",
            names: tuple[str, str] = ("distilled", "scratch")) -> dict:
    """Print two arms' ``value`` (mean ± std and per seed, in %) and their :func:`paired_gain`; return the gain."""
    gain = paired_gain(treatment, control, value)
    for name, rows in zip(names[::-1], (control, treatment), strict=True):
        per_seed = ", ".join(f"{100 * r[value]:.2f}" for r in rows)
        print(f"{name:>10}: {value} {pm(*mean_std(rows, value))} %   per seed: {per_seed}")
    print(f"{'gain':>10}: {describe_gain(gain)}")
    return gain


def plot_gains(gains: dict[str, dict], ax=None, scale: float = 100.0, unit: str = "accuracy points"):
    """Per-seed gains as dots, one row per comparison, with the mean, its 95% interval and a line at zero.

    ``gains`` maps a label to a :func:`paired_gain` result. Green: clear gain; red: clear loss; grey: no clear
    difference. Returns the axis.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 0.5 + 0.45 * len(gains)))
    colours = {"clear gain": "tab:green", "clear loss": "tab:red", "no clear difference": "tab:gray"}
    labels = list(gains)
    for row, label in enumerate(labels):
        g = gains[label]
        colour = colours[g["verdict"]]
        ax.plot([scale * x for x in g["gains"]], [row] * len(g["gains"]), "o", color=colour, alpha=0.45,
                markersize=5)
        low, high = (scale * x for x in g["ci"])
        ax.plot([low, high], [row, row], color=colour, linewidth=2.5)
        ax.plot([scale * g["mean"]], [row], "|", color="black", markersize=12)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"gain ({unit}): per seed (dots), mean (bar) and 95% interval (line)")
    return ax


def best_class_shift(logits, labels, cls: int | Sequence[int], shifts) -> tuple[float, float]:
    """Hinton's bias correction: the shift added to class ``cls``'s logit that maximises accuracy.

    Tune it on the validation split, then add it to the bias of the model's output unit for ``cls``. ``cls`` may be
    several classes (a list), all shifted by the same amount — e.g. the new classes of an update, whose outputs
    were trained on new data only (see the book's chapter on updating). Returns ``(shift, accuracy)``; of equally
    good shifts, the first in ``shifts`` wins.
    """
    best = (float("nan"), -1.0)
    for shift in shifts:
        acc = (shift_class(logits, cls, shift).argmax(1) == labels).double().mean().item()
        if acc > best[1]:
            best = (float(shift), acc)
    if best[1] < 0:
        raise ValueError("shifts: expected at least one value")
    return best


def shift_class(logits: torch.Tensor, cls: int | Sequence[int], shift: float) -> torch.Tensor:
    """A copy of ``logits`` with ``shift`` added to column ``cls`` (or to each column of a list of classes): the
    bias fix of :func:`best_class_shift`."""
    shifted = logits.clone()
    columns = list(cls) if isinstance(cls, (list, tuple, torch.Tensor)) else [cls]
    columns = [c.item() if torch.is_tensor(c) else c for c in columns]
    if not columns or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < logits.shape[1]
                          for c in columns):
        raise ValueError(f"cls: expected a class index or a non-empty list of them in [0, {logits.shape[1]}), "
                         f"got {cls!r}")
    shifted[:, columns] += float(shift)
    return shifted
