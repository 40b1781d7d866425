"""Training: one loop (:func:`fit`) for every objective, its settings (:class:`TrainConfig`), and the objectives.

:mod:`~kdtutor.training.loop` (``fit``, ``History``, ``default_device``), :mod:`~kdtutor.training.config`
(``TrainConfig``; ``MLP_RECIPE``, the book's one recipe for its MLP student), :mod:`~kdtutor.training.objectives`
(``CrossEntropy``, ``Distillation``, ``LogitMatching``, ``FocalDistillation``, ``LearningWithoutForgetting``; the
base classes ``Objective`` for your own and ``TeacherObjective`` for those that learn from another model).
"""

from kdtutor.training.config import MLP_RECIPE, TrainConfig
from kdtutor.training.loop import History, default_device, fit
from kdtutor.training.objectives import (
    CrossEntropy,
    Distillation,
    FocalDistillation,
    LearningWithoutForgetting,
    LogitMatching,
    Objective,
    TeacherObjective,
)

__all__ = [
    "MLP_RECIPE", "CrossEntropy", "Distillation", "FocalDistillation", "History", "LearningWithoutForgetting",
    "LogitMatching", "Objective", "TeacherObjective", "TrainConfig", "default_device", "fit",
]
