r"""Checkers for the course exercises: a learner writes a function, a checker says whether it is right, and if not, why.

Each ``check_*`` takes the learner's function, calls it on seeded random and edge-case inputs (large logits, high
and low temperatures, a batch of one, float16 input, gradients), and compares what comes back with the package's
reference. It returns ``True`` and prints a short confirmation, or returns ``False`` and prints what is wrong, in
plain words where the mistake is a known one: "your loss is 1/T² of the reference — did you forget the T² factor?".

The learner's mistakes never raise (stored notebook outputs carry no tracebacks): an unfilled skeleton (it raises
``NotImplementedError`` or returns ``None``) is reported as *not implemented yet*, and any other exception inside the
learner's function is caught and reported with its message. Only passing something that is not a function raises
(``TypeError``). The inputs come from the checker's own seeded generator: the verdict is the same on every run, and
the learner's random state is left alone. Warnings raised inside the learner's function are silenced.

Tolerances (``torch.allclose``): float32 results must match the reference, computed in float64, to ``RTOL`` and
``ATOL``; results of float16 inputs are compared with the reference computed at full precision on the same (rounded)
inputs, to ``HALF_TOL``; a pruned pair's output with the original pair's to ``RTOL`` and ``CONV_ATOL``; an int8
scale with :math:`\max|x|/127` to ``SCALE_RTOL``, its ``q`` exactly.

    import torch
    from kdtutor import course

    def my_soft_targets(logits, temperature):
        return torch.softmax(logits / temperature, dim=-1)

    course.check_soft_targets(my_soft_targets)  # prints "check_soft_targets: correct ✓ (...)", returns True
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor.evaluation.flips import negative_flip_rate
from kdtutor.losses import attention_map, distillation_loss, forward_kl, kd_loss, reverse_kl, soft_targets

__all__ = [
    "ATOL", "CONV_ATOL", "HALF_TOL", "RTOL", "SCALE_RTOL",
    "check_attention_map", "check_distillation_loss", "check_int8_round_trip", "check_kd_loss",
    "check_negative_flip_rate", "check_prune_step", "check_reverse_kl", "check_soft_target_gradient",
    "check_soft_targets", "checker_seconds",
]

RTOL, ATOL = 1e-4, 1e-6  # float32 results against the float64 reference (a float32 sum, times T² up to 400)
HALF_TOL = 1e-2          # results of float16 inputs against the float32 reference (relative and absolute)
CONV_ATOL = 1e-5         # the pruned pair's float32 output (sums of up to 72 products) against the original pair's
SCALE_RTOL = 1e-5        # the int8 scale against max|x| / 127 (relative)

# what the diagnoses say, shared by the checkers whose exercises can make the same mistake
NO_T2 = "your loss is 1/T² of the reference — did you forget the T² factor?"
T_NOT_T2 = "your loss is 1/T of the reference: the factor is T², not T"
MEAN = "your loss is 1/C of the reference (C = {c} classes): use reduction='batchmean', not 'mean'"
SUM = "your loss is B times the reference (B = {b} images): average over the batch (reduction='batchmean')"
NEGATIVE = ("your loss is negative, and a KL divergence never is: pass log-probabilities to kl_div (log_softmax), "
            "as its first argument")
REVERSED = ("you computed KL(student ‖ teacher), the reverse direction: the teacher's soft targets are the target "
            "(kl_div's second argument), the student's log-probabilities the input")
NO_T_SOFTMAX = "your soft targets ignore the temperature: divide both logits by T before the softmax"
OVERFLOW = ("your function gives inf or nan for large logits: exp overflows; subtract each row's maximum before exp, "
            "or use torch.softmax")
TWICE_T2 = "your loss is T² times the reference: the T² factor is applied twice (kd_loss already includes it)"
SIGN = "your loss is negative: it has the wrong sign — KL(p ‖ q) = sum p (log p - log q), never negative"
NAN_KL = ("your loss is inf or nan: if kl_div's target is log-probabilities, pass log_target=True (or pass "
          "probabilities); and take log-probabilities with log_softmax, not log(softmax(...)), which is -inf for "
          "large logits")


# --- the machinery: call the learner's function, compare, report ---------------------------------------------------

class _NotYet(Exception):
    """The learner's function is still the skeleton."""


class _Wrong(Exception):
    """A case the learner's function got wrong; the message says what, and why where the mistake is known."""


class _Raised(Exception):
    """The learner's function raised; ``args`` = (the exception, the case it raised on)."""


def _caller(fn: Callable) -> Callable:
    """``call(case, *args)``: the learner's ``fn(*args)``, its exceptions wrapped with the case that raised them."""
    first = [True]

    def call(case: str, *args):
        try:
            out = fn(*args)
        except NotImplementedError as err:
            if first[0]:
                raise _NotYet from None
            raise _Raised(err, case) from None  # it works on some inputs: not a skeleton
        except Exception as err:  # anything the learner's code raises is reported, never re-raised
            raise _Raised(err, case) from None
        if out is None:
            if first[0]:
                raise _NotYet
            raise _Wrong(f"your function returned None ({case})")
        first[0] = False
        return out

    return call


def _run(name: str, fn, cases: Callable[[Callable], str]) -> bool:
    """Run ``cases(call)`` (it raises ``_Wrong`` on the first wrong case, else returns a summary) and report."""
    if not callable(fn):
        raise TypeError(f"fn: expected the function to check, got {type(fn).__name__} {fn!r:.60}")
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):  # the learner's RNG state is restored
            warnings.simplefilter("ignore")
            summary = cases(_caller(fn))
    except _NotYet:
        print(f"{name}: not implemented yet — fill in the function above and run this cell again.")
        return False
    except _Wrong as wrong:
        print(f"{name}: {wrong}")
        return False
    except _Raised as raised:
        err, case = raised.args
        hint = ""
        if "Half" in str(err) or "float16" in str(err):
            hint = " — it fails on float16 input: upcast to float32 with .float() first"
        print(f"{name}: your function raised {type(err).__name__} ({case}): {err}{hint}")
        return False
    except Exception as err:  # what the learner's function returned could not be used as the exercise asks
        print(f"{name}: what your function returned could not be used: {type(err).__name__}: {err}")
        return False
    print(f"{name}: correct ✓ ({summary})")
    return True


def _tensor(out, case: str, shape: tuple | None = None) -> torch.Tensor:
    """``out`` as a float64 tensor (a number becomes a 0-d tensor), checked against ``shape``."""
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        out = torch.tensor(float(out))
    if not torch.is_tensor(out):
        raise _Wrong(f"expected a tensor, got {type(out).__name__} ({case})")
    if shape is not None and tuple(out.shape) != tuple(shape):
        if shape == () and out.numel() != 1:
            raise _Wrong(f"return one number for the batch: your function returned a tensor of shape "
                         f"{tuple(out.shape)} ({case})")
        if shape != () or out.numel() != 1:
            raise _Wrong(f"expected shape {tuple(shape)}, got {tuple(out.shape)} ({case})")
    return out.detach().double().reshape(shape if shape is not None else out.shape)


def _close(a: torch.Tensor, b: torch.Tensor, tol: tuple[float, float] = (RTOL, ATOL)) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=tol[0], atol=tol[1])


def _preview(x: torch.Tensor) -> str:
    values = x.flatten()[:4].tolist()
    return ", ".join(f"{v:.6g}" for v in values) + (", …" if x.numel() > 4 else "")


def _expect(case: str, got: torch.Tensor, want: torch.Tensor, known: dict[str, torch.Tensor | Callable],
            tol: tuple[float, float] = (RTOL, ATOL), nonfinite: str | None = None) -> None:
    """Pass if ``got`` matches ``want``; else name the known mistake it matches, or show both values.

    ``known`` maps each diagnosis to the value that mistake gives, or to a test ``got -> bool`` that spots it; the
    first that matches is reported."""
    if _close(got, want, tol):
        return
    if not torch.isfinite(got).all():
        raise _Wrong(nonfinite or f"your function gives inf or nan ({case}): compute in a numerically stable way "
                     "(log_softmax, or subtract each row's maximum before exp)")
    for diagnosis, value in known.items():
        if value(got) if callable(value) else _close(got, value, tol):
            raise _Wrong(f"{diagnosis} ({case})")
    if _close(got, want, (1e-2, tol[1])):
        raise _Wrong(f"close, but not within the tolerance ({case}): expected {_preview(want)}; got {_preview(got)}. "
                     "Compute in float32 or wider, and for large logits take log-probabilities with log_softmax "
                     "rather than log(softmax(...))")
    raise _Wrong(f"wrong values ({case}): expected {_preview(want)}; got {_preview(got)}")


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def _signs(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Random ±1."""
    return torch.randint(0, 2, shape, generator=g) * 2.0 - 1


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) per row, from log-probabilities, in float64 (the checkers' independent arithmetic)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _logit_cases(g: torch.Generator, batch: int = 12, classes: int = 10):
    """(case, student logits, teacher logits, T): random at T = 1, 4, 20; logits of ±50; a batch of one.

    The batch (12) equals no T² of the cases, so a batch sum and a doubled T² cannot be confused."""
    for t in (1.0, 4.0, 20.0):
        yield f"random logits at T = {t:g}", _randn(g, batch, classes, scale=3), _randn(g, batch, classes, scale=3), t
    yield "logits of ±50 at T = 1", 50 * _signs(g, batch, classes), 50 * _signs(g, batch, classes), 1.0
    yield "a batch of one at T = 2", _randn(g, 1, classes, scale=3), _randn(g, 1, classes, scale=3), 2.0


def _kd_variants(z: torch.Tensor, v: torch.Tensor, t: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference distillation loss (float64, by formula) and the values the known mistakes give."""
    b, c = z.shape
    log_q, log_p = F.log_softmax(z.double() / t, -1), F.log_softmax(v.double() / t, -1)
    kl = _kl(log_p, log_q).mean()
    probs = (log_p.exp() * (log_p - log_q.exp())).sum(-1).mean()  # kl_div fed probabilities, not log-probabilities
    at_1 = _kl(F.log_softmax(v.double(), -1), F.log_softmax(z.double(), -1)).mean()
    want = kl * t * t
    return want, {NO_T2: kl, T_NOT_T2: kl * t, TWICE_T2: want * t * t, MEAN.format(c=c): want / c,
                  f"{MEAN.format(c=c)}; and {NO_T2}": kl / c,
                  SUM.format(b=b): want * b, NEGATIVE: probs * t * t, REVERSED: _kl(log_q, log_p).mean() * t * t,
                  NO_T_SOFTMAX: at_1 * t * t}


def _loss_case(call, case: str, args: tuple, want: torch.Tensor, known: dict[str, torch.Tensor],
               tol: tuple[float, float] = (RTOL, ATOL)) -> None:
    """One case of a loss exercise: one number, never negative, equal to ``want`` (or a known mistake named)."""
    got = _tensor(call(case, *(a.clone() if torch.is_tensor(a) else a for a in args)), case, ())
    if got < -1e-6:
        raise _Wrong(f"{SIGN if _close(got, -want) else NEGATIVE} ({case})")
    _expect(case, got, want, known, tol, nonfinite=f"{NAN_KL} ({case})")


def _gradient_case(call, case: str, args: tuple, reference: Callable) -> None:
    """The learner's loss must carry autograd's gradient of ``reference(*args)`` to the student's logits ``args[0]``."""
    z = args[0].clone().requires_grad_()
    loss = call(case, z, *args[1:])
    got = None
    if torch.is_tensor(loss) and loss.grad_fn is not None:
        (got,) = torch.autograd.grad(loss.sum(), z, allow_unused=True)
    if got is None:
        raise _Wrong(f"your loss carries no gradient to the student's logits: do not detach them or convert to "
                     f"numbers ({case})")
    zr = args[0].clone().requires_grad_()
    (want,) = torch.autograd.grad(reference(zr, *args[1:]), zr)
    _expect(case, got, want, {})


# --- Part I: soft targets, the distillation loss, its gradient -----------------------------------------------------

def check_soft_targets(fn) -> bool:
    r"""Check ``fn(logits, temperature)`` :math:`= \mathrm{softmax}(z/T)` over the last dimension.

    The reference is :func:`~kdtutor.losses.soft_targets`.

    Cases: random ``12 x 10`` logits at :math:`T` = 1, 4 and 20; logits of ±50 and ±100 (where a naive ``exp``
    overflows float32); a batch of one; float16 logits of ±50.
    Diagnoses: inf or nan for large logits (an unstable exp); the temperature ignored; logits multiplied by
    :math:`T`; the softmax over the wrong dimension; rows that do not sum to 1.
    """
    def cases(call):
        g = torch.Generator().manual_seed(0)
        for case, z, _, t in _logit_cases(g):
            got = _tensor(call(case, z.clone(), t), case, z.shape)
            known = {"your output does not depend on the temperature: divide the logits by T before the softmax":
                     F.softmax(z.double(), -1),
                     "you multiplied the logits by T: divide them by T": F.softmax(z.double() * t, -1),
                     "your softmax runs over the wrong dimension: use dim=-1 (the classes)":
                     F.softmax(z.double() / t, 0),
                     "your rows do not sum to 1: divide by the sum over the classes (dim=-1), or use torch.softmax":
                     lambda p: not _close(p.sum(-1), torch.ones(len(p), dtype=torch.float64))}
            _expect(case, got, soft_targets(z.double(), t), known, nonfinite=f"{OVERFLOW} ({case})")
        z = 100 * _signs(g, 12, 10)
        case = "logits of ±100 at T = 1"  # exp(100) overflows float32: a naive exp gives inf / inf
        _expect(case, _tensor(call(case, z.clone(), 1.0), case, z.shape), soft_targets(z.double(), 1.0), {},
                nonfinite=f"{OVERFLOW} ({case})")
        z = 50 * _signs(g, 12, 10).half()
        case = "float16 logits of ±50 at T = 4"
        got = _tensor(call(case, z.clone(), 4.0), case, z.shape)
        _expect(case, got, soft_targets(z.double(), 4.0), {}, (HALF_TOL, HALF_TOL), f"{OVERFLOW} ({case})")
        return ("7 cases: random logits at T = 1, 4 and 20, logits of ±50 and ±100, a batch of one, float16 logits "
                "of ±50")

    return _run("check_soft_targets", fn, cases)


def check_kd_loss(fn) -> bool:
    r"""Check ``fn(student_logits, teacher_logits, temperature)`` against :func:`~kdtutor.losses.kd_loss`.

    The loss is :math:`T^2 \, \mathrm{KL}(\mathrm{softmax}(v/T) \,\|\, \mathrm{softmax}(z/T))` averaged over the
    batch (Hinton, Vinyals & Dean 2015). Cases: random logits at :math:`T` = 1, 4 and 20; logits of ±50; a batch of
    one; float16 logits; the gradient with respect to the student's logits (against autograd on the reference).
    Diagnoses: the :math:`T^2` factor missing (or :math:`T` in its place, or applied twice); ``reduction='mean'``
    (1/C of the reference); a sum over the batch; probabilities passed to ``kl_div`` (a negative loss); the sign
    flipped; a nan from log-probabilities passed as ``kl_div``'s target without ``log_target=True``; the reverse
    direction KL(student ‖ teacher); the temperature missing from the softmax; a non-scalar loss; no gradient
    reaching the student's logits; a wrong gradient.
    """
    def cases(call):
        g = torch.Generator().manual_seed(1)
        for case, z, v, t in _logit_cases(g):
            _loss_case(call, case, (z, v, t), kd_loss(z.double(), v.double(), t), _kd_variants(z, v, t)[1])
        z, v = _randn(g, 12, 10, scale=3).half(), _randn(g, 12, 10, scale=3).half()
        _loss_case(call, "float16 logits at T = 4", (z, v, 4.0), kd_loss(z.double(), v.double(), 4.0), {},
                   (HALF_TOL, HALF_TOL))
        _gradient_case(call, "the gradient with respect to the student's logits at T = 4",
                       (_randn(g, 8, 10, scale=3), _randn(g, 8, 10, scale=3), 4.0), kd_loss)
        return "7 cases: random logits at T = 1, 4 and 20, logits of ±50, a batch of one, float16 logits, the gradient"

    return _run("check_kd_loss", fn, cases)


def check_soft_target_gradient(fn) -> bool:
    r"""Check ``fn(student_logits, teacher_logits, temperature)`` = the gradient of the distillation loss, by hand.

    The gradient of :func:`~kdtutor.losses.kd_loss` with respect to the student's logits is
    :math:`T (q - p) / B` (Hinton's :math:`(q - p)/T` times :math:`T^2`, over a batch of :math:`B`); it is checked
    against autograd on the reference loss. Cases: random logits at :math:`T` = 1, 4 and 20; logits of ±50; a batch
    of one. Diagnoses: the :math:`1/B` missing; :math:`(q - p)/T` without the :math:`T^2`; :math:`(q - p)/B`
    without the :math:`T`; the sign flipped; the temperature missing from the softmax.
    """
    def cases(call):
        g = torch.Generator().manual_seed(2)
        for case, z, v, t in _logit_cases(g):
            got = _tensor(call(case, z.clone(), v.clone(), t), case, z.shape)
            zr = z.double().requires_grad_()
            (want,) = torch.autograd.grad(kd_loss(zr, v.double(), t), zr)
            b = z.shape[0]
            q1, p1 = F.softmax(z.double(), -1), F.softmax(v.double(), -1)
            known = {f"your gradient is B times autograd's (B = {b}): divide by the batch size, the loss averages "
                     "over the batch": want * b,
                     "your gradient is 1/T² of autograd's: that is Hinton's (q - p)/T for the loss without T²; "
                     "with T² it is T (q - p) / B": want / (t * t),
                     "your gradient is 1/T of autograd's: multiply by T (T² from the loss, 1/T from the softmax)":
                     want / t,
                     "the sign is flipped: the gradient is T (q - p) / B, the student's minus the teacher's": -want,
                     "your q and p ignore the temperature: use softmax(z / T)": t * (q1 - p1) / b}
            _expect(case, got, want, known)
        return "5 cases, against autograd: random logits at T = 1, 4 and 20, logits of ±50, a batch of one"

    return _run("check_soft_target_gradient", fn, cases)


# --- Part II: distillation with labels, attention maps -------------------------------------------------------------

def check_distillation_loss(fn) -> bool:
    r"""Check ``fn(student_logits, teacher_logits, targets, temperature, alpha)``.

    The reference is :func:`~kdtutor.losses.distillation_loss`.

    The loss is :math:`\alpha \, T^2\,\mathrm{KL}(p^T \| q^T) + (1 - \alpha)\,\mathrm{CE}(z, y)`, the cross-entropy
    at :math:`T = 1`. Cases: :math:`(T, \alpha)` = (4, 0.9), (1, 0.5), (4, 0), (4, 1), (20, 0.5); a batch of one;
    logits of ±50; float16 logits; the gradient against autograd. Diagnoses: :math:`\alpha` and :math:`1 - \alpha`
    swapped; the cross-entropy computed at temperature :math:`T`; and, in the soft term, each mistake
    :func:`check_kd_loss` names; a non-scalar loss; no gradient reaching the student's logits.
    """
    def cases(call):
        g = torch.Generator().manual_seed(3)
        settings = [(4.0, 0.9, 12, 3), (1.0, 0.5, 12, 3), (4.0, 0.0, 12, 3), (4.0, 1.0, 12, 3), (20.0, 0.5, 12, 3),
                    (2.0, 0.7, 1, 3), (1.0, 0.5, 12, 50)]
        for t, a, b, scale in settings:
            case = f"T = {t:g}, alpha = {a:g}" + (", a batch of one" if b == 1 else "")
            case += ", logits of ±50" if scale == 50 else ""
            z, v = (_signs(g, b, 10) * 50, _signs(g, b, 10) * 50) if scale == 50 else \
                (_randn(g, b, 10, scale=3), _randn(g, b, 10, scale=3))
            y = torch.randint(0, 10, (b,), generator=g)
            soft, wrong_soft = _kd_variants(z, v, t)
            hard = F.cross_entropy(z.double(), y)
            known = {"you swapped alpha and 1 - alpha: alpha weighs the soft targets, 1 - alpha the labels":
                     (1 - a) * soft + a * hard,
                     "your cross-entropy uses the temperature: compute it on the raw logits (T = 1)":
                     a * soft + (1 - a) * F.cross_entropy(z.double() / t, y)}
            known |= {m: a * s + (1 - a) * hard for m, s in wrong_soft.items()}
            _loss_case(call, case, (z, v, y, t, a), distillation_loss(z.double(), v.double(), y, t, a), known)
        z, v = _randn(g, 12, 10, scale=3).half(), _randn(g, 12, 10, scale=3).half()
        y = torch.randint(0, 10, (12,), generator=g)
        _loss_case(call, "float16 logits, T = 4, alpha = 0.9", (z, v, y, 4.0, 0.9),
                   distillation_loss(z.double(), v.double(), y, 4.0, 0.9), {}, (HALF_TOL, HALF_TOL))
        _gradient_case(call, "the gradient with respect to the student's logits, T = 4, alpha = 0.5",
                       (_randn(g, 8, 10, scale=3), _randn(g, 8, 10, scale=3), y[:8], 4.0, 0.5), distillation_loss)
        return ("9 cases: (T, alpha) = (4, 0.9), (1, 0.5), (4, 0), (4, 1), (20, 0.5), a batch of one, logits of ±50, "
                "float16 logits, the gradient")

    return _run("check_distillation_loss", fn, cases)


def check_attention_map(fn) -> bool:
    r"""Check ``fn(features)`` against :func:`~kdtutor.losses.attention_map` with :math:`p = 2`.

    For feature maps ``B x C x H x W``: per image, the mean over channels of :math:`A_c^2`, flattened to ``H * W``
    values, scaled to unit length (Zagoruyko & Komodakis 2017). A sum over channels is accepted (the same after
    scaling). Cases: random activations of both signs, ``4 x 8 x 5 x 5``, a batch of one, ``3 x 6`` maps.
    Diagnoses: not flattened; rows not of unit length; scaled over the batch instead of per image; :math:`|A|`
    (:math:`p = 1`) instead of :math:`A^2`; the raw activations averaged.
    """
    def cases(call):
        g = torch.Generator().manual_seed(4)
        for case, shape in (("4 x 8 x 5 x 5 features", (4, 8, 5, 5)), ("a batch of one", (1, 8, 5, 5)),
                            ("3 x 6 feature maps", (4, 8, 3, 6))):
            f = _randn(g, *shape)
            b, _, h, w = shape
            out = call(case, f.clone())
            if torch.is_tensor(out) and tuple(out.shape) == (b, h, w):
                raise _Wrong(f"flatten each map: expected shape {(b, h * w)}, got {tuple(out.shape)} ({case})")
            got = _tensor(out, case, (b, h * w))
            want = attention_map(f.double())
            energy = f.double().pow(2).mean(1).flatten(1)
            if not _close(got, want) and _close(got, F.normalize(energy, dim=0)):
                raise _Wrong(f"you scaled over the batch (dim=0): scale each image's row (dim=1) ({case})")
            if not _close(got.norm(dim=1), torch.ones(b, dtype=torch.float64)):
                raise _Wrong(f"your rows are not of unit length: scale each image's row with F.normalize(..., dim=1) "
                             f"({case})")
            known = {"you used |A| (p = 1): square the activations (p = 2)":
                     F.normalize(f.double().abs().mean(1).flatten(1), dim=1),
                     "you averaged the raw activations: square them first (p = 2)":
                     F.normalize(f.double().mean(1).flatten(1), dim=1)}
            _expect(case, got, want, known)
        return "3 cases: activations of both signs, a batch of one, maps of 3 x 6"

    return _run("check_attention_map", fn, cases)


# --- Part III: a structured-pruning step, an int8 round trip -------------------------------------------------------

def _conv(g: torch.Generator, c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(_randn(g, *conv.weight.shape, scale=0.3) * torch.rand(c_out, 1, 1, 1, generator=g))
        conv.bias.copy_(_randn(g, c_out, scale=0.1))
    return conv


def check_prune_step(fn) -> bool:
    r"""Check ``fn(first, second, keep)``: one structured-pruning step for the pair ``second(relu(first(x)))``.

    The learner keeps the ``keep`` output channels of ``first`` whose filters have the largest L2 norm, in their
    original order, and returns two new ``nn.Conv2d``: ``first`` without the other channels (weight and bias) and
    ``second`` without the matching input channels; the layers passed in stay unchanged. The oracle: the pruned
    pair's output equals the original pair's with the removed channels zeroed after the ReLU. Cases: 3 → 8 → 5
    channels keeping 5, 1 and all 8. Diagnoses: not two ``nn.Conv2d``; the input layers modified; a wrong number of
    channels; ``second``'s input channels not removed; weights sliced but ``out_channels`` / ``in_channels`` left at
    the old sizes; the smallest filters kept; filters ranked by their L1 norm; the channel order changed;
    ``first``'s bias not pruned; a wrong output.
    """
    def cases(call):
        g = torch.Generator().manual_seed(5)
        first, second = _conv(g, 3, 8), _conv(g, 8, 5)
        x = _randn(g, 2, 3, 6, 6)
        norms = first.weight.detach().flatten(1).norm(dim=1)
        for keep in (5, 1, 8):
            case = f"keeping {keep} of 8 channels"
            before = copy.deepcopy((first.state_dict(), second.state_dict()))
            out = call(case, first, second, keep)
            if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(m, nn.Conv2d) for m in out)):
                raise _Wrong(f"return two nn.Conv2d layers, (first, second); got {type(out).__name__} ({case})")
            if not all(torch.equal(a, b) for old, m in zip(before, (first, second), strict=True)
                       for a, b in zip(old.values(), m.state_dict().values(), strict=True)):
                raise _Wrong(f"you changed the layers you were given: build new ones ({case})")
            new_first, new_second = out
            n_out, n_in = new_first.weight.shape[0], new_second.weight.shape[1]  # what the weights hold
            if n_out != keep:
                raise _Wrong(f"first keeps {n_out} output channels, expected keep = {keep} ({case})")
            if n_in != keep:
                raise _Wrong(f"second still has {n_in} input channels: remove those that match the removed filters, "
                             f"second.weight[:, kept] ({case})")
            if (new_first.out_channels, new_second.in_channels) != (keep, keep):
                raise _Wrong(f"the weights are pruned, but first.out_channels = {new_first.out_channels} and "
                             f"second.in_channels = {new_second.in_channels} still give the old sizes: build new "
                             f"nn.Conv2d layers of the new sizes, or update these attributes ({case})")
            kept = norms.topk(keep).indices.sort().values
            wrong = {"you kept the filters with the smallest norm: keep those with the largest L2 norm":
                     norms.topk(keep, largest=False).indices.sort().values,
                     "you ranked the filters by their L1 norm: the exercise asks for the L2 norm":
                     first.weight.detach().flatten(1).abs().sum(1).topk(keep).indices.sort().values}
            weight = new_first.weight.detach()
            for diagnosis, idx in wrong.items():
                if not torch.equal(idx, kept) and _close(weight, first.weight.detach()[idx]):
                    raise _Wrong(f"{diagnosis} ({case})")
            if not _close(weight, first.weight.detach()[kept]):
                if _close(weight, first.weight.detach()[norms.topk(keep).indices]):
                    raise _Wrong(f"the channel order changed: keep the original order (sort the kept indices) ({case})")
                raise _Wrong(f"first's filters are not the {keep} with the largest L2 norm ({case})")
            if new_first.bias is None or not _close(new_first.bias.detach(), first.bias.detach()[kept]):
                raise _Wrong(f"first's bias was not pruned with its filters: use first.bias[kept] ({case})")
            mask = torch.zeros(8)
            mask[kept] = 1
            with torch.no_grad():
                want = second(F.relu(first(x)) * mask[:, None, None])
                got = new_second(F.relu(new_first(x)))
            _expect(case, got, want, {}, (RTOL, CONV_ATOL))
        return "3 cases: 3 -> 8 -> 5 channels, keeping 5, 1 and all 8; outputs against the original pair"

    return _run("check_prune_step", fn, cases)


def check_int8_round_trip(fn) -> bool:
    r"""Check ``fn(x) -> (q, scale)``: symmetric per-tensor int8 quantization.

    ``scale`` :math:`= \max|x| / 127` and ``q`` :math:`= \mathrm{clamp}(\mathrm{round}(x / s), -127, 127)` as
    ``torch.int8``, so that ``q.float() * scale`` is within ``scale / 2`` of ``x``. For an all-zero tensor any
    positive scale is accepted, with ``q`` all zero. Cases: 64 normal values, a 16 x 8 weight, values with one
    outlier, an all-zero tensor. Diagnoses: ``q`` not ``torch.int8`` (float, or uint8); 255 or 128 levels in the
    scale; an asymmetric (min-max) scale; truncation or floor instead of rounding; no clamp (values wrap around);
    a zero scale for an all-zero tensor.
    """
    def cases(call):
        g = torch.Generator().manual_seed(6)
        outlier = _randn(g, 100, scale=0.1)
        outlier[17] = 5.0
        for case, x in (("64 normal values", _randn(g, 64)), ("a 16 x 8 weight", _randn(g, 16, 8, scale=0.05)),
                        ("values with one outlier", outlier), ("an all-zero tensor", torch.zeros(32))):
            out = call(case, x.clone())
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise _Wrong(f"return a pair (q, scale); got {type(out).__name__} ({case})")
            q, scale = out
            if not torch.is_tensor(q) or q.dtype != torch.int8:
                kind = q.dtype if torch.is_tensor(q) else type(q).__name__
                why = " (uint8 holds 0 to 255, no negative values)" if kind == torch.uint8 else ""
                raise _Wrong(f"q must be a torch.int8 tensor, got {kind}{why}: cast with .to(torch.int8) after "
                             f"rounding and clamping ({case})")
            if q.shape != x.shape:
                raise _Wrong(f"q has shape {tuple(q.shape)}, expected that of x, {tuple(x.shape)} ({case})")
            s = float(scale)
            top = x.abs().max().item()
            if top == 0:
                if not (s > 0 and s < float("inf")) or q.any():
                    raise _Wrong(f"for an all-zero tensor, use any positive scale (e.g. 1.0) and q all zero; got "
                                 f"scale {s} ({case})")
                continue
            scales = {"your scale uses 255 levels: the symmetric int8 range is [-127, 127], so scale = max|x| / 127":
                      top / 255, "your scale divides by 128: use max|x| / 127, so that both ends fit": top / 128,
                      "your scale is asymmetric ((max - min) / 255): use the symmetric max|x| / 127":
                      (x.max() - x.min()).item() / 255}
            if abs(s - top / 127) > SCALE_RTOL * top / 127:
                for diagnosis, value in scales.items():
                    if abs(s - value) <= SCALE_RTOL * value:
                        raise _Wrong(f"{diagnosis} ({case})")
                raise _Wrong(f"scale should be max|x| / 127 = {top / 127:.6g}, got {s:.6g} ({case})")
            ratio = x.double() / s
            want = ratio.round().clamp(-127, 127)
            got = q.double()
            if torch.equal(got, want):
                continue
            for diagnosis, value in {"you truncated x / scale towards zero: round to the nearest integer with "
                                     "torch.round": ratio.trunc(),
                                     "you rounded down (floor): round to the nearest integer with torch.round":
                                     ratio.floor()}.items():
                if torch.equal(got, value.clamp(-128, 127)):
                    raise _Wrong(f"{diagnosis} ({case})")
            if ((got * want) < 0).any():
                raise _Wrong(f"values wrapped around to the other sign: clamp to [-127, 127] before casting ({case})")
            raise _Wrong(f"q differs from round(x / scale) at {int((got != want).sum())} of {x.numel()} values "
                         f"({case})")
        return "4 cases: normal values, a weight matrix, one outlier, all zeros; q exact, scale to 1e-5"

    return _run("check_int8_round_trip", fn, cases)


# --- Part IV: regressions of an update -----------------------------------------------------------------------------

def check_negative_flip_rate(fn) -> bool:
    r"""Check ``fn(old_pred, new_pred, targets)`` against :func:`~kdtutor.evaluation.negative_flip_rate`.

    The share of *all* samples that the old model got right and the new one gets wrong (Yan et al. 2021), a number
    in :math:`[0, 1]` (a 0-d tensor is accepted). Cases: 200 random predictions of 10 classes, an update that
    breaks nothing, a single sample. Diagnoses: every changed prediction counted; positive flips counted instead;
    divided by the samples the old model got right; a percentage.
    """
    def cases(call):
        g = torch.Generator().manual_seed(7)
        y = torch.randint(0, 10, (200,), generator=g)

        def noisy(p):  # predictions right with probability p
            return torch.where(torch.rand(200, generator=g) < p, y, torch.randint(0, 10, (200,), generator=g))

        old, new = noisy(0.7), noisy(0.8)
        for case, o, n, t in (("200 samples", old, new, y), ("an update that breaks nothing", old, y, y),
                              ("a single sample", y[:1], (y[:1] + 1) % 10, y[:1])):
            got = _tensor(call(case, o.clone(), n.clone(), t.clone()), case, ())
            want = torch.tensor(negative_flip_rate(o, n, t), dtype=torch.float64)
            right_before = (o == t).double()
            known = {"you counted every changed prediction: count only those right before and wrong after":
                     (o != n).double().mean(),
                     "you counted positive flips (wrong before, right after): a negative flip is right before and "
                     "wrong after": ((o != t) & (n == t)).double().mean(),
                     "you divided by the samples the old model got right: divide by all samples":
                     ((o == t) & (n != t)).double().sum() / right_before.sum().clamp(min=1),
                     "your rate is a percentage: return a fraction in [0, 1]": want * 100}
            _expect(case, got, want, known)
        return "3 cases: 200 random predictions, an update that breaks nothing, a single sample"

    return _run("check_negative_flip_rate", fn, cases)


# --- Part V: the reverse KL of a language model ----------------------------------------------------------------------

def check_reverse_kl(fn) -> bool:
    r"""Check ``fn(student_logits, teacher_logits)`` against :func:`~kdtutor.losses.reverse_kl` (no mask, T = 1).

    For logits ``(batch, length, vocabulary)``: :math:`\mathrm{KL}(q \,\|\, p)` from the student's next-token
    distribution to the teacher's at every position, averaged over all positions, in nats. Cases: random
    ``4 x 6 x 12`` logits, logits of ±50, one sequence of one position. Diagnoses: the forward direction; a sum over
    positions, over the batch, or both; a mean over the vocabulary instead of a sum; a negative value.
    """
    def cases(call):
        g = torch.Generator().manual_seed(8)
        random = [_randn(g, 4, 6, 12, scale=2) for _ in range(2)]
        one = [_randn(g, 1, 1, 12, scale=2) for _ in range(2)]
        for case, z, v in (("random 4 x 6 x 12 logits", *random),
                           ("logits of ±50", 50 * _signs(g, 4, 6, 12), 50 * _signs(g, 4, 6, 12)),
                           ("one sequence of one position", *one)):
            got = _tensor(call(case, z.clone(), v.clone()), case, ())
            want = reverse_kl(z.double(), v.double())
            if got < -1e-6 and _close(got, -want):
                raise _Wrong(f"your KL is negative: it has the wrong sign — KL(q ‖ p) = sum q (log q - log p) "
                             f"({case})")
            if got < -1e-6:
                raise _Wrong(f"your KL is negative, and a KL divergence never is: compare log-probabilities "
                             f"(log_softmax) and weigh by the student's probabilities ({case})")
            b, n, vocab = z.shape
            known = {"you computed KL(teacher ‖ student), the forward direction: the reverse KL weighs by the "
                     "student's q, sum q (log q - log p)": forward_kl(z.double(), v.double()),
                     f"you summed over the positions (L = {n}): average over all batch x length positions": want * n,
                     f"you summed over the batch (B = {b}): average over all batch x length positions": want * b,
                     "you summed over batch and positions: average over them": want * b * n,
                     "you averaged over the vocabulary: a KL sums over the outcomes, then average over positions":
                     want / vocab}
            _expect(case, got, want, known)
        return "3 cases: random logits, logits of ±50, one sequence of one position"

    return _run("check_reverse_kl", fn, cases)


def checker_seconds(check: Callable[[Callable], bool], fn: Callable) -> float:
    """Wall-clock seconds ``check(fn)`` takes, its report silenced: what an exercise's checker costs a learner.

    For the instructor's page, which lists how long each checker ran on its solution. Raises ``ValueError`` when
    the checker does not pass ``fn`` (time a right answer, so that every case runs).
    """
    if not callable(check):
        raise TypeError(f"check: expected a checker such as course.check_kd_loss, got {type(check).__name__}")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as report:
        passed = check(fn)
    seconds = time.perf_counter() - start
    if passed is not True:
        raise ValueError(f"fn: {getattr(check, '__name__', 'the checker')} did not pass it, so not every case ran; "
                         f"time a right answer. The checker said: {report.getvalue().strip()}")
    return seconds
