"""The on-disk logit cache: reused only for the same model and the same inputs; corrupt files are recomputed."""

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

import kdtutor as kd
from kdtutor.evaluation import predict


@pytest.fixture
def setting(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = kd.MLP(hidden=(16,))
    data = TensorDataset(torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,)))
    calls = []
    real = predict.compute_logits

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "compute_logits", counting)
    return model, data, calls, tmp_path / "logits"


def test_second_call_reads_the_cache(setting):
    model, data, calls, folder = setting
    first = kd.cached_logits(model, data)
    again = kd.cached_logits(model, data)
    assert len(calls) == 1 and torch.equal(first, again) and len(list(folder.glob("*.pt"))) == 1
    assert torch.equal(first, kd.compute_logits(model, data))


def test_a_changed_teacher_never_gets_stale_logits(setting):
    model, data, calls, _ = setting
    before = kd.cached_logits(model, data)
    with torch.no_grad():
        model.classifier.bias[3] += 1.0  # one number changed
    after = kd.cached_logits(model, data)
    assert len(calls) == 2 and torch.allclose(after[:, 3], before[:, 3] + 1.0, atol=1e-5)
    assert torch.equal(after, kd.compute_logits(model, data))


def test_a_changed_split_or_order_gets_its_own_entry(setting):
    model, data, calls, folder = setting
    kd.cached_logits(model, data)
    x, y = data.tensors
    other = TensorDataset(x[1:], y[1:])
    assert kd.cached_logits(model, other).shape == (299, 10)
    shuffled = TensorDataset(x.flip(0), y)
    assert torch.equal(kd.cached_logits(model, shuffled), kd.compute_logits(model, shuffled))
    assert len(calls) == 3 and len(list(folder.glob("*.pt"))) == 3  # each new input computed once
    # a Subset of a TensorDataset is cached like the tensors it selects
    assert torch.equal(kd.cached_logits(model, Subset(data, range(1, 300))), kd.cached_logits(model, other))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_corrupt_cache_file_is_recomputed_not_trusted(setting, damage):
    model, data, calls, folder = setting
    good = kd.cached_logits(model, data)
    (path,) = folder.glob("*.pt")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-50] ^= 0xFF
    elif damage == "truncate":
        blob = blob[:100]
    else:
        blob = b"not a cache file"
    path.write_bytes(bytes(blob))
    assert torch.equal(kd.cached_logits(model, data), good) and len(calls) == 2
    assert torch.equal(kd.cached_logits(model, data), good) and len(calls) == 2  # rewritten, then reused


def test_fingerprint_sees_every_byte_shape_and_dtype():
    x = torch.arange(12, dtype=torch.float32)
    assert predict.fingerprint(x) == predict.fingerprint(x.clone())
    assert predict.fingerprint(x) != predict.fingerprint(x.reshape(3, 4))
    assert predict.fingerprint(x) != predict.fingerprint(x.double())
    y = x.clone()
    y[7] = torch.nextafter(y[7], torch.tensor(100.0))
    assert predict.fingerprint(x) != predict.fingerprint(y)


def test_accuracy_and_evaluate_agree(setting):
    model, data, _, _ = setting
    logits = kd.compute_logits(model, data)
    assert kd.accuracy(logits, data.tensors[1]) == pytest.approx(kd.evaluate(model, data))
    assert kd.accuracy(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([1, 1])) == 0.5
    with pytest.raises(ValueError, match="labels: expected shape"):
        kd.accuracy(logits, data.tensors[1][:5])
    with pytest.raises(ValueError, match="data: the dataset is empty"):
        kd.evaluate(model, TensorDataset(torch.zeros(0, 784), torch.zeros(0, dtype=torch.long)))


class Foreign:
    """Not something ``torch.load(weights_only=True)`` will unpickle."""


def _forge(path, payload):
    """A cache file whose checksum is valid over ``payload``, whatever it holds (the checksummed format-1 layout)."""
    import hashlib
    import io

    from kdtutor import checkpoint

    magic = getattr(checkpoint, "LEGACY_MAGIC", None) or checkpoint.MAGIC
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path.write_bytes(magic + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


@pytest.mark.parametrize("kind", ["another pickle", "not a dict", "NaN logits", "too few rows", "integer logits",
                                  "1-D logits", "no logits"])
def test_a_cache_file_with_a_valid_checksum_but_the_wrong_contents_is_recomputed(setting, kind):
    from kdtutor.checkpoint import read_verified

    model, data, calls, folder = setting
    good = kd.cached_logits(model, data)
    (path,) = folder.glob("*.pt")
    key = read_verified(path)["key"]
    bad = good.clone()
    bad[5, 3] = float("nan")
    payload = {"another pickle": {"key": key, "logits": good, "extra": Foreign()}, "not a dict": [key, good],
               "NaN logits": {"key": key, "logits": bad}, "too few rows": {"key": key, "logits": good[:-1]},
               "integer logits": {"key": key, "logits": good.long()}, "1-D logits": {"key": key, "logits": good[:, 0]},
               "no logits": {"key": key}}[kind]
    _forge(path, payload)
    again = kd.cached_logits(model, data)
    assert torch.equal(again, good) and again.dtype == torch.float32 and len(calls) == 2
    assert torch.equal(read_verified(path)["logits"], good)  # overwritten with the good logits


@pytest.mark.parametrize("model", [lambda x: x.flatten(1), kd.MLP], ids=["a function", "a class"])
def test_the_model_must_be_a_module_instance(setting, model):
    _, data, _, _ = setting
    for call in (kd.cached_logits, kd.compute_logits, kd.evaluate):
        with pytest.raises(TypeError, match="model: expected an nn.Module"):
            call(model, data)
