"""Fidelity, the student-teacher agreement of "is it really dark knowledge?", against a hand count.

The controls themselves and the objectives that use them are tested in tests/methods/ (test_controls.py,
test_hinton.py, test_logit_matching.py).
"""

import pytest
import torch

from kdtutor.evaluation import fidelity


def test_fidelity_against_a_hand_count():
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    v = torch.tensor([[3.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    out = fidelity(z, v)
    assert out["agreement"] == pytest.approx(2 / 3)
    p, q = torch.softmax(v.double(), 1), torch.softmax(z.double(), 1)
    assert out["kl"] == pytest.approx((p * (p / q).log()).sum(1).mean().item())
    assert fidelity(v, v)["kl"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="teacher_logits: expected the student's shape"):
        fidelity(z, v[:2])
