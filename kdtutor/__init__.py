"""kdtutor: the package behind the book *Knowledge distillation, step by step*.

Data (:mod:`kdtutor.data`), models and the shipped teacher (:mod:`kdtutor.models`), distillation losses
(:mod:`kdtutor.losses`), the training loop (:mod:`kdtutor.train`) and checkpoints (:mod:`kdtutor.checkpoint`).
The most used names are re-exported here::

    import kdtutor as kd
    train, test = kd.load_fashion_mnist()
    teacher = kd.pretrained_teacher()
    student = kd.student_cnn()
    kd.fit(student, train, epochs=5, teacher=teacher, temperature=4, alpha=0.9)
    kd.evaluate(student, test)
"""

__version__ = "0.1.0"

from kdtutor.checkpoint import CheckpointError, load, save
from kdtutor.data import (
    FASHION_CLASSES,
    FMNIST_MEAN,
    FMNIST_STD,
    DatasetNotFoundError,
    RandomShiftFlip,
    book_split,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    split,
)
from kdtutor.losses import distillation_loss, kd_loss, soft_targets
from kdtutor.models import (
    CNN,
    MLP,
    count_params,
    pretrained_teacher,
    record_activations,
    student_cnn,
    teacher_cnn,
    teacher_record,
)
from kdtutor.train import History, compute_logits, default_device, evaluate, fit

__all__ = [
    "__version__",
    "CheckpointError", "load", "save",
    "FASHION_CLASSES", "FMNIST_MEAN", "FMNIST_STD", "DatasetNotFoundError", "RandomShiftFlip", "book_split",
    "load_cifar10", "load_fashion_mnist", "load_mnist", "split",
    "distillation_loss", "kd_loss", "soft_targets",
    "CNN", "MLP", "count_params", "pretrained_teacher", "record_activations", "student_cnn", "teacher_cnn",
    "teacher_record",
    "History", "compute_logits", "default_device", "evaluate", "fit",
]
