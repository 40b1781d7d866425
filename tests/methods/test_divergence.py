"""kdtutor.methods.divergence: kl_rows (and per_sample_kl built on it) against PyTorch's own KL, row by row."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.losses import kd_loss


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
