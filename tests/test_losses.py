"""kdtutor.losses against an independent formula, autograd, stored golden values and the field's known bugs.

Every property is written as a check on *any* implementation of kd_loss, so the same checks that pass for
kdtutor's are shown to fail for each classic buggy variant (missing T^2, reduction="mean", probabilities into
kl_div).
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdtutor.losses import distillation_loss, kd_loss, soft_targets
from kdtutor.pitfalls import BUGS as KNOWN_BUGS

GOLDEN = json.loads((Path(__file__).parent / "golden" / "losses.json").read_text())

# Fixed inputs (written out, so no RNG is involved in the golden values).
S = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.5, 2.5, 0.0, 1.0]], dtype=torch.float64)
V = torch.tensor([[3.0, -2.0, 1.0, 0.0], [0.0, 0.5, 2.0, -1.0], [-1.0, 3.0, -0.5, 0.5]], dtype=torch.float64)
Y = torch.tensor([0, 2, 1])


def formula(s, v, T):
    """Independent reference: T^2 / B * sum_b sum_i p_bi (log p_bi - log q_bi), written with exp/sum/log."""
    def softmax(z):
        e = torch.exp(z / T - (z / T).max(dim=1, keepdim=True).values)
        return e / e.sum(dim=1, keepdim=True)
    p, q = softmax(v), softmax(s)
    return T * T * (p * (torch.log(p) - torch.log(q))).sum() / s.shape[0]


# --- properties, each a function of an implementation ------------------------------------------------------------

def matches_formula(fn) -> bool:
    g = torch.Generator().manual_seed(1)
    for T in (1.0, 2.0, 5.0):
        s, v = (torch.randn(7, 10, generator=g, dtype=torch.float64) for _ in range(2))
        if not torch.allclose(fn(s, v, T), formula(s, v, T), rtol=1e-10, atol=1e-12):
            return False
    return True


def gradient_is_t_q_minus_p_over_b(fn) -> bool:
    g = torch.Generator().manual_seed(2)
    for T in (1.0, 3.0, 8.0):
        s = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
        v = 4 * torch.randn(5, 6, generator=g, dtype=torch.float64)
        (grad,) = torch.autograd.grad(fn(s, v, T), s)
        expected = T * (torch.softmax(s.detach() / T, 1) - torch.softmax(v / T, 1)) / s.shape[0]
        if not torch.allclose(grad, expected, rtol=1e-8, atol=1e-12):
            return False
    return True


def zero_for_equal_logits(fn) -> bool:
    s = torch.randn(4, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    loss = fn(s, s.detach().clone(), 3.0)
    (grad,) = torch.autograd.grad(loss, s)
    return abs(loss.item()) < 1e-12 and grad.abs().max().item() < 1e-12


def matches_golden(fn) -> bool:
    return all(math.isclose(fn(S, V, T).item(), GOLDEN["kd_loss"][str(T)], rel_tol=1e-9)
               for T in (1.0, 4.0, 20.0))


PROPERTIES = [matches_formula, gradient_is_t_q_minus_p_over_b, zero_for_equal_logits, matches_golden]
BUGS = list(KNOWN_BUGS.values())  # kdtutor.pitfalls: the known bugs, wrong on purpose


@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda p: p.__name__)
def test_kd_loss_has_property(prop):
    assert prop(kd_loss)


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.__name__)
def test_each_known_bug_fails_a_property(bug):
    failed = [p.__name__ for p in PROPERTIES if not p(bug)]
    assert failed, f"{bug.__name__} passes every property: the tests could not catch it"


def test_the_oracle_itself_agrees_with_torch_kl_div():
    s, v = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    torch_kl = F.kl_div(F.log_softmax(s / 2, 1), F.log_softmax(v / 2, 1), reduction="sum", log_target=True)
    assert torch.allclose(formula(s, v, 2.0), 4 * torch_kl / 3)


@pytest.mark.parametrize("c", [0.0, 7.5, -100.0])
def test_invariant_to_adding_a_constant_to_either_logits(c):
    base = kd_loss(S, V, 3.0)
    assert torch.allclose(kd_loss(S + c, V, 3.0), base, atol=1e-12)
    assert torch.allclose(kd_loss(S, V + c, 3.0), base, atol=1e-12)


def test_kd_loss_is_nonnegative_and_stable_for_huge_logits():
    s = torch.tensor([[1000.0, -1000.0, 0.0]])
    v = torch.tensor([[-1000.0, 1000.0, 0.0]])
    loss = kd_loss(s, v, 1.0)
    assert torch.isfinite(loss) and loss > 0


def test_soft_targets():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(soft_targets(z, 1.0), torch.softmax(z, 1))
    assert torch.allclose(soft_targets(z, 2.0), torch.exp(z / 2) / torch.exp(z / 2).sum())
    assert torch.allclose(soft_targets(z, 1e6), torch.full((1, 3), 1 / 3), atol=1e-5)  # T -> inf: uniform
    assert torch.allclose(soft_targets(z, 1.0).sum(), torch.tensor(1.0))


def test_distillation_loss_mixes_soft_and_hard():
    ce = F.cross_entropy(S, Y)
    for alpha in (0.0, 0.3, 1.0):
        expected = alpha * formula(S, V, 4.0) + (1 - alpha) * ce
        assert torch.allclose(distillation_loss(S, V, Y, 4.0, alpha), expected, rtol=1e-10)
    assert math.isclose(distillation_loss(S, V, Y, 4.0, 0.5).item(), GOLDEN["distillation_loss_T4_a0.5"],
                        rel_tol=1e-6)


def test_integer_targets_of_any_width():
    expected = distillation_loss(S, V, Y, 2.0, 0.5)
    for dtype in (torch.int32, torch.uint8):
        assert torch.equal(distillation_loss(S, V, Y.to(dtype), 2.0, 0.5), expected)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "hot", None, True])
def test_bad_temperature(bad):
    with pytest.raises(ValueError, match="^temperature: expected a positive finite number, got"):
        kd_loss(S, V, bad)
    with pytest.raises(ValueError, match="^temperature: expected a positive finite number, got"):
        soft_targets(S, bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_alpha(bad):
    with pytest.raises(ValueError, match=r"^alpha: expected a number in \[0, 1\], got"):
        distillation_loss(S, V, Y, 2.0, bad)


def test_mismatched_classes():
    with pytest.raises(ValueError, match=r"^teacher_logits: shape \(4, 100\) does not match student_logits \(4, 10\)"):
        kd_loss(torch.randn(4, 10), torch.randn(4, 100), 2.0)
    with pytest.raises(ValueError, match=r"^teacher_logits: shape \(3, 10\) does not match"):
        distillation_loss(torch.randn(4, 10), torch.randn(3, 10), torch.zeros(4, dtype=torch.long), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"^student_logits: expected shape \(batch, classes\)"):
        kd_loss(torch.randn(10), torch.randn(10), 2.0)


@pytest.mark.parametrize("targets, message", [
    (torch.tensor([0, 4, 1]), r"class indices must lie in \[0, 3\], got values from 0 to 4"),
    (torch.tensor([0, -1, 1]), r"class indices must lie in \[0, 3\], got values from -1 to 1"),
    (torch.tensor([0.0, 1.0, 2.0]), r"expected integer class indices of shape \(3,\), got torch.float32"),
    (torch.tensor([0, 1]), r"expected integer class indices of shape \(3,\), got torch.int64 of shape \(2,\)")])
def test_bad_targets(targets, message):
    with pytest.raises(ValueError, match="^targets: " + message):
        distillation_loss(S, V, targets, 2.0, 0.5)


def test_kl_rows_against_torch_kl_div_per_row_and_the_losses_built_on_it():
    from kdtutor.losses import forward_kl, kl_rows, per_sample_kl

    g = torch.Generator().manual_seed(3)
    z, v = torch.randn(6, 10, generator=g) * 3, torch.randn(6, 10, generator=g) * 3
    log_q, log_p = F.log_softmax(z, -1), F.log_softmax(v, -1)
    rows = kl_rows(log_p, log_q)
    oracle = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)
    assert rows.shape == (6,) and (rows >= 0).all()
    torch.testing.assert_close(rows, oracle)
    assert torch.equal(kl_rows(log_p, log_p), torch.zeros(6))
    assert not torch.allclose(kl_rows(log_q, log_p), rows)  # the order is the direction
    torch.testing.assert_close(per_sample_kl(z, v, 4.0), 16 * kl_rows(F.log_softmax(v / 4, -1),
                                                                      F.log_softmax(z / 4, -1)))
    torch.testing.assert_close(forward_kl(z, v), rows.mean())
    torch.testing.assert_close(kd_loss(z, v, 1.0), rows.mean())
    for bad in (log_q[0], log_q[:, :1]):  # a missing row or a single class would broadcast silently
        with pytest.raises(ValueError, match="log_b: expected the shape of log_a"):
            kl_rows(log_p, bad)


# --- precision: float64 stays float64 (gradcheck), float32 and half give exactly the numbers they gave before ---------

def _old_hint(s, t):  # the implementations before float64 was kept, written out: every input through .float()
    return 0.5 * F.mse_loss(s.float(), t.float())


def _old_attention(s, t):
    def q(f):
        return F.normalize(f.float().abs().pow(2.0).mean(1).flatten(1), dim=1)
    return (q(s) - q(t)).pow(2).mean()


def _old_dkd(z, v, y, t, tc, nc):  # kdtutor's dkd_terms and its unchecked DKD loss before, line for line
    z_s, z_t = z.float() / t, v.float() / t
    y1 = y.long().unsqueeze(-1)
    target = torch.zeros_like(z_s, dtype=torch.bool).scatter_(-1, y1, True)

    def parts(x):
        rest = x.masked_fill(target, float("-inf"))
        log_all = torch.logsumexp(x, -1)
        return x.gather(-1, y1).squeeze(-1) - log_all, torch.logsumexp(rest, -1) - log_all, F.log_softmax(rest, -1)

    (lt_s, lr_s, hat_s), (lt_t, lr_t, hat_t) = parts(z_s), parts(z_t)
    tckd = lt_t.exp() * (lt_t - lt_s) + lr_t.exp() * (lr_t - lr_s)
    nckd = (hat_t.exp() * (hat_t - hat_s)).masked_fill(target, 0.0).sum(-1)
    return F.cross_entropy(z.float(), y.long()) + t * t * (tc * tckd.mean() + nc * nckd.mean())


def _dkd_formula(z, v, y, t, tc, nc):
    """An independent DKD: binary and non-target distributions written out (the target masked with -1e9)."""
    z_s, z_t = z / t, v / t
    mask = F.one_hot(y, z.shape[-1]).bool()
    p_s, p_t = F.softmax(z_s, -1), F.softmax(z_t, -1)
    b_s = torch.stack([(p_s * mask).sum(-1), (p_s * ~mask).sum(-1)], -1)
    b_t = torch.stack([(p_t * mask).sum(-1), (p_t * ~mask).sum(-1)], -1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(-1)
    hat_s = F.log_softmax(z_s.masked_fill(mask, -1e9), -1)
    hat_t = F.log_softmax(z_t.masked_fill(mask, -1e9), -1)
    nckd = (hat_t.exp() * (hat_t - hat_s)).masked_fill(mask, 0).sum(-1)
    return F.cross_entropy(z, y) + t * t * (tc * tckd.mean() + nc * nckd.mean())


def _old_kl(z, v, t):
    log_q, log_p = F.log_softmax(z.float() / t, -1), F.log_softmax(v.float() / t, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * t * t


def _old_focal(z, v, y, t, base, focal):
    w = base + focal * (v.argmax(-1) == y).float()
    return F.cross_entropy(z.float(), y) + (w * _old_kl(z, v, t)).mean()


def _old_lwf(z, v, y, old, t, weight):
    return F.cross_entropy(z.float(), y) + weight * _old_kl(z.index_select(-1, old), v, t).mean()


def _precision_cases():
    from kdtutor.losses import attention_transfer_loss, dkd_loss, focal_distillation_loss, hint_loss, lwf_loss

    g = torch.Generator().manual_seed(11)
    z, v, y = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g,
                                                                               dtype=torch.float64), Y.repeat(2)
    fs, ft = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 5, 4, 4, generator=g,
                                                                                   dtype=torch.float64)
    fh = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    old = torch.tensor([4, 0, 2])
    return {  # name: (kdtutor's loss of (student, teacher), the old one, student, teacher)
        "hint_loss": (hint_loss, _old_hint, fs, fh),
        "attention_transfer_loss": (attention_transfer_loss, _old_attention, fs, ft),
        "dkd_loss": (lambda a, b: dkd_loss(a, b, y, 4.0, 1.0, 8.0),
                     lambda a, b: _old_dkd(a, b, y, 4.0, 1.0, 8.0), z, v),
        "focal_distillation_loss": (lambda a, b: focal_distillation_loss(a, b, y, 2.0, 1.0, 5.0),
                                    lambda a, b: _old_focal(a, b, y, 2.0, 1.0, 5.0), z, v),
        "lwf_loss": (lambda a, b: lwf_loss(a, b, y, old, 2.0, 1.0), lambda a, b: _old_lwf(a, b, y, old, 2.0, 1.0),
                     z, v[:, :3]),
    }


@pytest.mark.parametrize("name", list(_precision_cases()))
def test_float64_inputs_stay_float64_and_pass_gradcheck(name):
    loss, old, s, t = _precision_cases()[name]
    assert loss(s, t).dtype == torch.float64
    torch.testing.assert_close(loss(s, t), old(s, t).double(), rtol=1e-5, atol=1e-6)  # the same loss, in float32
    assert torch.autograd.gradcheck(lambda a: loss(a, t), (s.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda b: loss(s, b), (t.clone().requires_grad_(),))


@pytest.mark.parametrize("name", list(_precision_cases()))
def test_float32_and_half_give_bit_identical_results_to_the_float_upcast(name):
    loss, old, s, t = _precision_cases()[name]
    for s_dtype, t_dtype in ((torch.float32, torch.float32), (torch.float32, torch.float64),
                             (torch.float16, torch.float16), (torch.bfloat16, torch.float32)):
        a, b = s.to(s_dtype).requires_grad_(), t.to(t_dtype)
        got, want = loss(a, b), old(a, b)
        assert got.dtype == torch.float32 and torch.equal(got, want), (s_dtype, t_dtype)
        (g_got,) = torch.autograd.grad(got, a)
        (g_want,) = torch.autograd.grad(want, a)
        assert torch.equal(g_got, g_want), (s_dtype, t_dtype)


def test_dkd_in_float64_matches_an_independent_formula():
    from kdtutor.losses import dkd_loss

    _, _, z, v = _precision_cases()["dkd_loss"]
    y = Y.repeat(2)
    torch.testing.assert_close(dkd_loss(z, v, y, 4.0, 1.0, 8.0), _dkd_formula(z, v, y, 4.0, 1.0, 8.0))


def test_attention_map_keeps_float64():
    from kdtutor.losses import attention_map

    f = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    q = attention_map(f)
    assert q.dtype == torch.float64
    torch.testing.assert_close(q.norm(dim=1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(4, 1), (4, 0)])
def test_dkd_refuses_fewer_than_two_classes_at_the_loss_level(shape):
    from kdtutor.methods.dkd import _dkd_loss, dkd_terms  # the unchecked loss the objective runs

    z = torch.zeros(shape)
    y = torch.zeros(4, dtype=torch.long)
    for call in (lambda: dkd_terms(z, z, y, 4.0), lambda: _dkd_loss(z, z, y, 4.0, 1.0, 8.0)):
        with pytest.raises(ValueError, match=r"student_logits: expected at least 2 classes"):
            call()
