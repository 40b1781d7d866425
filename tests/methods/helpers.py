"""Fixed inputs, independent references and toy data shared by several files of tests/methods.

Imported as ``from .helpers import ...`` (and as ``methods.helpers`` by tests/test_losses.py, whose known-bugs test
uses the kd_loss properties defined here).
"""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kdtutor.data import Batch, OnDevice

GOLDEN = json.loads((Path(__file__).parent.parent / "golden" / "losses.json").read_text())

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


# --- objectives: a batch, a dataset on the device, feature layers, a toy problem ----------------------------------

def batch_of(n=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(n, classes, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return out, Batch(torch.randn(n, 784, generator=g), y, torch.arange(n))


def on_device(n=40):
    return OnDevice(TensorDataset(torch.zeros(n, 784), torch.zeros(n, dtype=torch.long)), "cpu")


TEACHER_LAYERS = ("features.3", "features.7")  # the book's teacher: 32 x 14 x 14 and 64 x 7 x 7
STUDENT_LAYERS = ("features.2", "features.5")  # the small CNN: 8 x 14 x 14 and 16 x 7 x 7


def toy(n=256, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, 16, generator=g) * 2
    return TensorDataset(centres[y] + torch.randn(n, 16, generator=g), y)
