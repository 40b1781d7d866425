"""Fixtures shared by the feature-based methods' tests (FitNets, attention transfer, their common base)."""

import pytest
import torch
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.evaluation import compute_features

from .helpers import TEACHER_LAYERS


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g))
    teacher = kd.teacher_cnn().eval()
    return train, teacher, compute_features(teacher, train, TEACHER_LAYERS)
