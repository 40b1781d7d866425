"""kdtutor.methods.sequence against independent references, autograd, a hand-computed golden value and bad inputs.

The references loop over tokens one at a time in float64, with torch.distributions.kl_divergence for the two KLs
and sums over probabilities (not log-probabilities) for the JSD, and divide by a count of the kept tokens made in
Python: a different route to each number than the module's masked log-softmax.
"""

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from kdtutor.losses import forward_kl, generalized_jsd, kd_loss, reverse_kl

D = torch.float64


def randn(*shape, seed, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# a batch of 3 sequences of length 5 over a vocabulary of 7, with right padding (one sequence has none)
S, V = randn(3, 5, 7, seed=0, scale=2.0), randn(3, 5, 7, seed=1, scale=2.0)
MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)


def reference(s, v, mask, T, kind, beta=0.5):
    """Loop over the tokens; per token the divergence of the softened distributions, times T^2; mean over kept."""
    total, kept = 0.0, 0
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            if mask is not None and not mask[b, i]:
                continue
            q, p = Categorical(logits=s[b, i] / T), Categorical(logits=v[b, i] / T)
            if kind == "forward":
                d = kl_divergence(p, q)
            elif kind == "reverse":
                d = kl_divergence(q, p)
            else:  # sums over probabilities: beta * sum p log(p/m) + (1 - beta) * sum q log(q/m)
                pp, qq = p.probs, q.probs
                m = beta * pp + (1 - beta) * qq
                d = beta * (pp * torch.log(pp / m)).sum() + (1 - beta) * (qq * torch.log(qq / m)).sum()
            total, kept = total + T * T * d.item(), kept + 1
    return total / kept


LOSSES = {"forward": forward_kl, "reverse": reverse_kl, "jsd": generalized_jsd}


@pytest.mark.parametrize("T", [1.0, 3.0])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd", "jsd-0.2", "jsd-0.9"])
def test_matches_the_token_loop(kind, masked, T):
    mask = MASK if masked else None
    if kind.startswith("jsd"):
        beta = float(kind.split("-")[1]) if "-" in kind else 0.5
        got, want = generalized_jsd(S, V, mask, T, beta), reference(S, V, mask, T, "jsd", beta)
    else:
        got, want = LOSSES[kind](S, V, mask, T), reference(S, V, mask, T, kind)
    assert got.dtype == D and got.ndim == 0
    assert math.isclose(got.item(), want, rel_tol=1e-10, abs_tol=1e-13)


def test_the_reference_jsd_agrees_with_the_textbook_jsd_at_one_half():
    """At beta = 1/2 the generalized JSD is the ordinary one: H(m) - (H(p) + H(q)) / 2."""
    p, q = torch.softmax(V[0, 0], 0), torch.softmax(S[0, 0], 0)
    m = (p + q) / 2
    h = lambda x: -(x * x.log()).sum().item()  # noqa: E731
    one = torch.ones(1, 1, dtype=torch.bool)
    assert math.isclose(reference(S[:1, :1], V[:1, :1], one, 1.0, "jsd"), h(m) - (h(p) + h(q)) / 2, rel_tol=1e-10)


def test_two_dimensional_logits_and_kd_loss():
    """(N, vocab) rows are tokens: the same value as the flattened batch; forward KL there is kd_loss."""
    s2, v2 = S.reshape(-1, 7), V.reshape(-1, 7)
    for fn in LOSSES.values():
        assert torch.allclose(fn(S, V, temperature=2.0), fn(s2, v2, temperature=2.0), rtol=1e-12)
        assert torch.allclose(fn(S, V, MASK, 2.0), fn(s2, v2, MASK.reshape(-1), 2.0), rtol=1e-12)
    assert torch.allclose(forward_kl(s2, v2, temperature=4.0), kd_loss(s2, v2, 4.0), rtol=1e-12)


@pytest.mark.parametrize("fn", LOSSES.values(), ids=LOSSES.keys())
def test_divides_by_the_unmasked_tokens_and_ignores_padding(fn):
    garbage_s, garbage_v = S.clone(), V.clone()
    garbage_s[~MASK] = 1e4 * randn(int((~MASK).sum()), 7, seed=5)
    garbage_v[~MASK] = float("nan")
    value = fn(S, V, MASK, 3.0)
    assert fn(garbage_s, garbage_v, MASK, 3.0).item() == value.item()  # padding logits play no part at all
    kept = fn(S[MASK], V[MASK], None, 3.0)  # the 9 kept tokens alone, as rows: their mean
    assert torch.allclose(value, kept, rtol=1e-12)
    per_token = torch.stack([fn(S[MASK][i:i + 1], V[MASK][i:i + 1], None, 3.0) for i in range(9)])
    assert torch.allclose(value, per_token.sum() / 9, rtol=1e-12)
    assert not torch.allclose(value, per_token.sum() / MASK.numel())  # not over batch * length


@pytest.mark.parametrize("fn", LOSSES.values(), ids=LOSSES.keys())
def test_gradcheck(fn):
    s = randn(2, 3, 4, seed=7).requires_grad_()
    v = randn(2, 3, 4, seed=8).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, mask, 2.0), (s, v))
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, None, 1.0), (s, v))
    if fn is generalized_jsd:
        assert torch.autograd.gradcheck(lambda a, b: fn(a, b, mask, 1.5, 0.2), (s, v))


@pytest.mark.parametrize("fn", LOSSES.values(), ids=LOSSES.keys())
def test_padding_gets_exactly_zero_gradient(fn):
    s, v = S.clone(), V.clone()
    s[~MASK], v[~MASK] = 50.0, float("nan")
    s.requires_grad_(), v.requires_grad_()
    gs, gv = torch.autograd.grad(fn(s, v, MASK, 3.0), (s, v))
    assert (gs[~MASK] == 0).all() and (gv[~MASK] == 0).all()
    assert (gs[MASK].abs().sum(-1) > 0).all() and torch.isfinite(gs).all()


def test_jsd_is_non_negative_bounded_and_zero_for_equal_distributions():
    for seed in range(10):
        s, v = randn(4, 6, 9, seed=100 + seed, scale=3.0), randn(4, 6, 9, seed=200 + seed, scale=3.0)
        for beta in (0.1, 0.5, 0.8):
            j = generalized_jsd(s, v, beta=beta).item()
            entropy = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)  # the per-token bound at T = 1
            assert 0 < j <= entropy
    for beta in (0.0, 0.3, 0.5, 1.0):
        assert abs(generalized_jsd(S, S.clone(), MASK, 2.0, beta).item()) < 1e-14
        assert abs(generalized_jsd(S, S + 5.0, MASK, 2.0, beta).item()) < 1e-12  # a shift is the same distribution


def test_jsd_is_symmetric_at_one_half_and_swaps_beta_otherwise():
    assert torch.allclose(generalized_jsd(S, V, MASK, 2.0, 0.5), generalized_jsd(V, S, MASK, 2.0, 0.5), rtol=1e-12)
    assert not torch.allclose(generalized_jsd(S, V, MASK, 2.0, 0.2), generalized_jsd(V, S, MASK, 2.0, 0.2))
    assert torch.allclose(generalized_jsd(S, V, MASK, 2.0, 0.2), generalized_jsd(V, S, MASK, 2.0, 0.8), rtol=1e-12)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_jsd_ends_and_limits(T):
    fwd, rev = forward_kl(S, V, MASK, T), reverse_kl(S, V, MASK, T)
    assert generalized_jsd(S, V, MASK, T, beta=0).item() == fwd.item()
    assert generalized_jsd(S, V, MASK, T, beta=1).item() == rev.item()
    near_0 = lambda b: generalized_jsd(S, V, MASK, T, b).item() / b / fwd.item() - 1  # noqa: E731
    near_1 = lambda b: generalized_jsd(S, V, MASK, T, b).item() / (1 - b) / rev.item() - 1  # noqa: E731
    assert abs(near_0(1e-4)) < 5e-3 and abs(near_1(1 - 1e-4)) < 5e-3
    # the error is O(beta) (resp. O(1 - beta)): ten times closer to the end, about ten times smaller
    assert 5 < near_0(1e-4) / near_0(1e-5) < 20 and 5 < near_1(1 - 1e-4) / near_1(1 - 1e-5) < 20
    # and not by accident: halfway, JSD / beta is far from either KL
    assert not math.isclose(generalized_jsd(S, V, MASK, T, 0.5).item() / 0.5, fwd.item(), rel_tol=0.1)


def test_forward_and_reverse_differ_and_are_non_negative():
    s = torch.tensor([[0.0, 0.0, 0.0]], dtype=D)  # the student is uniform
    v = torch.tensor([[4.0, 0.0, -4.0]], dtype=D)  # the teacher is peaked
    f, r = forward_kl(s, v).item(), reverse_kl(s, v).item()
    assert f >= 0 and r >= 0 and not math.isclose(f, r, rel_tol=0.05)
    for seed in range(5):
        a, b = randn(3, 4, 8, seed=300 + seed, scale=2.0), randn(3, 4, 8, seed=400 + seed, scale=2.0)
        assert forward_kl(a, b, MASK[:, :4]).item() >= 0 and reverse_kl(a, b, MASK[:, :4]).item() >= 0


@pytest.mark.parametrize("fn", LOSSES.values(), ids=LOSSES.keys())
def test_the_t_squared_factor(fn):
    """At T the loss is T^2 times the divergence of softmax(z/T) and softmax(v/T), i.e. of the logits over T at 1."""
    for T in (2.0, 5.0):
        assert torch.allclose(fn(S, V, MASK, T), T * T * fn(S / T, V / T, MASK, 1.0), rtol=1e-12)


# Golden values computed by hand. One sequence of three tokens over a vocabulary of two, the last one padding.
# Token 1: teacher p = (3/4, 1/4) (logits (log 3, 0)), student q = (1/2, 1/2) (logits (0, 0)). Token 2: equal logits.
# At T = 2 the logits are doubled, so the softened distributions are the same and the values are 4 times larger.
F1 = 0.75 * math.log(3 / 2) + 0.25 * math.log(1 / 2)  # KL(p || q) = 0.1308120...
R1 = 0.5 * math.log(2 / 3) + 0.5 * math.log(2)  # KL(q || p) = 0.1438410...
J1 = 0.5 * (0.75 * math.log(6 / 5) + 0.25 * math.log(2 / 3)) + 0.5 * (0.5 * math.log(4 / 5) + 0.5 * math.log(4 / 3))
GOLDEN = {"forward": F1 / 2, "reverse": R1 / 2, "jsd": J1 / 2}  # (token 1 + 0) / 2 kept tokens


@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("kind", LOSSES)
def test_golden(kind, T):
    assert math.isclose(F1, 0.1308120, abs_tol=1e-7) and math.isclose(R1, 0.1438410, abs_tol=1e-7)
    assert math.isclose(J1, 0.0338221, abs_tol=1e-7)  # m = (5/8, 3/8)
    s = T * torch.tensor([[[0.0, 0.0], [1.0, -2.0], [9.0, -9.0]]], dtype=D)
    v = T * torch.tensor([[[math.log(3), 0.0], [1.0, -2.0], [-9.0, 9.0]]], dtype=D)
    mask = torch.tensor([[True, True, False]])
    assert math.isclose(LOSSES[kind](s, v, mask, T).item(), T * T * GOLDEN[kind], rel_tol=1e-12)


def test_half_precision_is_upcast():
    loss = forward_kl(S.half(), V.half(), MASK, 2.0)
    assert loss.dtype == torch.float32
    assert math.isclose(loss.item(), forward_kl(S.half().double(), V.half().double(), MASK, 2.0).item(), rel_tol=1e-5)


BAD = {
    "vocabulary mismatch": (dict(teacher_logits=randn(3, 5, 8, seed=0)), "teacher_logits: vocabulary size 8 does not"),
    "length mismatch": (dict(teacher_logits=randn(3, 4, 7, seed=0)), r"teacher_logits: shape \(3, 4, 7\) does not"),
    "rank mismatch": (dict(teacher_logits=randn(15, 7, seed=0)), r"teacher_logits: shape \(15, 7\) does not match"),
    "T=0": (dict(temperature=0), "temperature: expected a positive finite number, got 0"),
    "T=-1": (dict(temperature=-1.0), "temperature: expected a positive finite number, got -1.0"),
    "T=inf": (dict(temperature=math.inf), "temperature: expected a positive finite number, got inf"),
    "T=nan": (dict(temperature=math.nan), "temperature: expected a positive finite number, got nan"),
    "beta=-0.1": (dict(beta=-0.1), r"beta: expected a number in \[0, 1\], got -0.1"),
    "beta=1.5": (dict(beta=1.5), r"beta: expected a number in \[0, 1\], got 1.5"),
    "beta=nan": (dict(beta=math.nan), r"beta: expected a number in \[0, 1\], got nan"),
    "mask of the wrong shape": (dict(mask=MASK[:, :4]), r"mask: expected a bool tensor of shape \(3, 5\).*\(3, 4\)"),
    "mask of integers": (dict(mask=MASK.long()), r"mask: expected a bool tensor .*got torch.int64"),
    "mask of floats": (dict(mask=MASK.double()), r"mask: expected a bool tensor .*got torch.float64"),
    "all padding": (dict(mask=torch.zeros(3, 5, dtype=torch.bool)), "mask: expected at least one True"),
    "integer logits": (dict(student_logits=S.long()), "student_logits: expected a floating-point tensor"),
    "bool teacher logits": (dict(teacher_logits=V > 0), "teacher_logits: expected a floating-point tensor"),
    "4-D logits": (dict(student_logits=S[None]), r"student_logits: expected .* of shape \(batch, length, vocab\)"),
    "a list": (dict(student_logits=S.tolist()), "student_logits: expected a floating-point tensor"),
    "no tokens": (dict(student_logits=S[:0], teacher_logits=V[:0], mask=None),
                  "student_logits: expected at least one token"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_names_the_argument(case):
    change, message = BAD[case]
    fns = [generalized_jsd] if "beta" in change else list(LOSSES.values())
    for fn in fns:
        args = dict(student_logits=S, teacher_logits=V, mask=MASK, temperature=2.0) | change
        with pytest.raises(ValueError, match=message):
            fn(**args)


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_a_prompt_and_padding_mask_scores_only_the_completion(kind):
    """The mask says which positions are scored: False on the prompt and the padding, True on the completion."""
    g = torch.Generator().manual_seed(5)
    s, v = torch.randn(2, 6, 7, generator=g, dtype=torch.float64), torch.randn(2, 6, 7, generator=g,
                                                                               dtype=torch.float64)
    prompt, lengths = 2, torch.tensor([6, 4])  # two prompt positions; the second sequence is padded after 4
    positions = torch.arange(6)
    mask = (positions >= prompt) & (positions < lengths[:, None])
    fn = {"forward": forward_kl, "reverse": reverse_kl, "jsd": generalized_jsd}[kind]
    got = fn(s, v, mask, 2.0)
    torch.testing.assert_close(got, fn(s[mask], v[mask], None, 2.0))  # the scored rows alone, as (K, vocab)
    assert math.isclose(got.item(), reference(s, v, mask, 2.0, kind), rel_tol=1e-12)
    wild = s.clone()
    wild[~mask] = 1e3 * torch.randn(int((~mask).sum()), 7, generator=g, dtype=torch.float64)
    assert torch.equal(fn(wild, v, mask, 2.0), got)  # whatever the prompt and padding positions hold
    assert fn(s, v, None, 2.0) != got  # the default still scores every position
