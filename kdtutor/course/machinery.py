"""The course checkers' machinery: the tolerances, the diagnoses they share, and the functions that call a learner's
function safely, compare what it returns with a reference and report in plain words.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

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

class NotYet(Exception):
    """The learner's function is still the skeleton."""


class Wrong(Exception):
    """A case the learner's function got wrong; the message says what, and why where the mistake is known."""


class Raised(Exception):
    """The learner's function raised; ``args`` = (the exception, the case it raised on)."""


def caller(fn: Callable) -> Callable:
    """``call(case, *args)``: the learner's ``fn(*args)``, its exceptions wrapped with the case that raised them."""
    first = [True]

    def call(case: str, *args):
        try:
            out = fn(*args)
        except NotImplementedError as err:
            if first[0]:
                raise NotYet from None
            raise Raised(err, case) from None  # it works on some inputs: not a skeleton
        except Exception as err:  # anything the learner's code raises is reported, never re-raised
            raise Raised(err, case) from None
        if out is None:
            if first[0]:
                raise NotYet
            raise Wrong(f"your function returned None ({case})")
        first[0] = False
        return out

    return call


def run(name: str, fn, cases: Callable[[Callable], str]) -> bool:
    """Run ``cases(call)`` (it raises ``Wrong`` on the first wrong case, else returns a summary) and report."""
    if not callable(fn):
        raise TypeError(f"fn: expected the function to check, got {type(fn).__name__} {fn!r:.60}")
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):  # the learner's RNG state is restored
            warnings.simplefilter("ignore")
            summary = cases(caller(fn))
    except NotYet:
        print(f"{name}: not implemented yet — fill in the function above and run this cell again.")
        return False
    except Wrong as wrong:
        print(f"{name}: {wrong}")
        return False
    except Raised as raised:
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


def tensor(out, case: str, shape: tuple | None = None) -> torch.Tensor:
    """``out`` as a float64 tensor (a number becomes a 0-d tensor), checked against ``shape``."""
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        out = torch.tensor(float(out))
    if not torch.is_tensor(out):
        raise Wrong(f"expected a tensor, got {type(out).__name__} ({case})")
    if shape is not None and tuple(out.shape) != tuple(shape):
        if shape == () and out.numel() != 1:
            raise Wrong(f"return one number for the batch: your function returned a tensor of shape "
                         f"{tuple(out.shape)} ({case})")
        if shape != () or out.numel() != 1:
            raise Wrong(f"expected shape {tuple(shape)}, got {tuple(out.shape)} ({case})")
    return out.detach().double().reshape(shape if shape is not None else out.shape)


def close(a: torch.Tensor, b: torch.Tensor, tol: tuple[float, float] = (RTOL, ATOL)) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=tol[0], atol=tol[1])


def preview(x: torch.Tensor) -> str:
    values = x.flatten()[:4].tolist()
    return ", ".join(f"{v:.6g}" for v in values) + (", …" if x.numel() > 4 else "")


def expect(case: str, got: torch.Tensor, want: torch.Tensor, known: dict[str, torch.Tensor | Callable],
            tol: tuple[float, float] = (RTOL, ATOL), nonfinite: str | None = None) -> None:
    """Pass if ``got`` matches ``want``; else name the known mistake it matches, or show both values.

    ``known`` maps each diagnosis to the value that mistake gives, or to a test ``got -> bool`` that spots it; the
    first that matches is reported."""
    if close(got, want, tol):
        return
    if not torch.isfinite(got).all():
        raise Wrong(nonfinite or f"your function gives inf or nan ({case}): compute in a numerically stable way "
                     "(log_softmax, or subtract each row's maximum before exp)")
    for diagnosis, value in known.items():
        if value(got) if callable(value) else close(got, value, tol):
            raise Wrong(f"{diagnosis} ({case})")
    if close(got, want, (1e-2, tol[1])):
        raise Wrong(f"close, but not within the tolerance ({case}): expected {preview(want)}; got {preview(got)}. "
                     "Compute in float32 or wider, and for large logits take log-probabilities with log_softmax "
                     "rather than log(softmax(...))")
    raise Wrong(f"wrong values ({case}): expected {preview(want)}; got {preview(got)}")


def randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def signs(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Random ±1."""
    return torch.randint(0, 2, shape, generator=g) * 2.0 - 1


def kl_of(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) per row, from log-probabilities, in float64 (the checkers' independent arithmetic)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def logit_cases(g: torch.Generator, batch: int = 12, classes: int = 10):
    """(case, student logits, teacher logits, T): random at T = 1, 4, 20; logits of ±50; a batch of one.

    The batch (12) equals no T² of the cases, so a batch sum and a doubled T² cannot be confused."""
    for t in (1.0, 4.0, 20.0):
        yield f"random logits at T = {t:g}", randn(g, batch, classes, scale=3), randn(g, batch, classes, scale=3), t
    yield "logits of ±50 at T = 1", 50 * signs(g, batch, classes), 50 * signs(g, batch, classes), 1.0
    yield "a batch of one at T = 2", randn(g, 1, classes, scale=3), randn(g, 1, classes, scale=3), 2.0


def kd_variants(z: torch.Tensor, v: torch.Tensor, t: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference distillation loss (float64, by formula) and the values the known mistakes give."""
    b, c = z.shape
    log_q, log_p = F.log_softmax(z.double() / t, -1), F.log_softmax(v.double() / t, -1)
    kl = kl_of(log_p, log_q).mean()
    probs = (log_p.exp() * (log_p - log_q.exp())).sum(-1).mean()  # kl_div fed probabilities, not log-probabilities
    at_1 = kl_of(F.log_softmax(v.double(), -1), F.log_softmax(z.double(), -1)).mean()
    want = kl * t * t
    return want, {NO_T2: kl, T_NOT_T2: kl * t, TWICE_T2: want * t * t, MEAN.format(c=c): want / c,
                  f"{MEAN.format(c=c)}; and {NO_T2}": kl / c,
                  SUM.format(b=b): want * b, NEGATIVE: probs * t * t, REVERSED: kl_of(log_q, log_p).mean() * t * t,
                  NO_T_SOFTMAX: at_1 * t * t}


def loss_case(call, case: str, args: tuple, want: torch.Tensor, known: dict[str, torch.Tensor],
               tol: tuple[float, float] = (RTOL, ATOL)) -> None:
    """One case of a loss exercise: one number, never negative, equal to ``want`` (or a known mistake named)."""
    got = tensor(call(case, *(a.clone() if torch.is_tensor(a) else a for a in args)), case, ())
    if got < -1e-6:
        raise Wrong(f"{SIGN if close(got, -want) else NEGATIVE} ({case})")
    expect(case, got, want, known, tol, nonfinite=f"{NAN_KL} ({case})")


def gradient_case(call, case: str, args: tuple, reference: Callable) -> None:
    """The learner's loss must carry autograd's gradient of ``reference(*args)`` to the student's logits ``args[0]``."""
    z = args[0].clone().requires_grad_()
    loss = call(case, z, *args[1:])
    got = None
    if torch.is_tensor(loss) and loss.grad_fn is not None:
        (got,) = torch.autograd.grad(loss.sum(), z, allow_unused=True)
    if got is None:
        raise Wrong(f"your loss carries no gradient to the student's logits: do not detach them or convert to "
                     f"numbers ({case})")
    zr = args[0].clone().requires_grad_()
    (want,) = torch.autograd.grad(reference(zr, *args[1:]), zr)
    expect(case, got, want, {})


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
