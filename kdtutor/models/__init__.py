"""Models: the book's architectures, their intermediate features, and the pretrained models that ship with kdtutor.

:mod:`~kdtutor.models.nets` (MLP, CNN, the teacher and student builders, the article's VGG12),
:mod:`~kdtutor.models.hooks` (:func:`record_activations`), :mod:`~kdtutor.models.registry` (shipped weights,
hash-checked). Nothing here knows of training.
"""

from kdtutor.models.hooks import record_activations
from kdtutor.models.nets import (
    CNN,
    MLP,
    VGG12,
    cost_on_meta,
    count_params,
    student_cnn,
    teacher_cnn,
    vgg12,
    vgg12_fmnist,
)
from kdtutor.models.registry import (
    ShippedModelError,
    pretrained,
    pretrained_teacher,
    rebuild,
    record,
    shipped_models,
    teacher_record,
    verify,
    write_record,
)

__all__ = [
    "CNN", "MLP", "VGG12", "cost_on_meta", "count_params", "record_activations", "student_cnn", "teacher_cnn",
    "vgg12", "vgg12_fmnist",
    "ShippedModelError", "pretrained", "pretrained_teacher", "record", "shipped_models", "teacher_record", "verify",
    "rebuild", "write_record",
]
