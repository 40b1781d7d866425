r"""Checkers for the course exercises: a learner writes a function, a checker says whether it is right, and if not, why.

Each ``check_*`` takes the learner's function, calls it on seeded random and edge-case inputs (large logits, high
and low temperatures, a batch of one, float16 input, gradients), and compares what comes back with the package's
reference. It returns ``True`` and prints a short confirmation, or returns ``False`` and prints what is wrong, in
plain words where the mistake is a known one: "your loss is 1/T² of the reference — did you forget the T² factor?".

The learner's mistakes never raise (stored notebook outputs carry no tracebacks): an unfilled skeleton (it raises
``NotImplementedError`` or returns ``None``) is reported as *not implemented yet*, and any other exception inside the
learner's function is caught and reported with its message. Only passing something that is not a function raises
(``TypeError``). The inputs come from the checker's own seeded generator: the verdict is the same on every run, and
the learner's random state is left alone. Warnings raised inside the learner's function are silenced.

Tolerances (``torch.allclose``): float32 results must match the reference, computed in float64, to ``RTOL`` and
``ATOL``; results of float16 inputs are compared with the reference computed at full precision on the same (rounded)
inputs, to ``HALF_TOL``; a pruned pair's output with the original pair's to ``RTOL`` and ``CONV_ATOL``; an int8
scale with :math:`\max|x|/127` to ``SCALE_RTOL``, its ``q`` exactly.

    import torch
    from kdtutor import course

    def my_soft_targets(logits, temperature):
        return torch.softmax(logits / temperature, dim=-1)

    course.check_soft_targets(my_soft_targets)  # prints "check_soft_targets: correct ✓ (...)", returns True
"""

from kdtutor.course.losses import (
    check_attention_map,
    check_distillation_loss,
    check_kd_loss,
    check_reverse_kl,
    check_soft_target_gradient,
    check_soft_targets,
)
from kdtutor.course.machinery import ATOL, CONV_ATOL, HALF_TOL, RTOL, SCALE_RTOL, checker_seconds
from kdtutor.course.models import check_int8_round_trip, check_negative_flip_rate, check_prune_step

__all__ = [
    "ATOL", "CONV_ATOL", "HALF_TOL", "RTOL", "SCALE_RTOL",
    "check_attention_map", "check_distillation_loss", "check_int8_round_trip", "check_kd_loss",
    "check_negative_flip_rate", "check_prune_step", "check_reverse_kl", "check_soft_target_gradient",
    "check_soft_targets", "checker_seconds",
]
