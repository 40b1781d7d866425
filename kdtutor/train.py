"""Moved: the training loop lives in :mod:`kdtutor.training`, evaluation in :mod:`kdtutor.evaluation`.

This module keeps ``from kdtutor.train import fit, evaluate, ...`` working for existing notebooks and exercises.
"""

from kdtutor.evaluation.predict import compute_logits, evaluate
from kdtutor.training import History, TrainConfig, default_device, fit

__all__ = ["History", "TrainConfig", "compute_logits", "default_device", "evaluate", "fit"]
