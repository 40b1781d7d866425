"""Training: one loop (:func:`fit`) for every objective, its settings (:class:`TrainConfig`), and the objectives.

:mod:`~kdtutor.training.loop` (``fit``, ``History``, ``default_device``), :mod:`~kdtutor.training.config`
(``TrainConfig``; ``MLP_RECIPE``, the book's one recipe for its MLP student), and the objectives, each defined in its
method's module of :mod:`kdtutor.methods` and re-exported here: ``CrossEntropy``, ``Distillation``,
``LogitMatching``, ``FocalDistillation``, ``LearningWithoutForgetting``, ``DecoupledKD``; the feature objectives
``FitNets`` and ``AttentionTransfer``; ``Sum`` of several; the base classes ``Objective`` for your own,
``TeacherObjective`` for those that learn from another model's outputs and ``FeatureObjective`` for those that learn
from its cached intermediate features.
"""

from kdtutor.methods import (
    AttentionTransfer,
    CrossEntropy,
    DecoupledKD,
    Distillation,
    FeatureObjective,
    FitNets,
    FocalDistillation,
    LearningWithoutForgetting,
    LogitMatching,
    Objective,
    Sum,
    TeacherObjective,
)
from kdtutor.training.config import MLP_RECIPE, TrainConfig
from kdtutor.training.loop import History, default_device, fit

__all__ = [
    "MLP_RECIPE", "AttentionTransfer", "CrossEntropy", "DecoupledKD", "Distillation", "FeatureObjective", "FitNets",
    "FocalDistillation", "History", "LearningWithoutForgetting", "LogitMatching", "Objective", "Sum",
    "TeacherObjective", "TrainConfig", "default_device", "fit",
]
