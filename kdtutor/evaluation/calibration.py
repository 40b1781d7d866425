r"""Calibration: does a model's confidence match its accuracy? (ECE, reliability diagrams, temperature scaling)

A classifier is *calibrated* when, among the images it labels with confidence :math:`c`, a fraction :math:`c` is
correct. The **expected calibration error** (Naeini et al. 2015; Guo et al. 2017) bins predictions by confidence
(the top softmax probability) into :math:`M` equal-width bins :math:`B_m` and averages the gap:

.. math:: \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{n} \, \bigl| \mathrm{acc}(B_m) - \mathrm{conf}(B_m) \bigr| .

**Temperature scaling** (Guo et al. 2017) divides the logits by one scalar :math:`T` fitted on held-out data to
minimise the negative log-likelihood; it changes confidences, never the predicted class. The same division by a
temperature is what distillation does to soften targets (:func:`kdtutor.losses.soft_targets`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdtutor import checks

__all__ = ["Reliability", "expected_calibration_error", "fit_temperature", "reliability"]


@dataclass
class Reliability:
    """Per-bin statistics of a reliability diagram; empty bins have count 0 and NaN accuracy and confidence."""

    edges: torch.Tensor       # M + 1 bin edges in [0, 1]
    accuracy: torch.Tensor    # M: fraction correct in each bin
    confidence: torch.Tensor  # M: mean top probability in each bin
    count: torch.Tensor       # M: number of predictions in each bin

    @property
    def ece(self) -> float:
        """The expected calibration error, the count-weighted mean of ``|accuracy - confidence|`` over bins."""
        full = self.count > 0
        gaps = (self.accuracy[full] - self.confidence[full]).abs()
        return float((gaps * self.count[full]).sum() / self.count.sum())


def _check(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> None:
    checks.positive("temperature", temperature)
    if not torch.is_tensor(logits) or not torch.is_tensor(labels):
        raise TypeError(f"logits: expected tensors of logits and labels, got {type(logits).__name__} and "
                        f"{type(labels).__name__}")
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"labels: expected shape ({logits.shape[0]},) to match logits {tuple(logits.shape)} "
                         "(logits must be samples x classes)")


def reliability(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, temperature: float = 1.0) -> Reliability:
    """Bin the predictions ``softmax(logits / temperature)`` by confidence into ``n_bins`` equal-width bins."""
    _check(logits, labels, temperature)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins}")
    probs = F.softmax(logits.double() / temperature, dim=1)
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bin m holds confidences in (edges[m], edges[m+1]]; the top softmax probability is always > 0
    which = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(which, minlength=n_bins).double()
    acc_sum = torch.bincount(which, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(which, weights=confidence, minlength=n_bins)
    empty = torch.full_like(count, float("nan"))
    accuracy = torch.where(count > 0, acc_sum / count.clamp_min(1), empty)
    mean_conf = torch.where(count > 0, conf_sum / count.clamp_min(1), empty)
    return Reliability(edges, accuracy, mean_conf, count)


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                               temperature: float = 1.0) -> float:
    """ECE of ``softmax(logits / temperature)`` with ``n_bins`` equal-width confidence bins (a fraction in [0, 1])."""
    return reliability(logits, labels, n_bins, temperature).ece


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` on held-out data (temperature scaling).

    The NLL is convex in :math:`1/T`, so a golden-section search over :math:`\\log T` in ``[low, high]`` finds it.
    If the best temperature lies at either bound, a ``UserWarning`` says so (widen the range, or the logits are
    degenerate: e.g. all predictions right and extremely confident).
    """
    _check(logits, labels)
    low, high = checks.positive("low", low), checks.positive("high", high)
    if not high > low:
        raise checks.bad("high", f"a number above low={low:g}", high)
    logits = logits.double()

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    a, b = math.log(low), math.log(high)
    ratio = (5 ** 0.5 - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(80):  # each step keeps one inner point and its NLL: one new evaluation per step
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    t = math.exp((a + b) / 2)
    for name, bound in (("low", low), ("high", high)):
        if abs(math.log(t) - math.log(bound)) < 1e-3:
            warnings.warn(f"fit_temperature: the best temperature is at the bound {name}={bound:g}; widen "
                          "[low, high], or check the logits", UserWarning, stacklevel=2)
    return t
