"""The course checkers: a right implementation (written here by formula, not by calling the package) passes with a
confirmation; each typical wrong one fails with the diagnosis that names its mistake; an unfilled skeleton says "not
implemented yet"; the learner's exceptions are reported, never raised; a non-callable raises TypeError; and the
learner's random state is left alone."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdtutor import course, pitfalls


def kl(log_a, log_b):
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def soft(z, t):
    e = torch.exp(z.float() / t - (z.float() / t).max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def log_soft(z, t):
    return z.float() / t - torch.logsumexp(z.float() / t, -1, keepdim=True)


def kd(z, v, t):
    log_q, log_p = log_soft(z, t), log_soft(v, t)
    return kl(log_p, log_q).mean() * t * t


def kd_mean_reduction(z, v, t):
    return kd(z, v, t) / z.shape[-1]


def kd_reversed(z, v, t):
    return kl(log_soft(z, t), log_soft(v, t)).mean() * t * t


def kd_t_not_t2(z, v, t):
    return kd(z, v, t) / t


def kd_summed(z, v, t):
    return kd(z, v, t) * z.shape[0]


def kd_no_t_in_softmax(z, v, t):
    return kd(z, v, 1.0) * t * t


def kd_per_image(z, v, t):
    return kl(log_soft(v, t), log_soft(z, t)) * t * t


def kd_not_for_half(z, v, t):
    if z.dtype == torch.float16:
        raise NotImplementedError("float16")
    return kd(z, v, t)


def kd_detached(z, v, t):
    return kd(z.detach(), v, t)


def ce(z, y):
    return -log_soft(z, 1.0)[torch.arange(len(y)), y].mean()


def dl(z, v, y, t, a):
    return a * kd(z, v, t) + (1 - a) * ce(z, y)


def grad(z, v, t):
    return t * (soft(z, t) - soft(v, t)) / z.shape[0]


def attention(f):
    a = f.float().pow(2).sum(1).flatten(1)  # a sum over channels is accepted
    return a / a.norm(dim=1, keepdim=True)


def nfr(old, new, y):
    return ((old == y) & (new != y)).sum().item() / len(y)


def int8(x):
    s = x.abs().max().item() / 127 or 1.0
    return torch.round(x / s).clamp(-127, 127).to(torch.int8), s


def prune(first, second, keep, rank=lambda w: w.flatten(1).norm(dim=1), largest=True, sort=True, bias=True,
          slice_second=True):
    idx = rank(first.weight.detach()).topk(keep, largest=largest).indices
    idx = idx.sort().values if sort else idx
    a = nn.Conv2d(first.in_channels, keep, 3, padding=1)
    b = nn.Conv2d(keep if slice_second else second.in_channels, second.out_channels, 3, padding=1)
    with torch.no_grad():
        a.weight.copy_(first.weight[idx])
        a.bias.copy_(first.bias[idx] if bias else first.bias[:keep])
        b.weight.copy_(second.weight[:, idx] if slice_second else second.weight)
        b.bias.copy_(second.bias)
    return a, b


def prune_stale_sizes(first, second, keep):  # right weights, but the layers' sizes still say 8 channels
    idx = first.weight.detach().flatten(1).norm(dim=1).topk(keep).indices.sort().values
    a, b = copy.deepcopy(first), copy.deepcopy(second)
    a.weight, a.bias = nn.Parameter(first.weight.detach()[idx]), nn.Parameter(first.bias.detach()[idx])
    b.weight = nn.Parameter(second.weight.detach()[:, idx])
    return a, b


def prune_in_place(first, second, keep):
    with torch.no_grad():
        first.weight.mul_(2)
    return prune(first, second, keep)


def reverse(z, v):
    return kl(log_soft(z, 1.0), log_soft(v, 1.0)).mean()


RIGHT = [
    (course.check_soft_targets, soft),
    (course.check_soft_targets, lambda z, t: torch.softmax(z / t, -1)),  # half in, half out
    (course.check_kd_loss, kd),
    (course.check_distillation_loss, dl),
    (course.check_soft_target_gradient, grad),
    (course.check_attention_map, attention),
    (course.check_negative_flip_rate, nfr),
    (course.check_negative_flip_rate, lambda o, n, y: ((o == y) & (n != y)).float().mean()),  # a 0-d tensor
    (course.check_int8_round_trip, int8),
    (course.check_prune_step, prune),
    (course.check_reverse_kl, reverse),
]

WRONG = [  # (checker, wrong implementation, a phrase of its diagnosis)
    (course.check_soft_targets, lambda z, t: soft(z, 1.0), "does not depend on the temperature"),
    (course.check_soft_targets, lambda z, t: soft(z * t * t, t), "multiplied the logits by T"),
    (course.check_soft_targets, lambda z, t: soft(z.T, t).T, "wrong dimension"),
    (course.check_soft_targets, lambda z, t: torch.exp(z.float() / t) / torch.exp(z.float() / t).sum(-1, keepdim=True),
     "inf or nan for large logits"),  # float32 overflows at ±100
    (course.check_soft_targets, lambda z, t: torch.exp(z / t - (z / t).amax(-1, keepdim=True)), "do not sum to 1"),
    (course.check_kd_loss, pitfalls.kd_loss_missing_t2, "did you forget the T² factor?"),
    (course.check_kd_loss, pitfalls.kd_loss_mean_reduction, "1/C of the reference"),
    (course.check_kd_loss, kd_mean_reduction, "use reduction='batchmean'"),
    (course.check_kd_loss, pitfalls.kd_loss_probabilities, "pass log-probabilities to kl_div"),
    (course.check_kd_loss, kd_reversed, "KL(student ‖ teacher), the reverse direction"),
    (course.check_kd_loss, kd_t_not_t2, "the factor is T², not T"),
    (course.check_kd_loss, kd_summed, "B times the reference"),
    (course.check_kd_loss, kd_no_t_in_softmax, "ignore the temperature"),
    (course.check_kd_loss, kd_per_image, "return one number for the batch"),
    (course.check_kd_loss, kd_detached, "carries no gradient"),
    (course.check_kd_loss, lambda z, v, t: kd(z, v, t) * t * t, "applied twice"),
    (course.check_kd_loss, lambda z, v, t: -kd(z, v, t), "wrong sign"),
    (course.check_kd_loss, lambda z, v, t: F.kl_div(log_soft(z, t), log_soft(v, t), reduction="batchmean") * t * t,
     "log_target=True"),
    (course.check_kd_loss, lambda z, v, t: kd(z.detach().requires_grad_(), v, t), "carries no gradient"),
    (course.check_kd_loss, kd_not_for_half, "raised NotImplementedError"),
    (course.check_distillation_loss, lambda z, v, y, t, a: dl(z, v, y, t, 1 - a), "swapped alpha"),
    (course.check_distillation_loss, lambda z, v, y, t, a: a * kd_mean_reduction(z, v, t) + (1 - a) * ce(z, y),
     "use reduction='batchmean'"),
    (course.check_distillation_loss, lambda z, v, y, t, a: a * kd(z, v, t) * t * t + (1 - a) * ce(z, y),
     "applied twice"),
    (course.check_distillation_loss, lambda z, v, y, t, a: torch.tensor(dl(z, v, y, t, a).item()),
     "carries no gradient"),
    (course.check_distillation_loss, lambda z, v, y, t, a: a * kl(torch.log(soft(v, t)), torch.log(soft(z, t))).mean()
     * t * t + (1 - a) * ce(z, y), "log(softmax"),
    (course.check_distillation_loss, lambda z, v, y, t, a: a * kd(z, v, t) / t / t + (1 - a) * ce(z, y),
     "forget the T² factor"),
    (course.check_distillation_loss, lambda z, v, y, t, a: a * kd(z, v, t) + (1 - a) * ce(z / t, y),
     "cross-entropy uses the temperature"),
    (course.check_distillation_loss, lambda z, v, y, t, a: a * kd_reversed(z, v, t) + (1 - a) * ce(z, y),
     "reverse direction"),
    (course.check_distillation_loss, lambda z, v, y, t, a: a * pitfalls.kd_loss_probabilities(z, v, t)
     + (1 - a) * ce(z, y), "log-probabilities"),
    (course.check_soft_target_gradient, lambda z, v, t: grad(z, v, t) * z.shape[0], "divide by the batch size"),
    (course.check_soft_target_gradient, lambda z, v, t: grad(z, v, t) / t / t, "Hinton's (q - p)/T"),
    (course.check_soft_target_gradient, lambda z, v, t: grad(z, v, t) / t, "multiply by T"),
    (course.check_soft_target_gradient, lambda z, v, t: -grad(z, v, t), "sign is flipped"),
    (course.check_soft_target_gradient, lambda z, v, t: t * (soft(z, 1.0) - soft(v, 1.0)) / z.shape[0],
     "ignore the temperature"),
    (course.check_attention_map, lambda f: f.pow(2).mean(1).flatten(1), "not of unit length"),
    (course.check_attention_map, lambda f: F.normalize(f.pow(2).mean(1).flatten(1), dim=0), "over the batch"),
    (course.check_attention_map, lambda f: F.normalize(f.pow(2).mean(1), dim=(1, 2)), "flatten each map"),
    (course.check_attention_map, lambda f: attention(f.abs().sqrt()), "p = 1"),
    (course.check_attention_map, lambda f: F.normalize(f.mean(1).flatten(1), dim=1), "square them first"),
    (course.check_negative_flip_rate, lambda o, n, y: (o != n).float().mean().item(), "every changed prediction"),
    (course.check_negative_flip_rate, lambda o, n, y: nfr(n, o, y), "positive flips"),
    (course.check_negative_flip_rate, lambda o, n, y: nfr(o, n, y) * len(y) / (o == y).sum().item(),
     "divide by all samples"),
    (course.check_negative_flip_rate, lambda o, n, y: 100 * nfr(o, n, y), "percentage"),
    (course.check_int8_round_trip, lambda x: (int8(x)[0].float(), int8(x)[1]), "torch.int8"),
    (course.check_int8_round_trip, lambda x: (int8(x)[0], x.abs().amax(-1, keepdim=True) / 127), "could not be used"),
    (course.check_int8_round_trip, lambda x: (int8(x)[0], None), "could not be used"),
    (course.check_int8_round_trip, lambda x: (int8(x)[0].to(torch.uint8), int8(x)[1]), "uint8 holds 0 to 255"),
    (course.check_int8_round_trip, lambda x: ((x / int8(x)[1]).to(torch.int8), int8(x)[1]), "truncated"),
    (course.check_int8_round_trip, lambda x: ((x / int8(x)[1]).floor().to(torch.int8), int8(x)[1]), "floor"),
    (course.check_int8_round_trip, lambda x: (int8(x)[0], (x.abs().max().item() or 1) / 255), "255 levels"),
    (course.check_int8_round_trip, lambda x: (int8(x)[0], (x.abs().max().item() or 1) / 128), "divides by 128"),
    (course.check_int8_round_trip, lambda x: (int8(x)[0], x.abs().max().item() / 127), "all-zero"),
    (course.check_int8_round_trip, lambda x: (torch.round(x / int8(x)[1] * 2).to(torch.int8), int8(x)[1]),
     "wrapped around"),
    (course.check_int8_round_trip, lambda x: ((torch.round(x / int8(x)[1]).clamp(-126, 126) + 1).to(torch.int8),
                                              int8(x)[1]), "differs from round"),
    (course.check_prune_step, lambda a, b, k: prune(a, b, k, largest=False), "smallest norm"),
    (course.check_prune_step, lambda a, b, k: prune(a, b, k, rank=lambda w: w.flatten(1).abs().sum(1)), "L1 norm"),
    (course.check_prune_step, lambda a, b, k: prune(a, b, k, sort=False), "order changed"),
    (course.check_prune_step, lambda a, b, k: prune(a, b, k, bias=False), "bias was not pruned"),
    (course.check_prune_step, lambda a, b, k: prune(a, b, k, slice_second=False), "still has 8 input channels"),
    (course.check_prune_step, prune_stale_sizes, "still give the old sizes"),
    (course.check_prune_step, lambda a, b, k: prune(a, b, min(k + 1, 8)), "expected keep"),
    (course.check_prune_step, prune_in_place, "you changed the layers you were given"),
    (course.check_prune_step, lambda a, b, k: prune(a, b, k)[0], "return two nn.Conv2d"),
    (course.check_prune_step, lambda a, b, k: tuple(m.double() for m in prune(a, b, k)), "could not be used"),
    (course.check_reverse_kl, lambda z, v: reverse(v, z), "the forward direction"),
    (course.check_reverse_kl, lambda z, v: reverse(z, v) * z.shape[1], "summed over the positions"),
    (course.check_reverse_kl, lambda z, v: reverse(z, v) * z.shape[0], "summed over the batch"),
    (course.check_reverse_kl, lambda z, v: reverse(z, v) * z.shape[0] * z.shape[1], "summed over batch and positions"),
    (course.check_reverse_kl, lambda z, v: reverse(z, v) / z.shape[-1], "averaged over the vocabulary"),
    (course.check_reverse_kl, lambda z, v: -reverse(z, v), "wrong sign"),
    (course.check_reverse_kl, lambda z, v: -reverse(z, v) - 1, "never is"),
    (course.check_reverse_kl, lambda z, v: kl(torch.log(soft(z, 1.0)), torch.log(soft(v, 1.0))).mean(),
     "log_softmax rather than log(softmax"),
]

CHECKERS = [getattr(course, name) for name in course.__all__ if name.startswith("check_")]


def ids(case):
    return f"{case[0].__name__}-{getattr(case[1], '__name__', '')}"


@pytest.mark.parametrize("case", RIGHT, ids=ids)
def test_a_right_implementation_passes_with_a_confirmation(case, capsys):
    checker, fn = case
    assert checker(fn) is True
    out = capsys.readouterr().out
    assert out.startswith(f"{checker.__name__}: correct ✓") and out.count("\n") == 1, out


@pytest.mark.parametrize("case", WRONG, ids=lambda c: f"{c[0].__name__}-{c[2]}")
def test_a_typical_mistake_fails_with_its_diagnosis(case, capsys):
    checker, fn, phrase = case
    assert checker(fn) is False
    out = capsys.readouterr().out
    assert out.startswith(f"{checker.__name__}: ") and phrase in out, out


def test_every_checker_has_a_right_and_a_wrong_implementation_here():
    assert {c for c, _ in RIGHT} == {c for c, *_ in WRONG} == set(CHECKERS)


def not_implemented(*args):
    raise NotImplementedError


def returns_none(*args):
    pass


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("skeleton", [not_implemented, returns_none], ids=["raises", "returns-none"])
def test_an_unfilled_skeleton_is_not_implemented_yet(checker, skeleton, capsys):
    assert checker(skeleton) is False
    assert capsys.readouterr().out == (f"{checker.__name__}: not implemented yet — fill in the function above and "
                                       "run this cell again.\n")


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_an_exception_in_the_learners_function_is_reported_not_raised(checker, capsys):
    def broken(*args):
        return {}["missing"]

    assert checker(broken) is False
    assert "your function raised KeyError" in capsys.readouterr().out


def test_a_float16_failure_gets_a_hint(capsys):
    def half_only(z, t):
        if z.dtype == torch.float16:
            raise RuntimeError('"softmax" not implemented for \'Half\'')
        return soft(z, t)

    assert course.check_soft_targets(half_only) is False
    assert "upcast to float32 with .float() first" in capsys.readouterr().out


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_a_non_callable_is_a_type_error_naming_the_argument(checker):
    with pytest.raises(TypeError, match="fn: expected the function to check, got str"):
        checker("my_kd_loss")


def test_checkers_leave_the_global_random_state_and_print_no_warnings(capsys):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for checker, fn in RIGHT:
        checker(fn)
    assert torch.equal(torch.get_rng_state(), state)
    assert "Warning" not in capsys.readouterr().err


def test_a_learner_who_draws_random_numbers_and_warns_leaves_no_trace(capsys):
    def noisy_but_right(z, t):
        warnings.warn("a learner's warning", UserWarning, stacklevel=1)
        return soft(z, t) + 0 * torch.rand(())  # draws from the global generator

    torch.manual_seed(0)
    state = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert course.check_soft_targets(noisy_but_right) is True
    assert not caught and torch.equal(torch.get_rng_state(), state)
    assert capsys.readouterr().err == ""


def test_the_verdict_is_the_same_on_every_run(capsys):
    for _ in range(2):
        course.check_kd_loss(pitfalls.kd_loss_missing_t2)
    first, second = capsys.readouterr().out.splitlines()
    assert first == second


def test_checker_seconds_times_a_right_answer_silently(capsys):
    check, fn = RIGHT[0]
    seconds = course.checker_seconds(check, fn)
    assert 0 < seconds < 60 and capsys.readouterr().out == ""


def test_checker_seconds_refuses_a_wrong_answer_and_says_what_the_checker_said(capsys):
    with pytest.raises(ValueError, match="fn: check_kd_loss did not pass it.*forget the T² factor"):
        course.checker_seconds(course.check_kd_loss, pitfalls.kd_loss_missing_t2)
    assert capsys.readouterr().out == ""
    with pytest.raises(TypeError, match="check: expected a checker"):
        course.checker_seconds("check_kd_loss", kd)
