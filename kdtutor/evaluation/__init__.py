"""Evaluation: predictions and accuracy, teacher logits cached on disk, calibration, and what a model costs.

:mod:`~kdtutor.evaluation.predict` (``evaluate``, ``compute_logits``, ``cached_logits``, ``compute_features``,
``accuracy``, ``fidelity``),
:mod:`~kdtutor.evaluation.calibration` (ECE, reliability, temperature scaling), :mod:`~kdtutor.evaluation.cost`
(bytes, latency), :mod:`~kdtutor.evaluation.flips` (negative flips between model versions). Knows nothing of
training.
"""

from kdtutor.evaluation.calibration import Reliability, expected_calibration_error, fit_temperature, reliability
from kdtutor.evaluation.cost import latency, size_bytes
from kdtutor.evaluation.flips import flip_table, negative_flip_rate
from kdtutor.evaluation.predict import (
    accuracy,
    cache_dir,
    cached_logits,
    compute_features,
    compute_logits,
    evaluate,
    fidelity,
    fingerprint,
)

__all__ = [
    "Reliability", "expected_calibration_error", "fit_temperature", "reliability",
    "latency", "size_bytes", "flip_table", "negative_flip_rate",
    "accuracy", "cache_dir", "cached_logits", "compute_features", "compute_logits", "evaluate", "fidelity",
    "fingerprint",
]
