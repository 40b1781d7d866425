r"""The base of every method: what :func:`~kdtutor.training.fit` minimises, as objects with a name, settings and
a docstring.

An objective is called once per step as ``objective(out, batch, features)`` with the student's outputs ``out``,
the :class:`~kdtutor.data.Batch` (images ``x``, labels ``y``, sample indices ``idx`` on the device) and the
student's recorded intermediate outputs ``features`` (a dict, filled for the submodule names listed in
``objective.features``). It returns a scalar. It is an ``nn.Module``, so it may hold trainable parameters (a
FitNets regressor, say): ``fit`` adds them to the optimizer and moves them to the device. A teacher it holds is
kept *outside* the module tree — frozen, in eval mode, never trained, never saved with the objective.

``fit`` calls :meth:`~kdtutor.training.Objective.setup` once before training (move cached tensors to the device,
check their shapes against the training set), :meth:`~kdtutor.training.Objective.check` on the first batch only,
so the loop itself adds no checks and no host synchronisation per step, and
:meth:`~kdtutor.training.Objective.finish` when the run ends. Each method's pure loss
sits beside its objective in its own module of :mod:`kdtutor.methods`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch, OnDevice

__all__ = ["CrossEntropy", "FeatureObjective", "Objective", "Sum", "TeacherObjective"]


class Objective(nn.Module):
    """Base class of training objectives; subclasses implement ``forward(out, batch, features) -> scalar``."""

    features: tuple[str, ...] = ()  # names of the student's submodules whose outputs fit records for forward
    labelled: torch.Tensor | None = None  # mask of the training samples with real labels (None: all of them)
    indexed: bool = False  # reads rows by the batch's sample indices (cached outputs, a mask): no Stream then

    def attach(self, model: nn.Module, train: OnDevice) -> None:
        """Called once by ``fit`` before :meth:`setup`, with the student: build parameters that depend on it."""

    def setup(self, train: OnDevice, augment) -> None:
        """Called once by ``fit`` before training, with the training data already on its device."""

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        """Called by ``fit`` on the first batch: raise ``ValueError`` if shapes or labels do not fit."""
        checks.targets(batch.y, out)

    def diagnose(self, batch: Batch) -> str | None:
        """Called by ``fit`` after a non-finite loss, with the last batch: a hint about the cause, if it finds one."""
        return None

    def teachers(self) -> list[nn.Module]:
        """The teacher models this objective runs (``fit`` gives them the student's memory layout)."""
        return []

    def finish(self) -> None:
        """Called by ``fit`` when the run ends, however it ends: drop what belongs to that run only."""


class CrossEntropy(Objective):
    r"""Cross-entropy on the hard labels, :math:`-\frac{1}{B}\sum_b \log \mathrm{softmax}(z_b)_{y_b}`.

    ``label_smoothing`` :math:`\epsilon` mixes the one-hot target with the uniform distribution
    (Szegedy et al. 2016). Outputs of any shape ``... x classes`` with labels of shape ``...`` (e.g. sequences).
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = checks.probability("label_smoothing", label_smoothing)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return F.cross_entropy(out.float().flatten(0, -2), batch.y.flatten().long(),
                               label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class TeacherObjective(Objective):
    """Base of the objectives that learn from another model's outputs: a ``teacher`` model, or its cached
    ``teacher_logits`` (one row per training sample, looked up by the batch's sample indices; see
    :func:`~kdtutor.evaluation.cached_logits`). Exactly one of the two is given.

    **When the teacher runs.** A frozen teacher's logits on an image never change, so when ``fit`` trains on
    images held in memory without augmentation, ``setup`` runs the teacher once over the training set (in
    eval mode, under ``no_grad``, in order) and every step looks its rows up: one teacher pass per ``fit`` call
    instead of one per epoch, with the logits the online teacher would give (equal on the CPU; under CUDA mixed
    precision the pass runs in float32, a little more exactly than an autocast step would). With ``augment``, a
    :class:`~kdtutor.data.Stream`, a dataset that is not held as tensors (its own transforms may change the images),
    or ``online=True``, the teacher runs on every batch instead, on the same — possibly augmented — images as the
    student. Cached logits belong to the un-augmented image, so they are refused together with augmentation.
    The rows live for one ``fit`` call (``finish`` drops them). Under ``torchrun`` every process runs the
    whole pass, so it pays off once a run has more epochs than processes.
    """

    check_alignment = True  # warn when cached logits agree with the labels only at chance level (misaligned rows)
    settings: tuple[str, ...] = ()  # the attributes its repr shows after the teacher's source
    rows: torch.Tensor | None = None  # the teacher's logits for this run's training set, when computed once

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, temperature: float | None = None,
                 *, online: bool = False, **weights: float):
        """``temperature`` (a positive number) and the non-negative loss ``weights`` become attributes, checked;
        ``online=True`` runs the teacher on every batch even where one pass would do (see the class docstring)."""
        super().__init__()
        if not isinstance(online, bool):
            raise checks.bad("online", "True or False", online)
        self.online = online
        if (teacher is None) == (teacher_logits is None):
            raise ValueError("teacher_logits: pass either a teacher or its cached logits, exactly one of them")
        if isinstance(teacher, type):
            checks.nn_module("teacher", teacher)  # a class where the model is expected: says so
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher: expected an nn.Module (the teacher model), got {type(teacher).__name__}; "
                            "cached outputs go to teacher_logits=")
        object.__setattr__(self, "teacher", teacher)  # outside the module tree: frozen, never trained or saved
        self.logits = None if teacher_logits is None else _as_logits(teacher_logits)
        if temperature is not None:
            self.temperature = checks.positive("temperature", temperature)
        for name, value in weights.items():
            setattr(self, name, checks.non_negative(name, value))

    def teachers(self) -> list[nn.Module]:
        return [] if self.teacher is None else [self.teacher]

    @property
    def indexed(self) -> bool:
        return self.teacher is None or self.labelled is not None

    def setup(self, train: OnDevice, augment) -> None:
        if self.teacher is not None:
            self.teacher.to(train.device).eval()
            self.teacher_dtype = next((p.dtype for p in self.teacher.parameters() if p.is_floating_point()), None)
            self.rows = None  # a run of its own: nothing kept from an earlier fit
            if not self.online and augment is None and isinstance(train, OnDevice) and train.tensors is not None:
                self.rows = self._teacher_pass(train)
            return
        if augment is not None:
            raise ValueError("augment: cannot be combined with teacher_logits — a cached logit belongs to the "
                             "un-augmented image; pass teacher= to teach on the augmented view")
        if self.logits.ndim != 2 or len(self.logits) != len(train):
            raise ValueError(f"teacher_logits: expected one row per training sample, shape ({len(train)}, classes), "
                             f"got {tuple(self.logits.shape)}")
        self.logits = self.logits.to(train.device)
        if self.check_alignment:
            rows = self.labelled if self.labelled is not None else slice(None)
            _warn_if_misaligned(self.logits[rows], train.labels.to(train.device)[rows])

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        checks.targets(batch.y, out)
        checks.logits_pair(out, self.teacher_logits(batch))

    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        """The teacher's logits for ``batch``: the rows of this run's teacher pass or of the cached logits, else
        the teacher run on the batch's images (:meth:`run_teacher`)."""
        if self.rows is not None:
            return self.rows[batch.idx]
        if self.teacher is None:
            return self.logits[batch.idx]
        return self.run_teacher(batch.x)

    def run_teacher(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher on images ``x``, in eval mode, under ``no_grad``. A teacher stored in another floating-point
        dtype than the images (float64, bfloat16 beside a float32 student) reads them in its own dtype; its logits
        come back in theirs."""
        dtype = getattr(self, "teacher_dtype", None)
        with torch.no_grad():
            if dtype is None or not x.is_floating_point() or x.dtype == dtype:
                return self.teacher(x)
            return self.teacher(x.to(dtype)).to(x.dtype)

    def finish(self) -> None:
        self.rows = None  # one run's rows: not kept on the device after fit, nor read by a later call

    def _teacher_pass(self, train: OnDevice) -> torch.Tensor:
        """The teacher's logits for every training sample, in order (batches of 256); refused up front if any is
        NaN or infinite, naming the first such sample and whether its own inputs are."""
        rows = None
        for batch in train.batches(256):
            out = self.run_teacher(batch.x)
            if rows is None:  # filled in place: no second copy of the rows
                rows = out.new_empty((len(train), *out.shape[1:]))
            rows[batch.idx] = out
        bad = ~torch.isfinite(rows.reshape(len(rows), -1)).all(1)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            x = train.tensors[0][first]
            cause = ("its inputs hold NaN or infinite values: the inputs are the cause" if x.is_floating_point()
                     and not bool(torch.isfinite(x).all()) else "the teacher or its inputs are the cause")
            raise ValueError(f"teacher: its logits are NaN or infinite for {int(bad.sum())} training sample(s), the "
                             f"first being sample {first} (its index in the training set); {cause}")
        return rows

    def diagnose(self, batch: Batch) -> str | None:
        logits = self.teacher_logits(batch)
        bad = ~torch.isfinite(logits.reshape(len(logits), -1)).all(1)
        if bool(bad.any()):
            first = "" if batch.idx is None else \
                f" (first for sample {int(batch.idx[bad.nonzero()[0, 0]])}, its index in the training set)"
            return (f"the teacher's logits on the last batch are NaN or infinite{first}: the teacher or its inputs "
                    "are the cause, not the learning rate")
        return None

    def source(self) -> str:
        if self.teacher is None:
            return f"cached logits {tuple(self.logits.shape)}"
        return "teacher, online=True" if self.online else "teacher"

    def extra_repr(self) -> str:
        shown = {k: getattr(self, k) for k in self.settings}
        return ", ".join([self.source(), *(f"{k}={v.tolist() if torch.is_tensor(v) else v}" for k, v in shown.items())])


class FeatureObjective(Objective):
    """Base of the objectives that learn from a teacher's *intermediate* features, cached in memory.

    ``teacher_features`` maps a teacher layer's name to its outputs for every training sample, in order (one row
    per sample, e.g. from :func:`~kdtutor.evaluation.compute_features`); ``pairs`` maps each student layer (a name
    in ``student.named_modules()``, recorded by ``fit``) to the teacher layer it learns from. The rows are looked up
    by the batch's sample indices, so no teacher runs during training; like cached logits, they belong to the
    un-augmented images. The objective returns its feature term only: add it to a loss on the labels or the logits
    with :class:`Sum`, e.g. ``Sum(Distillation(...), AttentionTransfer(...))``.
    """

    indexed = True  # its cached rows are looked up by sample index

    def __init__(self, teacher_features: dict, pairs: dict, weight: float = 1.0):
        super().__init__()
        if not isinstance(pairs, dict) or not pairs:
            raise ValueError(f"pairs: expected a non-empty dict {{student layer: teacher layer}}, got {pairs!r}")
        if not isinstance(teacher_features, dict):
            raise ValueError("teacher_features: expected a dict {teacher layer: tensor with one row per training "
                             f"sample}}, got {type(teacher_features).__name__}")
        missing = sorted(set(pairs.values()) - set(teacher_features))
        if missing:
            raise ValueError(f"teacher_features: no features for the teacher layers {missing} named in pairs; it has "
                             f"{sorted(teacher_features)}")
        self.pairs = dict(pairs)
        self.features = tuple(self.pairs)
        self.cache = {name: _as_features(teacher_features[name], name) for name in dict.fromkeys(pairs.values())}
        self.weight = checks.non_negative("weight", weight)

    def setup(self, train: OnDevice, augment) -> None:
        if augment is not None:
            raise ValueError("augment: cannot be combined with cached teacher_features — they belong to the "
                             "un-augmented images")
        for name, rows in self.cache.items():
            if len(rows) != len(train):
                raise ValueError(f"teacher_features: {name!r} has {len(rows)} rows, expected one per training sample "
                                 f"({len(train)})")
        self.cache = {name: rows.to(train.device) for name, rows in self.cache.items()}

    def teacher_features(self, batch: Batch, layer: str) -> torch.Tensor:
        """The cached teacher features of ``layer`` for the samples of ``batch``."""
        return self.cache[layer][batch.idx]

    def diagnose(self, batch: Batch) -> str | None:
        """The first cached feature row that holds NaN or infinity, if any (one pass over the cache, on failure)."""
        for layer, rows in self.cache.items():
            start = 0
            for chunk in rows.split(4096):  # a bounded temporary, however large the cache
                bad = ~torch.isfinite(chunk.reshape(len(chunk), -1)).all(1)
                if bool(bad.any()):
                    return (f"teacher_features: {layer!r} holds NaN or infinite values for sample "
                            f"{start + int(bad.nonzero()[0, 0])} (its index in the training set): the cached features "
                            "are the cause, not the learning rate; recompute them")
                start += len(chunk)
        return None

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, weight={self.weight}"


class Sum(Objective):
    """The sum of several objectives, e.g. ``Sum(Distillation(...), AttentionTransfer(...))``: each term keeps its
    own weights and settings; ``fit`` records the features any of them needs."""

    def __init__(self, *terms: Objective):
        super().__init__()
        classes = [t.__name__ for t in terms if isinstance(t, type)]
        if classes:
            raise TypeError(f"terms: expected Objective instances, got the class(es) {classes} themselves; create "
                            f"each first, e.g. {classes[0]}(...)")
        if not terms or not all(isinstance(t, Objective) for t in terms):
            raise ValueError(f"terms: expected one or more Objective instances, got "
                             f"{[type(t).__name__ for t in terms]}")
        self.terms = nn.ModuleList(terms)
        self.features = tuple(dict.fromkeys(name for t in terms for name in t.features))

    @property
    def labelled(self):  # the mask of the term that has one (fit checks the labels it covers)
        return next((t.labelled for t in self.terms if t.labelled is not None), None)

    @property
    def indexed(self) -> bool:
        return any(t.indexed for t in self.terms)

    def attach(self, model: nn.Module, train: OnDevice) -> None:
        for t in self.terms:
            t.attach(model, train)

    def setup(self, train: OnDevice, augment) -> None:
        for t in self.terms:
            t.setup(train, augment)

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        for t in self.terms:
            t.check(out, batch)

    def diagnose(self, batch: Batch) -> str | None:
        return next((hint for t in self.terms if (hint := t.diagnose(batch))), None)

    def teachers(self) -> list[nn.Module]:
        return [teacher for t in self.terms for teacher in t.teachers()]

    def finish(self) -> None:
        for t in self.terms:
            t.finish()

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return sum(t(out, batch, features) for t in self.terms)


def _as_features(rows, name: str) -> torch.Tensor:
    if not torch.is_tensor(rows) or not rows.is_floating_point() or rows.ndim < 2:
        raise ValueError(f"teacher_features: {name!r} should be a floating-point tensor with one row per training "
                         f"sample, got {getattr(rows, 'dtype', type(rows).__name__)} of shape "
                         f"{tuple(getattr(rows, 'shape', ()))}")
    return rows.detach().float()


def _warn_if_misaligned(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Cached logits that agree with the labels only at chance level were probably computed for other samples."""
    classes = logits.shape[1]
    if len(labels) < 100 or classes < 2:
        return
    agreement = (logits.argmax(1) == labels.to(logits.device)).double().mean().item()
    if agreement < 1.5 / classes:
        warnings.warn(f"teacher_logits: their top class agrees with the labels on only {agreement:.1%} of the training "
                      f"samples (chance: {1 / classes:.1%}); were they computed for these samples, in this order?",
                      UserWarning, stacklevel=4)


def _as_logits(logits) -> torch.Tensor:
    """Cached teacher logits as a float32 tensor (numpy arrays accepted), checked once: finite, not probabilities."""
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise ValueError(f"teacher_logits: expected a floating-point tensor (samples x classes), got "
                         f"{getattr(logits, 'dtype', type(logits).__name__)}")
    logits = logits.detach().float()
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("teacher_logits: contains NaN or infinite values; recompute the teacher's logits")
    if logits.ndim == 2 and len(logits) and bool((logits >= 0).all()) and \
            bool(torch.allclose(logits.sum(1), torch.ones(len(logits)), atol=1e-3)):
        warnings.warn("teacher_logits: every row is non-negative and sums to 1 — these look like probabilities; "
                      "pass the teacher's logits (before the softmax)", UserWarning, stacklevel=4)
    return logits

