"""Checkers of the exercises on models: a structured-pruning step and an int8 round trip (Part III), the negative
flip rate of an update (Part IV).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from kdtutor.course import machinery as mc
from kdtutor.evaluation.flips import negative_flip_rate

# --- Part III: a structured-pruning step, an int8 round trip -------------------------------------------------------

def _conv(g: torch.Generator, c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(mc.randn(g, *conv.weight.shape, scale=0.3) * torch.rand(c_out, 1, 1, 1, generator=g))
        conv.bias.copy_(mc.randn(g, c_out, scale=0.1))
    return conv


def check_prune_step(fn) -> bool:
    r"""Check ``fn(first, second, keep)``: one structured-pruning step for the pair ``second(relu(first(x)))``.

    The learner keeps the ``keep`` output channels of ``first`` whose filters have the largest L2 norm, in their
    original order, and returns two new ``nn.Conv2d``: ``first`` without the other channels (weight and bias) and
    ``second`` without the matching input channels; the layers passed in stay unchanged. The oracle: the pruned
    pair's output equals the original pair's with the removed channels zeroed after the ReLU. Cases: 3 → 8 → 5
    channels keeping 5, 1 and all 8. Diagnoses: not two ``nn.Conv2d``; the input layers modified; a wrong number of
    channels; ``second``'s input channels not removed; weights sliced but ``out_channels`` / ``in_channels`` left at
    the old sizes; the smallest filters kept; filters ranked by their L1 norm; the channel order changed;
    ``first``'s bias not pruned; a wrong output.
    """
    def cases(call):
        g = torch.Generator().manual_seed(5)
        first, second = _conv(g, 3, 8), _conv(g, 8, 5)
        x = mc.randn(g, 2, 3, 6, 6)
        norms = first.weight.detach().flatten(1).norm(dim=1)
        for keep in (5, 1, 8):
            case = f"keeping {keep} of 8 channels"
            before = copy.deepcopy((first.state_dict(), second.state_dict()))
            out = call(case, first, second, keep)
            if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(m, nn.Conv2d) for m in out)):
                raise mc.Wrong(f"return two nn.Conv2d layers, (first, second); got {type(out).__name__} ({case})")
            if not all(torch.equal(a, b) for old, m in zip(before, (first, second), strict=True)
                       for a, b in zip(old.values(), m.state_dict().values(), strict=True)):
                raise mc.Wrong(f"you changed the layers you were given: build new ones ({case})")
            new_first, new_second = out
            n_out, n_in = new_first.weight.shape[0], new_second.weight.shape[1]  # what the weights hold
            if n_out != keep:
                raise mc.Wrong(f"first keeps {n_out} output channels, expected keep = {keep} ({case})")
            if n_in != keep:
                raise mc.Wrong(f"second still has {n_in} input channels: remove those that match the removed filters, "
                             f"second.weight[:, kept] ({case})")
            if (new_first.out_channels, new_second.in_channels) != (keep, keep):
                raise mc.Wrong(f"the weights are pruned, but first.out_channels = {new_first.out_channels} and "
                             f"second.in_channels = {new_second.in_channels} still give the old sizes: build new "
                             f"nn.Conv2d layers of the new sizes, or update these attributes ({case})")
            kept = norms.topk(keep).indices.sort().values
            wrong = {"you kept the filters with the smallest norm: keep those with the largest L2 norm":
                     norms.topk(keep, largest=False).indices.sort().values,
                     "you ranked the filters by their L1 norm: the exercise asks for the L2 norm":
                     first.weight.detach().flatten(1).abs().sum(1).topk(keep).indices.sort().values}
            weight = new_first.weight.detach()
            for diagnosis, idx in wrong.items():
                if not torch.equal(idx, kept) and mc.close(weight, first.weight.detach()[idx]):
                    raise mc.Wrong(f"{diagnosis} ({case})")
            if not mc.close(weight, first.weight.detach()[kept]):
                if mc.close(weight, first.weight.detach()[norms.topk(keep).indices]):
                    raise mc.Wrong("the channel order changed: keep the original order (sort the kept indices) "
                                   f"({case})")
                raise mc.Wrong(f"first's filters are not the {keep} with the largest L2 norm ({case})")
            if new_first.bias is None or not mc.close(new_first.bias.detach(), first.bias.detach()[kept]):
                raise mc.Wrong(f"first's bias was not pruned with its filters: use first.bias[kept] ({case})")
            mask = torch.zeros(8)
            mask[kept] = 1
            with torch.no_grad():
                want = second(F.relu(first(x)) * mask[:, None, None])
                got = new_second(F.relu(new_first(x)))
            mc.expect(case, got, want, {}, (mc.RTOL, mc.CONV_ATOL))
        return "3 cases: 3 -> 8 -> 5 channels, keeping 5, 1 and all 8; outputs against the original pair"

    return mc.run("check_prune_step", fn, cases)


def check_int8_round_trip(fn) -> bool:
    r"""Check ``fn(x) -> (q, scale)``: symmetric per-tensor int8 quantization.

    ``scale`` :math:`= \max|x| / 127` and ``q`` :math:`= \mathrm{clamp}(\mathrm{round}(x / s), -127, 127)` as
    ``torch.int8``, so that ``q.float() * scale`` is within ``scale / 2`` of ``x``. For an all-zero tensor any
    positive scale is accepted, with ``q`` all zero. Cases: 64 normal values, a 16 x 8 weight, values with one
    outlier, an all-zero tensor. Diagnoses: ``q`` not ``torch.int8`` (float, or uint8); 255 or 128 levels in the
    scale; an asymmetric (min-max) scale; truncation or floor instead of rounding; no clamp (values wrap around);
    a zero scale for an all-zero tensor.
    """
    def cases(call):
        g = torch.Generator().manual_seed(6)
        outlier = mc.randn(g, 100, scale=0.1)
        outlier[17] = 5.0
        for case, x in (("64 normal values", mc.randn(g, 64)), ("a 16 x 8 weight", mc.randn(g, 16, 8, scale=0.05)),
                        ("values with one outlier", outlier), ("an all-zero tensor", torch.zeros(32))):
            out = call(case, x.clone())
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise mc.Wrong(f"return a pair (q, scale); got {type(out).__name__} ({case})")
            q, scale = out
            if not torch.is_tensor(q) or q.dtype != torch.int8:
                kind = q.dtype if torch.is_tensor(q) else type(q).__name__
                why = " (uint8 holds 0 to 255, no negative values)" if kind == torch.uint8 else ""
                raise mc.Wrong(f"q must be a torch.int8 tensor, got {kind}{why}: cast with .to(torch.int8) after "
                             f"rounding and clamping ({case})")
            if q.shape != x.shape:
                raise mc.Wrong(f"q has shape {tuple(q.shape)}, expected that of x, {tuple(x.shape)} ({case})")
            s = float(scale)
            top = x.abs().max().item()
            if top == 0:
                if not (s > 0 and s < float("inf")) or q.any():
                    raise mc.Wrong(f"for an all-zero tensor, use any positive scale (e.g. 1.0) and q all zero; got "
                                 f"scale {s} ({case})")
                continue
            scales = {"your scale uses 255 levels: the symmetric int8 range is [-127, 127], so scale = max|x| / 127":
                      top / 255, "your scale divides by 128: use max|x| / 127, so that both ends fit": top / 128,
                      "your scale is asymmetric ((max - min) / 255): use the symmetric max|x| / 127":
                      (x.max() - x.min()).item() / 255}
            if abs(s - top / 127) > mc.SCALE_RTOL * top / 127:
                for diagnosis, value in scales.items():
                    if abs(s - value) <= mc.SCALE_RTOL * value:
                        raise mc.Wrong(f"{diagnosis} ({case})")
                raise mc.Wrong(f"scale should be max|x| / 127 = {top / 127:.6g}, got {s:.6g} ({case})")
            ratio = x.double() / s
            want = ratio.round().clamp(-127, 127)
            got = q.double()
            if torch.equal(got, want):
                continue
            for diagnosis, value in {"you truncated x / scale towards zero: round to the nearest integer with "
                                     "torch.round": ratio.trunc(),
                                     "you rounded down (floor): round to the nearest integer with torch.round":
                                     ratio.floor()}.items():
                if torch.equal(got, value.clamp(-128, 127)):
                    raise mc.Wrong(f"{diagnosis} ({case})")
            if ((got * want) < 0).any():
                raise mc.Wrong(f"values wrapped around to the other sign: clamp to [-127, 127] before casting ({case})")
            raise mc.Wrong(f"q differs from round(x / scale) at {int((got != want).sum())} of {x.numel()} values "
                         f"({case})")
        return "4 cases: normal values, a weight matrix, one outlier, all zeros; q exact, scale to 1e-5"

    return mc.run("check_int8_round_trip", fn, cases)


# --- Part IV: regressions of an update -----------------------------------------------------------------------------

def check_negative_flip_rate(fn) -> bool:
    r"""Check ``fn(old_pred, new_pred, targets)`` against :func:`~kdtutor.evaluation.negative_flip_rate`.

    The share of *all* samples that the old model got right and the new one gets wrong (Yan et al. 2021), a number
    in :math:`[0, 1]` (a 0-d tensor is accepted). Cases: 200 random predictions of 10 classes, an update that
    breaks nothing, a single sample. Diagnoses: every changed prediction counted; positive flips counted instead;
    divided by the samples the old model got right; a percentage.
    """
    def cases(call):
        g = torch.Generator().manual_seed(7)
        y = torch.randint(0, 10, (200,), generator=g)

        def noisy(p):  # predictions right with probability p
            return torch.where(torch.rand(200, generator=g) < p, y, torch.randint(0, 10, (200,), generator=g))

        old, new = noisy(0.7), noisy(0.8)
        for case, o, n, t in (("200 samples", old, new, y), ("an update that breaks nothing", old, y, y),
                              ("a single sample", y[:1], (y[:1] + 1) % 10, y[:1])):
            got = mc.tensor(call(case, o.clone(), n.clone(), t.clone()), case, ())
            want = torch.tensor(negative_flip_rate(o, n, t), dtype=torch.float64)
            right_before = (o == t).double()
            known = {"you counted every changed prediction: count only those right before and wrong after":
                     (o != n).double().mean(),
                     "you counted positive flips (wrong before, right after): a negative flip is right before and "
                     "wrong after": ((o != t) & (n == t)).double().mean(),
                     "you divided by the samples the old model got right: divide by all samples":
                     ((o == t) & (n != t)).double().sum() / right_before.sum().clamp(min=1),
                     "your rate is a percentage: return a fraction in [0, 1]": want * 100}
            mc.expect(case, got, want, known)
        return "3 cases: 200 random predictions, an update that breaks nothing, a single sample"

    return mc.run("check_negative_flip_rate", fn, cases)
