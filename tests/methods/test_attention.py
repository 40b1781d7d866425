"""kdtutor.methods.attention: attention maps and the transfer loss against loops, bad input, float64, and
AttentionTransfer summed with KD through fit on a tiny random problem.
"""

import math

import pytest
import torch

import kdtutor as kd
from kdtutor.losses import attention_map, attention_transfer_loss
from kdtutor.training import AttentionTransfer, Distillation, Sum

from .helpers import STUDENT_LAYERS, TEACHER_LAYERS


def _attention_by_hand(a: torch.Tensor) -> list[list[float]]:
    rows = []
    for image in a:  # C x H x W
        c, h, w = image.shape
        q = [sum(image[k, i, j].item() ** 2 for k in range(c)) / c for i in range(h) for j in range(w)]
        norm = math.sqrt(sum(v * v for v in q))
        rows.append([v / norm for v in q])
    return rows


def test_attention_map_against_a_loop():
    a = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    q = attention_map(a)
    assert q.shape == (2, 20)
    expected = [v for row in _attention_by_hand(a) for v in row]
    assert q.flatten().tolist() == pytest.approx(expected, rel=1e-5)
    assert attention_map(torch.ones(1, 4, 3, 3)).flatten().tolist() == pytest.approx([1 / 3] * 9)  # 1/sqrt(9)


def test_attention_transfer_loss_against_a_loop_with_different_channel_counts():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 7, 4, 4, generator=g)
    qs, qt = _attention_by_hand(s), _attention_by_hand(t)
    expected = sum((x - y) ** 2 for rs, rt in zip(qs, qt, strict=True) for x, y in zip(rs, rt, strict=True)) / 32
    assert attention_transfer_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert attention_transfer_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_attention_transfer_refuses_different_resolutions_and_non_maps():
    with pytest.raises(ValueError, match=r"\(2, 32, 7, 7\).*\(2, 8, 14, 14\)"):
        attention_transfer_loss(torch.zeros(2, 8, 14, 14), torch.zeros(2, 32, 7, 7))
    with pytest.raises(ValueError, match="features"):
        attention_map(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="p:"):
        attention_map(torch.zeros(1, 1, 2, 2), p=0)


def test_attention_map_keeps_float64():
    from kdtutor.losses import attention_map

    f = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    q = attention_map(f)
    assert q.dtype == torch.float64
    torch.testing.assert_close(q.norm(dim=1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-15)


def test_attention_transfer_and_kd_summed_through_fit(tiny):
    train, teacher, feats = tiny
    logits = kd.compute_logits(teacher, train, verbose=False)
    torch.manual_seed(0)
    student = kd.student_cnn()
    loss = Sum(Distillation(teacher_logits=logits, temperature=4, alpha=0.9),
               AttentionTransfer(feats, dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True))))
    assert loss.features == STUDENT_LAYERS
    history = kd.fit(student, train, loss=loss, epochs=1, batch_size=16, device="cpu", verbose=False)
    assert math.isfinite(history.train_loss[-1])
