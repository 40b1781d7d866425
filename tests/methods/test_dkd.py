"""kdtutor.methods.dkd: decoupled KD's terms and loss against PyTorch's KL of the full distributions (the
decomposition), the binary and non-target distributions written out, KD's gradient and bad inputs.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import kdtutor as kd
from kdtutor.losses import dkd_loss, dkd_terms

from .helpers import Y, _precision_cases


def _logits(seed: int, batch: int = 6, classes: int = 5, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, classes, generator=g), scale * torch.randn(batch, classes, generator=g),
            torch.randint(0, classes, (batch,), generator=g))


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_splits_into_tckd_and_weighted_nckd(t):
    """Zhao et al.'s eq. 6, row by row, against PyTorch's KL of the full distributions."""
    s, v, y = _logits(3)
    tckd, nckd, rest = dkd_terms(s, v, y, t)
    full = F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(v / t, -1), log_target=True, reduction="none").sum(-1)
    assert (tckd + rest * nckd).tolist() == pytest.approx(full.tolist(), rel=1e-5, abs=1e-7)


def test_dkd_terms_against_the_binary_and_non_target_distributions_written_out():
    s, v, y = _logits(4, batch=3, classes=4)
    tckd, nckd, _ = dkd_terms(s, v, y, 2.0)
    for b in range(3):
        ps, pt = torch.softmax(s[b] / 2, -1), torch.softmax(v[b] / 2, -1)
        k = int(y[b])
        bs, bt = [ps[k].item(), 1 - ps[k].item()], [pt[k].item(), 1 - pt[k].item()]
        assert tckd[b].item() == pytest.approx(sum(q * math.log(q / p) for q, p in zip(bt, bs, strict=True)),
                                               rel=1e-4)
        others = [i for i in range(4) if i != k]
        hs, ht = torch.softmax(s[b, others] / 2, -1), torch.softmax(v[b, others] / 2, -1)
        assert nckd[b].item() == pytest.approx(sum(q * math.log(q / p) for q, p in
                                                   zip(ht.tolist(), hs.tolist(), strict=True)), rel=1e-4)


def test_dkd_gradients_are_finite_and_match_kd_when_the_weights_recouple_it():
    """With the non-target weight set to the teacher's 1 - p_t per row, DKD's terms are KD's (T^2 KL) again."""
    s, v, y = _logits(8)
    s.requires_grad_(True)
    tckd, nckd, rest = dkd_terms(s, v, y, 4.0)
    ((tckd + rest * nckd).mean() * 16).backward()
    grad_split = s.grad.clone()
    s.grad = None
    kd.kd_loss(s, v, 4.0).backward()
    assert torch.isfinite(grad_split).all() and torch.allclose(grad_split, s.grad, atol=1e-6)


def test_dkd_loss_is_cross_entropy_plus_weighted_terms_and_survives_extreme_logits():
    s, v, y = _logits(5)
    tckd, nckd, _ = dkd_terms(s, v, y, 4.0)
    expected = F.cross_entropy(s, y) + 16 * (1.0 * tckd.mean() + 8.0 * nckd.mean())
    assert dkd_loss(s, v, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert dkd_loss(s, v, y, tckd_weight=0, nckd_weight=0).item() == pytest.approx(F.cross_entropy(s, y).item())
    big = 50 * torch.sign(torch.randn(4, 10, generator=torch.Generator().manual_seed(6)))
    assert torch.isfinite(dkd_loss(big, -big, torch.arange(4), temperature=1.0))


def test_dkd_loss_bad_inputs():
    s, v, y = _logits(7)
    with pytest.raises(ValueError, match="temperature"):
        dkd_loss(s, v, y, temperature=0)
    with pytest.raises(ValueError, match="nckd_weight"):
        dkd_loss(s, v, y, nckd_weight=-1)
    with pytest.raises(ValueError, match="teacher_logits"):
        dkd_loss(s, v[:, :4], y)
    with pytest.raises(ValueError, match="targets"):
        dkd_loss(s, v, y + 10)


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


def test_dkd_in_float64_matches_an_independent_formula():
    from kdtutor.losses import dkd_loss

    _, _, z, v = _precision_cases()["dkd_loss"]
    y = Y.repeat(2)
    torch.testing.assert_close(dkd_loss(z, v, y, 4.0, 1.0, 8.0), _dkd_formula(z, v, y, 4.0, 1.0, 8.0))


@pytest.mark.parametrize("shape", [(4, 1), (4, 0)])
def test_dkd_refuses_fewer_than_two_classes_at_the_loss_level(shape):
    from kdtutor.losses import dkd_terms  # every DKD path (loss, objective) runs it first

    z = torch.zeros(shape)
    y = torch.zeros(4, dtype=torch.long)
    for call in (lambda: dkd_terms(z, z, y, 4.0),):
        with pytest.raises(ValueError, match=r"student_logits: expected at least 2 classes"):
            call()
