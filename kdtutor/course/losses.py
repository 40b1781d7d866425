"""Checkers of the loss exercises: soft targets, the KD loss and its gradient (Part I), the distillation loss and an
attention map (Part II), the reverse KL of a language model (Part V).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtutor.course import machinery as mc
from kdtutor.losses import attention_map, distillation_loss, forward_kl, kd_loss, reverse_kl, soft_targets

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
        for case, z, _, t in mc.logit_cases(g):
            got = mc.tensor(call(case, z.clone(), t), case, z.shape)
            known = {"your output does not depend on the temperature: divide the logits by T before the softmax":
                     F.softmax(z.double(), -1),
                     "you multiplied the logits by T: divide them by T": F.softmax(z.double() * t, -1),
                     "your softmax runs over the wrong dimension: use dim=-1 (the classes)":
                     F.softmax(z.double() / t, 0),
                     "your rows do not sum to 1: divide by the sum over the classes (dim=-1), or use torch.softmax":
                     lambda p: not mc.close(p.sum(-1), torch.ones(len(p), dtype=torch.float64))}
            mc.expect(case, got, soft_targets(z.double(), t), known, nonfinite=f"{mc.OVERFLOW} ({case})")
        z = 100 * mc.signs(g, 12, 10)
        case = "logits of ±100 at T = 1"  # exp(100) overflows float32: a naive exp gives inf / inf
        mc.expect(case, mc.tensor(call(case, z.clone(), 1.0), case, z.shape), soft_targets(z.double(), 1.0), {},
                nonfinite=f"{mc.OVERFLOW} ({case})")
        z = 50 * mc.signs(g, 12, 10).half()
        case = "float16 logits of ±50 at T = 4"
        got = mc.tensor(call(case, z.clone(), 4.0), case, z.shape)
        mc.expect(case, got, soft_targets(z.double(), 4.0), {}, (mc.HALF_TOL, mc.HALF_TOL), f"{mc.OVERFLOW} ({case})")
        return ("7 cases: random logits at T = 1, 4 and 20, logits of ±50 and ±100, a batch of one, float16 logits "
                "of ±50")

    return mc.run("check_soft_targets", fn, cases)


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
        for case, z, v, t in mc.logit_cases(g):
            mc.loss_case(call, case, (z, v, t), kd_loss(z.double(), v.double(), t), mc.kd_variants(z, v, t)[1])
        z, v = mc.randn(g, 12, 10, scale=3).half(), mc.randn(g, 12, 10, scale=3).half()
        mc.loss_case(call, "float16 logits at T = 4", (z, v, 4.0), kd_loss(z.double(), v.double(), 4.0), {},
                   (mc.HALF_TOL, mc.HALF_TOL))
        mc.gradient_case(call, "the gradient with respect to the student's logits at T = 4",
                       (mc.randn(g, 8, 10, scale=3), mc.randn(g, 8, 10, scale=3), 4.0), kd_loss)
        return "7 cases: random logits at T = 1, 4 and 20, logits of ±50, a batch of one, float16 logits, the gradient"

    return mc.run("check_kd_loss", fn, cases)


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
        for case, z, v, t in mc.logit_cases(g):
            got = mc.tensor(call(case, z.clone(), v.clone(), t), case, z.shape)
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
            mc.expect(case, got, want, known)
        return "5 cases, against autograd: random logits at T = 1, 4 and 20, logits of ±50, a batch of one"

    return mc.run("check_soft_target_gradient", fn, cases)


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
            z, v = (mc.signs(g, b, 10) * 50, mc.signs(g, b, 10) * 50) if scale == 50 else \
                (mc.randn(g, b, 10, scale=3), mc.randn(g, b, 10, scale=3))
            y = torch.randint(0, 10, (b,), generator=g)
            soft, wrong_soft = mc.kd_variants(z, v, t)
            hard = F.cross_entropy(z.double(), y)
            known = {"you swapped alpha and 1 - alpha: alpha weighs the soft targets, 1 - alpha the labels":
                     (1 - a) * soft + a * hard,
                     "your cross-entropy uses the temperature: compute it on the raw logits (T = 1)":
                     a * soft + (1 - a) * F.cross_entropy(z.double() / t, y)}
            known |= {m: a * s + (1 - a) * hard for m, s in wrong_soft.items()}
            mc.loss_case(call, case, (z, v, y, t, a), distillation_loss(z.double(), v.double(), y, t, a), known)
        z, v = mc.randn(g, 12, 10, scale=3).half(), mc.randn(g, 12, 10, scale=3).half()
        y = torch.randint(0, 10, (12,), generator=g)
        mc.loss_case(call, "float16 logits, T = 4, alpha = 0.9", (z, v, y, 4.0, 0.9),
                   distillation_loss(z.double(), v.double(), y, 4.0, 0.9), {}, (mc.HALF_TOL, mc.HALF_TOL))
        mc.gradient_case(call, "the gradient with respect to the student's logits, T = 4, alpha = 0.5",
                       (mc.randn(g, 8, 10, scale=3), mc.randn(g, 8, 10, scale=3), y[:8], 4.0, 0.5), distillation_loss)
        return ("9 cases: (T, alpha) = (4, 0.9), (1, 0.5), (4, 0), (4, 1), (20, 0.5), a batch of one, logits of ±50, "
                "float16 logits, the gradient")

    return mc.run("check_distillation_loss", fn, cases)


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
            f = mc.randn(g, *shape)
            b, _, h, w = shape
            out = call(case, f.clone())
            if torch.is_tensor(out) and tuple(out.shape) == (b, h, w):
                raise mc.Wrong(f"flatten each map: expected shape {(b, h * w)}, got {tuple(out.shape)} ({case})")
            got = mc.tensor(out, case, (b, h * w))
            want = attention_map(f.double())
            energy = f.double().pow(2).mean(1).flatten(1)
            if not mc.close(got, want) and mc.close(got, F.normalize(energy, dim=0)):
                raise mc.Wrong(f"you scaled over the batch (dim=0): scale each image's row (dim=1) ({case})")
            if not mc.close(got.norm(dim=1), torch.ones(b, dtype=torch.float64)):
                raise mc.Wrong(f"your rows are not of unit length: scale each image's row with F.normalize(..., dim=1) "
                             f"({case})")
            known = {"you used |A| (p = 1): square the activations (p = 2)":
                     F.normalize(f.double().abs().mean(1).flatten(1), dim=1),
                     "you averaged the raw activations: square them first (p = 2)":
                     F.normalize(f.double().mean(1).flatten(1), dim=1)}
            mc.expect(case, got, want, known)
        return "3 cases: activations of both signs, a batch of one, maps of 3 x 6"

    return mc.run("check_attention_map", fn, cases)


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
        random = [mc.randn(g, 4, 6, 12, scale=2) for _ in range(2)]
        one = [mc.randn(g, 1, 1, 12, scale=2) for _ in range(2)]
        for case, z, v in (("random 4 x 6 x 12 logits", *random),
                           ("logits of ±50", 50 * mc.signs(g, 4, 6, 12), 50 * mc.signs(g, 4, 6, 12)),
                           ("one sequence of one position", *one)):
            got = mc.tensor(call(case, z.clone(), v.clone()), case, ())
            want = reverse_kl(z.double(), v.double())
            if got < -1e-6 and mc.close(got, -want):
                raise mc.Wrong(f"your KL is negative: it has the wrong sign — KL(q ‖ p) = sum q (log q - log p) "
                             f"({case})")
            if got < -1e-6:
                raise mc.Wrong(f"your KL is negative, and a KL divergence never is: compare log-probabilities "
                             f"(log_softmax) and weigh by the student's probabilities ({case})")
            b, n, vocab = z.shape
            known = {"you computed KL(teacher ‖ student), the forward direction: the reverse KL weighs by the "
                     "student's q, sum q (log q - log p)": forward_kl(z.double(), v.double()),
                     f"you summed over the positions (L = {n}): average over all batch x length positions": want * n,
                     f"you summed over the batch (B = {b}): average over all batch x length positions": want * b,
                     "you summed over batch and positions: average over them": want * b * n,
                     "you averaged over the vocabulary: a KL sums over the outcomes, then average over positions":
                     want / vocab}
            mc.expect(case, got, want, known)
        return "3 cases: random logits, logits of ±50, one sequence of one position"

    return mc.run("check_reverse_kl", fn, cases)
