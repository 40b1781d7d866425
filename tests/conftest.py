import gzip
import os

import numpy as np
import pytest
import torch

import kdtutor as kd

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def fmnist():
    """The real Fashion-MNIST (train, test); the test command makes sure it is installed."""
    return kd.load_fashion_mnist(download=False)


@pytest.fixture(scope="session")
def small(fmnist):
    """2,000 training and 1,000 validation images of the real data, for fast training tests."""
    train, _ = fmnist
    x, y = train.tensors
    return torch.utils.data.TensorDataset(x[:2000], y[:2000]), torch.utils.data.TensorDataset(x[2000:3000],
                                                                                               y[2000:3000])


def write_idx(path, array, compress=None):
    """Write a uint8 array as an IDX file (gzipped if the name ends in .gz)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if (compress if compress is not None else path.suffix == ".gz") else data)
    return path


def assert_clear_error(case: str, call, exception, fragment: str) -> None:
    """One row of a bad-input table: ``call()`` raises ``exception``, whose message holds ``fragment``."""
    with pytest.raises(exception) as err:
        call()
    assert fragment in str(err.value), f"{case}: {err.value}"


def quick_fit(model, data, **kwargs):
    """``kd.fit`` for one quiet epoch on the CPU: the training call of the bad-input tables."""
    return kd.fit(model, data, **{"epochs": 1, "device": "cpu", "verbose": False, **kwargs})
