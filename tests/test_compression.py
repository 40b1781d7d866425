"""The compression room: pruning, ONNX export and ONNX Runtime, static int8 quantization, fake quantization.

Oracles: a global magnitude threshold computed here with ``torch.kthvalue``; the int8 rounding formula written out
here; PyTorch itself for the exported and quantized models. The models are tiny and trained for a few steps on
separable synthetic images, so that agreement is not decided by near-ties.
"""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor import compression as kc
from kdtutor.evaluation import latency, size_bytes

pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def synthetic(n=512, size=8, classes=4, seed=0):
    """Images of class k: a bright k-th quadrant-ish pattern plus noise (easy, but not trivially linear)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    patterns = torch.randn(classes, 1, size, size, generator=g)
    x = patterns[y] + 0.5 * torch.randn(n, 1, size, size, generator=g)
    return x, y


def train_briefly(model, x, y, steps=60):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        i = torch.arange(step * 64, step * 64 + 64) % len(x)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def cnn(data):
    torch.manual_seed(0)
    return train_briefly(kd.CNN(channels=(8, 16), hidden=32, num_classes=4, image_size=8), *data)


@pytest.fixture(scope="module")
def plain_cnn(data):  # no BatchNorm: what fake quantization accepts
    torch.manual_seed(1)
    return train_briefly(kd.CNN(channels=(8, 16), hidden=32, num_classes=4, image_size=8, batch_norm=False), *data)


# --- unstructured pruning ---------------------------------------------------------------------------------------

def test_sparsity_counts_exact_zeros():
    model = kd.MLP(in_features=4, hidden=(3,), num_classes=2)
    with torch.no_grad():
        model.features[1].weight.zero_()
        model.classifier.weight[0, 0] = 0.0
    report = kc.sparsity(model)
    assert report["features.1"] == 1.0
    assert report["classifier"] == pytest.approx(1 / 6)
    assert report["total"] == pytest.approx((12 + 1) / 18)


def test_prune_magnitude_zeroes_the_globally_smallest_weights(cnn):
    amount = 0.8
    pruned = kc.prune_magnitude(cnn, amount)
    weights = torch.cat([m.weight.detach().abs().flatten() for _, m in kc.prunable(cnn)])
    k = round(amount * weights.numel())
    threshold = torch.kthvalue(weights, k).values  # the oracle: the k-th smallest |w| over all layers
    for (name, before), (_, after) in zip(kc.prunable(cnn), kc.prunable(pruned), strict=True):
        kept = before.weight.abs() > threshold
        assert torch.equal(after.weight != 0, kept), name
        assert torch.equal(after.weight[kept], before.weight[kept])  # survivors unchanged
    assert kc.sparsity(pruned)["total"] == pytest.approx(amount, abs=1 / weights.numel())
    assert kc.sparsity(cnn)["total"] < 0.01  # the original is untouched


def test_unstructured_pruning_keeps_shapes_and_bytes(cnn):
    pruned = kc.prune_magnitude(cnn, 0.9)
    assert pruned.state_dict().keys() == cnn.state_dict().keys()
    assert kd.count_params(pruned) == kd.count_params(cnn)
    assert size_bytes(pruned) == size_bytes(cnn)


# --- channel pruning ----------------------------------------------------------------------------------------------

def test_prune_channels_shrinks_a_cnn_that_checkpoints_and_reloads(cnn, data, tmp_path):
    x, _ = data
    pruned = kc.prune_channels(cnn, 0.5)
    assert type(pruned) is kd.CNN
    assert pruned.config["channels"] == (4, 8) and pruned.config["hidden"] == 16
    assert kd.count_params(pruned) < kd.count_params(cnn) / 2
    assert pruned(x[:5]).shape == cnn(x[:5]).shape
    path = kd.save(pruned, tmp_path / "pruned.pt")
    again, _ = kd.load(path)  # rebuilt from the config, read with weights_only=True
    assert torch.equal(again.eval()(x[:32]), pruned.eval()(x[:32]))
    assert kd.count_params(cnn) == 8 * 9 + 16 + 8 * 16 * 9 + 32 + 16 * 4 * 32 + 32 + 32 * 4 + 4  # untouched


def test_prune_channels_keeps_a_subset_of_the_original_filters_in_order(cnn):
    pruned = kc.prune_channels(cnn, 0.5)
    conv = cnn.features[0].weight.detach()
    # torch-pruning ranks a channel by its whole group (conv filter, BatchNorm affine, next conv's input slice);
    # which channels it keeps is its business (tested upstream): here, that the survivors are original filters
    kept = pruned.features[0].weight.detach()
    matches = [int(torch.nonzero((conv - k).flatten(1).abs().amax(1) == 0)[0]) for k in kept]
    assert matches == sorted(matches) and len(set(matches)) == len(matches) == 4


def test_prune_channels_ratio_zero_keeps_every_channel(cnn, data):
    same = kc.prune_channels(cnn, 0.0)
    assert same.config["channels"] == cnn.config["channels"]
    assert torch.allclose(same(data[0][:8]), cnn(data[0][:8]))


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, "0.5", True])
def test_ratios_outside_zero_one_are_refused(cnn, ratio):
    with pytest.raises(ValueError, match="ratio"):
        kc.prune_channels(cnn, ratio)
    with pytest.raises(ValueError, match="ratio"):
        kc.prune_magnitude(cnn, ratio)


def test_prune_channels_needs_an_example_for_other_models():
    with pytest.raises(ValueError, match="example"):
        kc.prune_channels(kd.MLP(in_features=4, hidden=(8,), num_classes=2), 0.5)
    mlp = kc.prune_channels(kd.MLP(in_features=4, hidden=(8,), num_classes=2), 0.5, example=torch.randn(2, 4))
    assert mlp.features[1].out_features == 4 and mlp.classifier.out_features == 2


# --- ONNX export and ONNX Runtime ---------------------------------------------------------------------------------

def test_onnx_export_matches_pytorch(cnn, data, tmp_path):
    x, y = data
    path = kc.export_onnx(cnn, tmp_path / "cnn.onnx", x[:2])
    assert not (tmp_path / "cnn.onnx.data").exists()  # weights inside one file
    onnx_model = kc.OnnxModel(path, threads=1)
    for batch in (x[:1], x[:7], x):  # any batch size
        assert torch.allclose(onnx_model(batch), cnn(batch), atol=1e-4)
    report = kc.check_export(cnn, onnx_model, TensorDataset(x, y))
    assert report["max_abs_diff"] < 1e-4 and report["agreement"] == 1.0
    assert kd.evaluate(onnx_model, TensorDataset(x, y)) == kd.evaluate(cnn, TensorDataset(x, y))
    assert onnx_model.bytes == path.stat().st_size
    assert latency(onnx_model, x[:1], repeats=3, warmup=1) > 0
    with pytest.raises(ValueError, match="threads: an ONNX Runtime session"):
        latency(onnx_model, x[:1], threads=2)


def test_export_restores_the_training_mode(cnn, data, tmp_path):
    cnn.train()
    try:
        kc.export_onnx(cnn, tmp_path / "m.onnx", data[0][:2])
        assert cnn.training
    finally:
        cnn.eval()


@pytest.mark.parametrize("example", [None, "images", torch.zeros(1, 1, 8, 8)])
def test_export_needs_an_example_batch(cnn, tmp_path, example):
    with pytest.raises(ValueError, match="example"):
        kc.export_onnx(cnn, tmp_path / "m.onnx", example)


def test_onnx_model_refuses_a_missing_file_and_bad_threads(cnn, data, tmp_path):
    with pytest.raises(ValueError, match="path"):
        kc.OnnxModel(tmp_path / "nothing.onnx")
    path = kc.export_onnx(cnn, tmp_path / "m.onnx", data[0][:2])
    for threads in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            kc.OnnxModel(path, threads=threads)


def test_static_quantization_agrees_with_fp32_and_is_smaller(cnn, data, tmp_path):
    x, _ = data
    fp32 = kc.export_onnx(cnn, tmp_path / "fp32.onnx", x[:2])
    int8 = kc.quantize_static(fp32, tmp_path / "int8.onnx", calibration=x[:256])
    quantized = kc.OnnxModel(int8)
    agreement = (quantized(x[256:]).argmax(1) == cnn(x[256:]).argmax(1)).float().mean().item()
    assert agreement >= 0.95
    assert kc.file_bytes(int8) < kc.file_bytes(fp32)
    import onnx

    weights = [t for t in onnx.load(str(int8)).graph.initializer if len(t.dims) >= 2]
    assert len(weights) == 4 and all(t.data_type == onnx.TensorProto.INT8 for t in weights)  # stored as int8


@pytest.mark.parametrize("reduce_range, qmax", [(True, 64), (False, 127)])
def test_quantize_static_stores_weights_on_the_grid_it_is_asked_for(cnn, data, tmp_path, reduce_range, qmax):
    import onnx
    from onnx import numpy_helper

    x, _ = data
    fp32 = kc.export_onnx(cnn, tmp_path / "fp32.onnx", x[:2])
    int8 = kc.quantize_static(fp32, tmp_path / "int8.onnx", x[:256], reduce_range=reduce_range)
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(int8)).graph.initializer
               if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.INT8]
    assert len(weights) == 4
    for w in weights:  # symmetric: the largest weights sit on the grid's edge, none beyond it
        assert int(abs(w.astype(int)).max()) == qmax


def test_quantize_static_can_leave_convolutions_in_float(cnn, data, tmp_path):
    import onnx

    x, _ = data
    fp32 = kc.export_onnx(cnn, tmp_path / "fp32.onnx", x[:2])
    linear = kc.quantize_static(fp32, tmp_path / "linear.onnx", x[:256], only=("Gemm", "MatMul"))
    graph = onnx.load(str(linear)).graph
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2}
    fp = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4}
    assert len(int8) == 2 and len(fp) == 2  # the two linear weights in int8, the two conv weights in float
    agreement = (kc.OnnxModel(linear)(x[256:]).argmax(1) == cnn(x[256:]).argmax(1)).float().mean()
    assert agreement >= 0.95
    with pytest.raises(ValueError, match="only"):
        kc.quantize_static(fp32, tmp_path / "q.onnx", x[:64], only="Gemm")


def test_quantize_static_refuses_bad_input(cnn, data, tmp_path):
    with pytest.raises(ValueError, match="source"):
        kc.quantize_static(tmp_path / "none.onnx", tmp_path / "q.onnx", data[0][:8])
    fp32 = kc.export_onnx(cnn, tmp_path / "fp32.onnx", data[0][:2])
    with pytest.raises(ValueError, match="calibration"):
        kc.quantize_static(fp32, tmp_path / "q.onnx", calibration=None)


def test_file_bytes_adds_external_data(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x" * 10)
    assert kc.file_bytes(tmp_path / "m.onnx") == 10
    (tmp_path / "m.onnx.data").write_bytes(b"x" * 5)
    assert kc.file_bytes(tmp_path / "m.onnx") == 15


# --- fake quantization ------------------------------------------------------------------------------------------

def int8_round_trip(v, scale, zero_point, lo, hi):
    """The oracle: quantize to integers in [lo, hi] and dequantize, written out."""
    return (torch.clamp(torch.round(v / scale) + zero_point, lo, hi) - zero_point) * scale


@pytest.mark.parametrize("reduce_range, qmax", [(True, 64), (False, 127)])
def test_fake_quantized_linear_matches_the_written_out_formula(reduce_range, qmax):
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    wrapped = kc.FakeQuantized(layer, reduce_range=reduce_range).train()
    x = torch.randn(5, 6) * 3
    wrapped(x)  # the first batch sets the range
    wrapped.eval()
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / 255
    zero_point = round(-128 - lo / scale)
    xq = int8_round_trip(x, scale, zero_point, -128, 127)
    w_scale = layer.weight.abs().amax(1, keepdim=True) / qmax
    wq = int8_round_trip(layer.weight, w_scale, 0, -qmax, qmax)
    assert torch.allclose(wrapped(x), xq @ wq.T + layer.bias, atol=1e-5)
    assert not torch.allclose(wrapped(x), layer(x), atol=1e-5)  # the rounding is really there


def test_fake_quantization_passes_gradients_straight_through():
    layer = nn.Linear(4, 2)
    wrapped = kc.FakeQuantized(layer).train()
    wrapped(torch.randn(8, 4)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_quantize_aware_and_strip_round_trip(plain_cnn, data):
    qat = kc.quantize_aware(plain_cnn)
    assert sum(isinstance(m, kc.FakeQuantized) for m in qat.modules()) == 4  # 2 conv, 2 linear
    assert not any(isinstance(m, kc.FakeQuantized) for m in plain_cnn.modules())  # original untouched
    qat.train()(data[0][:64])
    plain = kc.strip(qat)
    assert type(plain) is kd.CNN and plain.state_dict().keys() == plain_cnn.state_dict().keys()
    assert torch.equal(plain.eval()(data[0][:8]), plain_cnn(data[0][:8]))


def test_fake_quantized_model_predicts_like_onnx_runtime_int8(plain_cnn, data, tmp_path):
    """The point of QAT: its forward pass sees what the deployed int8 model computes."""
    x, _ = data
    qat = kc.quantize_aware(plain_cnn).train()
    with torch.no_grad():
        qat(x[:256])  # one batch: the observed ranges are the calibration set's min and max, as ONNX Runtime's
    int8 = kc.quantize_static(kc.export_onnx(plain_cnn, tmp_path / "m.onnx", x[:2]), tmp_path / "q.onnx", x[:256])
    simulated, deployed = qat.eval()(x[256:]), kc.OnnxModel(int8)(x[256:])
    assert (simulated.argmax(1) == deployed.argmax(1)).float().mean() >= 0.95
    # and the rounding is really simulated: not the float model's outputs (ONNX Runtime also rounds each layer's
    # output, after fusing the ReLU, which this does not simulate, so the logits are not closer to ORT's than fp32's)
    assert (simulated - plain_cnn(x[256:])).abs().max() > 1e-3


def test_quantize_aware_refuses_batchnorm(cnn):
    with pytest.raises(ValueError, match="BatchNorm"):
        kc.quantize_aware(cnn)


# --- latency of any callable --------------------------------------------------------------------------------------

def test_latency_times_a_function_and_restores_threads():
    before = torch.get_num_threads()
    calls = []
    t = latency(lambda x: calls.append(torch.get_num_threads()), torch.zeros(1), repeats=4, warmup=2, threads=1)
    assert calls == [1] * 6 and t >= 0 and torch.get_num_threads() == before
    for threads in (0, 2.0, True):
        with pytest.raises(ValueError, match="threads"):
            latency(lambda x: x, torch.zeros(1), threads=threads)
    with pytest.raises(TypeError, match="model"):
        latency("model", torch.zeros(1))


# --- torchao ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dynamic", [True, False])
def test_int8_linear_stores_linear_weights_in_int8(data, dynamic):
    pytest.importorskip("torchao")
    torch.manual_seed(2)
    x, y = data
    mlp = train_briefly(kd.MLP(in_features=64, hidden=(256,), num_classes=4), x, y)
    quantized = kc.int8_linear(mlp, dynamic_activations=dynamic)
    assert size_bytes(quantized) < size_bytes(mlp) / 2  # int8 weights: about a quarter
    assert type(mlp.classifier.weight) is nn.Parameter  # the original is untouched
    with torch.no_grad():
        agreement = (quantized(x).argmax(1) == mlp(x).argmax(1)).float().mean()
    assert agreement >= 0.95


def test_int8_linear_needs_a_linear_layer():
    with pytest.raises(ValueError, match="nn.Linear"):
        kc.int8_linear(nn.Sequential(nn.ReLU()))


# --- issue 28: channel pruning is monotone, or refuses; export and quantization check their input first -----------

@pytest.mark.parametrize("make", [kd.teacher_cnn, kd.student_cnn], ids=["teacher", "student"])
def test_prune_channels_parameter_counts_fall_with_the_ratio_or_the_ratio_is_refused(make):
    torch.manual_seed(0)
    model = make()
    counts, refused = [], []
    for ratio in (0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.875, 0.9, 0.95, 0.968, 0.97, 0.99):
        try:
            pruned = kc.prune_channels(model, ratio)
        except ValueError as err:
            refused.append(ratio)
            assert "ratio" in str(err)
            continue
        assert not refused, f"ratio {ratio} accepted after {refused} was refused"
        widths = list(pruned.config["channels"]) + ([pruned.config["hidden"]] if model.config["hidden"] else [])
        full = list(model.config["channels"]) + ([model.config["hidden"]] if model.config["hidden"] else [])
        assert widths == [int(c * (1 - ratio)) for c in full], ratio  # every layer pruned, by torch-pruning's rule
        counts.append(kd.count_params(pruned))
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0] / 5  # monotone, and it does shrink
    assert refused and refused[0] == (0.97 if make is kd.teacher_cnn else 0.9)


def test_prune_channels_names_the_layer_and_the_ratio_it_can_take():
    teacher = kd.teacher_cnn()
    with pytest.raises(ValueError, match=r"ratio: 0\.97 would leave no channel in features\.0 \(32 channels\).*at "
                                         r"most 0\.968"):
        kc.prune_channels(teacher, 0.97)
    with pytest.raises(ValueError, match=r"features\.0 \(32 channels\), features\.4 \(64 channels\).*at most 0\.968"):
        kc.prune_channels(teacher, 0.99)
    assert kc.prune_channels(teacher, 0.968).config["channels"] == (1, 2)  # the ratio offered is taken
    with pytest.raises(ValueError, match=r"features\.0 \(8 channels\).*at most 0\.875"):
        kc.prune_channels(kd.student_cnn(), 0.9)
    assert kc.prune_channels(kd.student_cnn(), 0.875).config["channels"] == (1, 2)


def test_export_onnx_runs_the_model_on_the_example_first(cnn, tmp_path):
    for example, fragment in ((torch.zeros(2, 8, 8), r"shape \(2, 8, 8\); a CNN expects \(batch, 1, 8, 8\)"),
                              (torch.zeros(2, 1, 16, 16), r"shape \(2, 1, 16, 16\); a CNN expects \(batch, 1, 8, 8\)"),
                              (torch.zeros(2, 1, 8, 8, dtype=torch.long), r"cannot run on a batch of shape")):
        with pytest.raises(ValueError, match="example: .*" + fragment):
            kc.export_onnx(cnn, tmp_path / "m.onnx", example)
    assert not (tmp_path / "m.onnx").exists()
    mlp = kd.MLP(in_features=6, hidden=(4,), num_classes=3)
    with pytest.raises(ValueError, match=r"example: .*shape \(2, 5\); a MLP expects samples of 6 values"):
        kc.export_onnx(mlp, tmp_path / "m.onnx", torch.zeros(2, 5))

    class Scalar(nn.Module):  # runs, but returns one number per batch, not logits
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return (self.w * x).sum()

    with pytest.raises(ValueError, match=r"example: on a batch of shape \(2, 3\) the model returns \(\)"):
        kc.export_onnx(Scalar(), tmp_path / "m.onnx", torch.zeros(2, 3))


def test_quantize_static_refuses_a_quantized_source_and_unknown_operators(cnn, data, tmp_path):
    x, _ = data
    fp32 = kc.export_onnx(cnn, tmp_path / "fp32.onnx", x[:2])
    int8 = kc.quantize_static(fp32, tmp_path / "int8.onnx", x[:64])
    with pytest.raises(ValueError, match=r"source: .*int8\.onnx is already quantized \(it has DequantizeLinear, "
                                         r"QuantizeLinear operators\)"):
        kc.quantize_static(int8, tmp_path / "again.onnx", x[:64])
    assert not (tmp_path / "again.onnx").exists()
    with pytest.raises(ValueError, match=r"only: expected ONNX operator types that ONNX Runtime quantizes, got "
                                         r"\['Dense'\].*valid: \[.*'Conv'.*'Gemm'.*'MatMul'"):
        kc.quantize_static(fp32, tmp_path / "q.onnx", x[:64], only=("Gemm", "Dense"))
    with pytest.raises(ValueError, match=r"only: none of \['Softmax'\] occurs in .*fp32\.onnx.*\['Conv', 'Gemm'"):
        kc.quantize_static(fp32, tmp_path / "q.onnx", x[:64], only=("Softmax",))
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 not onnx")
    with pytest.raises(ValueError, match=r"source: .*model\.pt is not an ONNX model"):
        kc.quantize_static(tmp_path / "model.pt", tmp_path / "q.onnx", x[:64])


def test_onnx_model_refuses_a_file_that_is_not_onnx(cnn, tmp_path):
    kd.save(cnn, tmp_path / "cnn.pt")
    with pytest.raises(ValueError, match=r"path: expected an ONNX file .*cnn\.pt, a PyTorch checkpoint"):
        kc.OnnxModel(tmp_path / "cnn.pt")
    (tmp_path / "fake.onnx").write_bytes((tmp_path / "cnn.pt").read_bytes())
    with pytest.raises(ValueError, match=r"path: ONNX Runtime cannot load .*fake\.onnx as an ONNX model"):
        kc.OnnxModel(tmp_path / "fake.onnx")


def test_file_bytes_of_a_directory_sums_its_files(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "m.onnx").write_bytes(b"x" * 10)
    (folder / "m.onnx.data").write_bytes(b"x" * 5)
    (folder / "sub" / "extra.bin").write_bytes(b"x" * 7)
    assert kc.file_bytes(folder) == 22  # the files, not the directory entry (4096 on most file systems)
    (tmp_path / "empty").mkdir()
    assert kc.file_bytes(tmp_path / "empty") == 0
    with pytest.raises(ValueError, match="path: no file or directory at"):
        kc.file_bytes(tmp_path / "missing.onnx")
