"""kdtutor: the package behind the book *Knowledge distillation, step by step*.

Its rooms, each a subpackage or module whose docstring says what lives there (imports go one way, down this list):

* :mod:`kdtutor.checks` — argument checks shared by every module;
* :mod:`kdtutor.data` — datasets as in-memory tensors, splits, augmentation, batches that stay on the device;
* :mod:`kdtutor.checkpoint` — atomic, checksummed checkpoints;
* :mod:`kdtutor.models` — architectures, intermediate features, the shipped pretrained models (registry);
* :mod:`kdtutor.methods` — one module per method: its pure loss beside its training objective;
* :mod:`kdtutor.losses` — the index of every method's pure loss (functions of tensors);
* :mod:`kdtutor.evaluation` — predictions, cached teacher logits, calibration, cost;
* :mod:`kdtutor.training` — ``fit``, its settings, and the objectives re-exported;
* :mod:`kdtutor.compression` — pruning, ONNX export and ONNX Runtime, int8 quantization (``kd.compression``);
* :mod:`kdtutor.experiments` — repeated runs over seeds and paired comparisons;
* :mod:`kdtutor.pitfalls` (wrong on purpose) and :mod:`kdtutor.notebook` (helpers for the book's notebooks);
* :mod:`kdtutor.course` — checkers for the course exercises (nothing in the package imports it);
* :mod:`kdtutor.progress` (progress bars, off in the book) and :mod:`kdtutor.selfcheck` (``kd.check()``,
  ``python -m kdtutor check``).

The most used names are re-exported here::

    import kdtutor as kd
    train, test = kd.load_fashion_mnist()
    teacher = kd.pretrained_teacher()
    student = kd.student_cnn()
    kd.fit(student, train, epochs=5, teacher=teacher, temperature=4, alpha=0.9)
    kd.evaluate(student, test)
"""

from kdtutor import compression
from kdtutor.checkpoint import CheckpointError, load, save
from kdtutor.data import (
    FASHION_CLASSES,
    FMNIST_MEAN,
    FMNIST_STD,
    DatasetNotFoundError,
    RandomShiftFlip,
    book_split,
    denormalize,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    split,
    stratified_indices,
    subset,
    without_classes,
)
from kdtutor.evaluation import accuracy, cached_logits, compute_logits, evaluate
from kdtutor.losses import distillation_loss, kd_loss, soft_targets
from kdtutor.models import (
    CNN,
    MLP,
    VGG12,
    cost_on_meta,
    count_params,
    pretrained,
    pretrained_teacher,
    record_activations,
    shipped_models,
    student_cnn,
    teacher_cnn,
    teacher_record,
    vgg12,
    vgg12_fmnist,
)
from kdtutor.selfcheck import check
from kdtutor.training import (
    MLP_RECIPE,
    CrossEntropy,
    Distillation,
    History,
    Objective,
    TrainConfig,
    default_device,
    fit,
)
from kdtutor.version import __version__

__all__ = [
    "__version__", "compression",
    "CheckpointError", "load", "save",
    "FASHION_CLASSES", "FMNIST_MEAN", "FMNIST_STD", "DatasetNotFoundError", "RandomShiftFlip", "book_split",
    "denormalize", "load_cifar10", "load_fashion_mnist", "load_mnist", "split", "stratified_indices", "subset",
    "without_classes",
    "accuracy", "cached_logits", "compute_logits", "evaluate",
    "distillation_loss", "kd_loss", "soft_targets",
    "CNN", "MLP", "VGG12", "cost_on_meta", "count_params", "pretrained", "pretrained_teacher", "record_activations",
    "shipped_models", "student_cnn", "teacher_cnn", "teacher_record", "vgg12", "vgg12_fmnist",
    "MLP_RECIPE", "CrossEntropy", "Distillation", "History", "Objective", "TrainConfig", "default_device", "fit",
    "check",
]
