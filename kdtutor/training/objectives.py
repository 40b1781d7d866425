r"""Training objectives: what :func:`~kdtutor.training.fit` minimises, as objects with a name, settings and a docstring.

An objective is called once per step as ``objective(out, batch, features)`` with the student's outputs ``out``,
the :class:`~kdtutor.data.Batch` (images ``x``, labels ``y``, sample indices ``idx`` on the device) and the
student's recorded intermediate outputs ``features`` (a dict, filled for the submodule names listed in
``objective.features``). It returns a scalar. It is an ``nn.Module``, so it may hold trainable parameters (a
FitNets regressor, say): ``fit`` adds them to the optimizer and moves them to the device. A teacher it holds is
kept *outside* the module tree — frozen, in eval mode, never trained, never saved with the objective.

``fit`` calls :meth:`~kdtutor.training.Objective.setup` once before training (move cached tensors to the device,
check their shapes against the training set) and :meth:`~kdtutor.training.Objective.check` on the first batch only,
so the loop itself adds no checks and no host synchronisation per step. The losses themselves are pure functions
in :mod:`kdtutor.losses`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import checks
from kdtutor.data import Batch, OnDevice
from kdtutor.losses import distillation_loss_unchecked, kd_loss_unchecked, logit_matching_loss
from kdtutor.losses.features import attention_transfer_loss, dkd_loss_unchecked, hint_loss
from kdtutor.losses.updating import focal_distillation_loss_unchecked, lwf_loss_unchecked, old_class_index
from kdtutor.models import record_activations

__all__ = [
    "AttentionTransfer", "CrossEntropy", "DecoupledKD", "Distillation", "FeatureObjective", "FitNets",
    "FocalDistillation", "LearningWithoutForgetting", "LogitMatching", "Objective", "Sum", "TeacherObjective",
]


class Objective(nn.Module):
    """Base class of training objectives; subclasses implement ``forward(out, batch, features) -> scalar``."""

    features: tuple[str, ...] = ()  # names of the student's submodules whose outputs fit records for forward
    labelled: torch.Tensor | None = None  # mask of the training samples with real labels (None: all of them)

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
        """The teacher models this objective runs online (``fit`` gives them the student's memory layout)."""
        return []


class CrossEntropy(Objective):
    r"""Cross-entropy on the hard labels, :math:`-\frac{1}{B}\sum_b \log \mathrm{softmax}(z_b)_{y_b}`.

    ``label_smoothing`` :math:`\epsilon` mixes the one-hot target with the uniform distribution
    (Szegedy et al. 2016). Outputs of any shape ``... x classes`` with labels of shape ``...`` (e.g. sequences).
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = checks.probability(label_smoothing, "label_smoothing")

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return F.cross_entropy(out.float().flatten(0, -2), batch.y.flatten().long(),
                               label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class TeacherObjective(Objective):
    """Base of the objectives that learn from another model's outputs: a ``teacher`` run online on every batch (in
    eval mode, under ``no_grad``, on the same — possibly augmented — images as the student), or its cached
    ``teacher_logits``: one row per training sample, looked up by the batch's sample indices (see
    :func:`~kdtutor.evaluation.cached_logits`). Cached logits belong to the un-augmented image, so they are refused
    together with augmentation. Exactly one of the two is given.
    """

    check_alignment = True  # warn when cached logits agree with the labels only at chance level (misaligned rows)

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None):
        super().__init__()
        if (teacher is None) == (teacher_logits is None):
            raise ValueError("teacher_logits: pass either a teacher or its cached logits, exactly one of them")
        if isinstance(teacher, type):
            checks.nn_module(teacher, "teacher")  # a class where the model is expected: says so
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher: expected an nn.Module (the teacher model), got {type(teacher).__name__}; "
                            "cached outputs go to teacher_logits=")
        object.__setattr__(self, "teacher", teacher)  # outside the module tree: frozen, never trained or saved
        self.logits = None if teacher_logits is None else _as_logits(teacher_logits)

    def teachers(self) -> list[nn.Module]:
        return [] if self.teacher is None else [self.teacher]

    def setup(self, train: OnDevice, augment) -> None:
        if self.teacher is not None:
            self.teacher.to(train.device).eval()
            self.teacher_dtype = next((p.dtype for p in self.teacher.parameters() if p.is_floating_point()), None)
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
        """The teacher's logits for ``batch``. A teacher stored in another floating-point dtype than the images
        (float64, bfloat16 beside a float32 student) reads them in its own dtype; its logits come back in theirs."""
        if self.teacher is None:
            return self.logits[batch.idx]
        dtype = getattr(self, "teacher_dtype", None)
        with torch.no_grad():
            if dtype is None or not batch.x.is_floating_point() or batch.x.dtype == dtype:
                return self.teacher(batch.x)
            return self.teacher(batch.x.to(dtype)).to(batch.x.dtype)

    def diagnose(self, batch: Batch) -> str | None:
        logits = self.teacher_logits(batch)
        bad = ~torch.isfinite(logits.reshape(len(logits), -1)).all(1)
        if bool(bad.any()):
            return (f"the teacher's logits on the last batch are NaN or infinite (first for sample "
                    f"{int(batch.idx[bad.nonzero()[0, 0]])}, its index in the training set): the teacher or its "
                    "inputs are the cause, not the learning rate")
        return None

    def source(self) -> str:
        return "online teacher" if self.teacher is not None else f"cached logits {tuple(self.logits.shape)}"


class Distillation(TeacherObjective):
    r"""Hinton et al.'s (2015) loss :math:`\alpha\,T^2\,\mathrm{KL}(p^T \| q^T) + (1-\alpha)\,\mathrm{CE}(z, y)`.

    The teacher's logits come from ``teacher`` run online or from cached ``teacher_logits``
    (:class:`TeacherObjective`). See :func:`kdtutor.losses.distillation_loss` for the math.

    ``labelled`` (optional) is a boolean mask over the training samples: the rows marked ``False`` are *unlabelled
    transfer data* (Hinton et al. allow any transfer set) — they get only the soft term, and their label values are
    ignored (e.g. ``-1``) and not checked; the hard-label term averages over the labelled rows of each batch. The
    labels of the rows marked ``True`` are checked as strictly as ever.
    """

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 4.0,
                 alpha: float = 0.9, labelled=None):
        super().__init__(teacher, teacher_logits)
        self.temperature = checks.temperature(temperature)
        self.alpha = checks.alpha(alpha)
        self.labelled = None if labelled is None else _as_mask(labelled)

    def setup(self, train: OnDevice, augment) -> None:
        if self.labelled is not None:
            if self.labelled.shape != (len(train),):
                raise ValueError(f"labelled: expected one entry per training sample ({len(train)}), got shape "
                                 f"{tuple(self.labelled.shape)}")
            self.labelled = self.labelled.to(train.device)
        super().setup(train, augment)

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        rows = self.labelled[batch.idx] if self.labelled is not None else slice(None)
        checks.targets(batch.y[rows], out[rows])
        checks.logits_pair(out, self.teacher_logits(batch))

    def soft(self, out: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        r"""The soft-target term: :math:`T^2\,\mathrm{KL}` at the temperature (subclasses change it)."""
        return kd_loss_unchecked(out, teacher_logits, self.temperature)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        teacher_logits = self.teacher_logits(batch)
        if self.labelled is None and type(self).soft is Distillation.soft:
            return distillation_loss_unchecked(out, teacher_logits, batch.y, self.temperature, self.alpha)
        soft = self.soft(out, teacher_logits) if self.alpha > 0 else out.new_zeros(())
        if self.alpha == 1:
            return soft
        if self.labelled is None:
            hard = F.cross_entropy(out.float(), batch.y.long())
        else:  # the mean cross-entropy over the labelled rows of the batch (0 if it has none), without a host sync
            rows = self.labelled[batch.idx]
            per_row = F.cross_entropy(out.float(), torch.where(rows, batch.y, 0).long(), reduction="none")
            hard = (per_row * rows).sum() / rows.sum().clamp_min(1)
        return self.alpha * soft + (1 - self.alpha) * hard

    def extra_repr(self) -> str:
        unlabelled = "" if self.labelled is None else f", {int((~self.labelled).sum())} unlabelled rows"
        return f"{self.source()}, temperature={self.temperature}, alpha={self.alpha}{unlabelled}"


class LogitMatching(Distillation):
    r"""Regress the student's logits onto the teacher's (Ba & Caruana 2014), mixed with the hard labels:
    :math:`\alpha\,\frac{1}{2BC}\sum(\bar z - \bar v)^2 + (1-\alpha)\,\mathrm{CE}(z, y)` on centred logits.

    The high-temperature limit of :class:`Distillation` (see :func:`kdtutor.losses.logit_matching_loss`); the
    teacher, cached ``teacher_logits`` and ``labelled`` work as there. There is no temperature.
    """

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, alpha: float = 1.0, labelled=None):
        super().__init__(teacher, teacher_logits, temperature=1.0, alpha=alpha, labelled=labelled)

    def soft(self, out: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return logit_matching_loss(out, teacher_logits)

    def extra_repr(self) -> str:
        return super().extra_repr().replace("temperature=1.0, ", "")


class FocalDistillation(TeacherObjective):
    r"""Focal distillation from the model being replaced (Yan et al. 2021): fewer negative flips on an update.

    :math:`\mathrm{CE}(z, y) + \frac{1}{B}\sum_b (\beta_0 + \beta_1 [\arg\max v_b = y_b])\,T^2\,\mathrm{KL}_b`
    with the old model's logits :math:`v` (``teacher`` online or cached ``teacher_logits``): the samples the old
    model got right weigh ``base_weight + focal_weight``, the others ``base_weight``. See
    :func:`kdtutor.losses.focal_distillation_loss`.
    """

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 1.0,
                 base_weight: float = 1.0, focal_weight: float = 5.0):
        super().__init__(teacher, teacher_logits)
        self.temperature = checks.temperature(temperature)
        self.base_weight = checks.non_negative(base_weight, "base_weight")
        self.focal_weight = checks.non_negative(focal_weight, "focal_weight")

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return focal_distillation_loss_unchecked(out, self.teacher_logits(batch), batch.y, self.temperature,
                                                 self.base_weight, self.focal_weight)

    def extra_repr(self) -> str:
        return (f"{self.source()}, temperature={self.temperature}, base_weight={self.base_weight}, "
                f"focal_weight={self.focal_weight}")


class LearningWithoutForgetting(TeacherObjective):
    r"""Learning without Forgetting (Li & Hoiem 2016): new labels, and the old model's outputs for the old classes.

    :math:`\mathrm{CE}(z, y) + \lambda_o\,T^2\,\mathrm{KL}(\mathrm{softmax}(v/T) \,\|\,
    \mathrm{softmax}(z_{\mathrm{old}}/T))`, where the old model (``teacher`` online or cached ``teacher_logits``,
    run on the *new* training data) has fewer outputs than the student: ``old_classes`` maps its ``k``-th output to
    the student's class ``old_classes[k]``. The new data need hold no old class, so the cached logits are not
    checked for agreement with the labels. See :func:`kdtutor.losses.lwf_loss`.
    """

    check_alignment = False  # the old model cannot predict the new classes: disagreement with the labels is expected

    def __init__(self, old_classes, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 2.0,
                 lwf_weight: float = 1.0):
        super().__init__(teacher, teacher_logits)
        self.temperature = checks.temperature(temperature)
        self.lwf_weight = checks.non_negative(lwf_weight, "lwf_weight")
        self.register_buffer("old_classes", _as_class_index(old_classes), persistent=False)

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        checks.targets(batch.y, out)
        # the explicit class-count check of LwF: fewer old outputs than new classes is allowed, and mapped
        self.old_classes = old_class_index(self.old_classes, out, self.teacher_logits(batch)).to(out.device)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return lwf_loss_unchecked(out, self.teacher_logits(batch), batch.y, self.old_classes, self.temperature,
                                  self.lwf_weight)

    def extra_repr(self) -> str:
        return (f"{self.source()}, old_classes={self.old_classes.tolist()}, temperature={self.temperature}, "
                f"lwf_weight={self.lwf_weight}")


class DecoupledKD(TeacherObjective):
    r"""Decoupled KD (Zhao et al. 2022): :math:`\mathrm{CE} + w_{\mathrm{TC}}\,T^2\,\mathrm{TCKD} +
    w_{\mathrm{NC}}\,T^2\,\mathrm{NCKD}`, the target-class and non-target-class parts of KD weighted apart.

    The teacher's logits come from ``teacher`` online or cached ``teacher_logits`` (:class:`TeacherObjective`).
    See :func:`kdtutor.losses.dkd_loss`; the defaults are the paper's CIFAR-100 settings.
    """

    def __init__(self, teacher: nn.Module | None = None, teacher_logits=None, temperature: float = 4.0,
                 tckd_weight: float = 1.0, nckd_weight: float = 8.0):
        super().__init__(teacher, teacher_logits)
        self.temperature = checks.temperature(temperature)
        self.tckd_weight = checks.non_negative(tckd_weight, "tckd_weight")
        self.nckd_weight = checks.non_negative(nckd_weight, "nckd_weight")

    def check(self, out: torch.Tensor, batch: Batch) -> None:
        if out.ndim == 2 and out.shape[1] < 2:  # one class has no non-target classes: NCKD would be 0/0
            raise ValueError(f"model: DecoupledKD splits the classes into the target and the others, so it needs at "
                             f"least 2 outputs, got a model with {out.shape[1]}")
        super().check(out, batch)

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return dkd_loss_unchecked(out, self.teacher_logits(batch), batch.y, self.temperature, self.tckd_weight,
                                  self.nckd_weight)

    def extra_repr(self) -> str:
        return (f"{self.source()}, temperature={self.temperature}, tckd_weight={self.tckd_weight}, "
                f"nckd_weight={self.nckd_weight}")


class FeatureObjective(Objective):
    """Base of the objectives that learn from a teacher's *intermediate* features, cached in memory.

    ``teacher_features`` maps a teacher layer's name to its outputs for every training sample, in order (one row
    per sample, e.g. from :func:`~kdtutor.evaluation.compute_features`); ``pairs`` maps each student layer (a name
    in ``student.named_modules()``, recorded by ``fit``) to the teacher layer it learns from. The rows are looked up
    by the batch's sample indices, so no teacher runs during training; like cached logits, they belong to the
    un-augmented images. The objective returns its feature term only: add it to a loss on the labels or the logits
    with :class:`Sum`, e.g. ``Sum(Distillation(...), AttentionTransfer(...))``.
    """

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
        self.weight = checks.non_negative(weight, "weight")

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


class AttentionTransfer(FeatureObjective):
    r"""Attention transfer (Zagoruyko & Komodakis 2017): :math:`\beta \sum_{\mathrm{pairs}}
    \mathrm{mean}(Q(S) - Q(T))^2` with the paper's :math:`\beta = 1000` as ``weight``.

    See :func:`kdtutor.losses.attention_transfer_loss`. Paired layers must have the same height and width; their
    channel counts may differ.
    """

    def __init__(self, teacher_features: dict, pairs: dict, weight: float = 1000.0, p: float = 2.0):
        super().__init__(teacher_features, pairs, weight)
        self.p = checks.temperature(p, "p")

    def forward(self, out: torch.Tensor, batch: Batch, features) -> torch.Tensor:
        return self.weight * sum(attention_transfer_loss(features[s], self.teacher_features(batch, t), self.p)
                                 for s, t in self.pairs.items())


class FitNets(FeatureObjective):
    r"""FitNets hints (Romero et al. 2015): :math:`w \sum_{\mathrm{pairs}} \frac{1}{2}\mathrm{mean}((r(s) -
    t)^2)`, with one learned 1×1-convolution regressor :math:`r` per pair, trained with the student.

    The regressors are built when ``fit`` attaches the objective to the student (their widths come from one
    forward pass on two training images, in eval mode; their initial weights from ``fit``'s seed) and are trained
    by the same optimizer; they are not part of the student. A second ``fit`` on a student of the same widths
    continues with them; a student of other widths gets new ones.
    One stage, next to the other terms of the loss (the paper trained the hints first, in a stage of their own).
    See :func:`kdtutor.losses.hint_loss`.
    """

    def __init__(self, teacher_features: dict, pairs: dict, weight: float = 1.0):
        super().__init__(teacher_features, pairs, weight)
        self.regressors = nn.ModuleDict()

    def attach(self, model: nn.Module, train: OnDevice) -> None:
        x = next(train.batches(2)).x
        was_training = model.training
        model.eval()  # one pass to read the widths: no BatchNorm statistics updated, no gradients
        with torch.no_grad(), record_activations(model, self.features) as acts:
            model(x)
        model.train(was_training)
        widths = {}
        for s in self.pairs:
            checks.feature_maps(acts[s], f"pairs (the output of student layer {s!r})")
            widths[s] = acts[s].shape[1]
        if len(self.regressors) and all(self.regressors[_key(s)].in_channels == c for s, c in widths.items()):
            return  # a continued run on the same student: keep the trained regressors
        self.regressors = nn.ModuleDict({
            _key(s): nn.Conv2d(c, self.cache[self.pairs[s]].shape[1], kernel_size=1) for s, c in widths.items()
        })

    def forward(self, out: torch.Tensor, batch: Batch, features) -> torch.Tensor:
        return self.weight * sum(hint_loss(self.regressors[_key(s)](features[s]), self.teacher_features(batch, t))
                                 for s, t in self.pairs.items())


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

    def forward(self, out: torch.Tensor, batch: Batch, features=None) -> torch.Tensor:
        return sum(t(out, batch, features) for t in self.terms)


def _key(layer: str) -> str:
    return layer.replace(".", "_")  # ModuleDict keys cannot hold dots


def _as_features(rows, name: str) -> torch.Tensor:
    if not torch.is_tensor(rows) or not rows.is_floating_point() or rows.ndim < 2:
        raise ValueError(f"teacher_features: {name!r} should be a floating-point tensor with one row per training "
                         f"sample, got {getattr(rows, 'dtype', type(rows).__name__)} of shape "
                         f"{tuple(getattr(rows, 'shape', ()))}")
    return rows.detach().float()


def _as_class_index(old_classes) -> torch.Tensor:
    """LwF's ``old_classes`` as a tensor (a string such as ``"012"`` is refused: it is not a list of classes)."""
    try:
        index = None if isinstance(old_classes, (str, bytes)) else torch.as_tensor(old_classes)
    except (TypeError, ValueError, RuntimeError):
        index = None
    if index is None:  # the values themselves are checked against the logits on the first batch
        raise TypeError(f"old_classes: expected a sequence of integer class indices such as [0, 1, 2] (the student's "
                        f"class of each old output), got {old_classes!r}")
    return index


def _as_mask(mask) -> torch.Tensor:
    mask = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask)
    if mask.dtype != torch.bool or mask.ndim != 1:
        raise ValueError(f"labelled: expected a 1-D boolean mask over the training samples, got {mask.dtype} of shape "
                         f"{tuple(mask.shape)}")
    return mask


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
