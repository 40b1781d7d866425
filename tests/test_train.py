import math

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

import kdtutor as kd
from kdtutor.data import device as kdevice
from kdtutor.training import config


def mlp(seed=0, hidden=(32,), dropout=0.0):
    torch.manual_seed(seed)
    return kd.MLP(hidden=hidden, dropout=dropout)


def weights(model):
    return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])


class Tripwire(nn.Module):
    """Wraps a model; on forward call number ``at`` returns NaN logits or raises KeyboardInterrupt."""

    def __init__(self, model, at, action):
        super().__init__()
        self.model, self.at, self.action, self.calls = model, at, action, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                if self.action == "interrupt":
                    raise KeyboardInterrupt
                return self.model(x) * float("nan")
        return self.model(x)


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_default_device_prefers_cuda_then_mps(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert kd.default_device() == torch.device(expected)


def test_fit_learns_and_reports_history(small, capsys):
    train, val = small
    model = mlp()
    before = kd.evaluate(model, val)
    history = kd.fit(model, train, epochs=3, val=val, batch_size=64, device="cpu")
    after = kd.evaluate(model, val)
    assert before < 0.25 and after > 0.70
    assert len(history) == 3 and history.epoch == [1, 2, 3] and not history.interrupted
    assert history.train_loss[0] > history.train_loss[-1]
    assert history.val_acc[-1] == pytest.approx(after)
    assert history.lr[-1] < 1e-5  # cosine schedule annealed to ~0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3") and "val acc" in lines[0]
    assert not model.training


def test_same_seed_gives_identical_weights_on_cpu(small):
    train, _ = small
    runs = []
    for _ in range(2):
        model = mlp(dropout=0.2)
        kd.fit(model, train, epochs=2, seed=7, device="cpu", verbose=False, augment=kd.RandomShiftFlip(2))
        runs.append(weights(model))
    assert torch.equal(runs[0], runs[1])
    other = mlp(dropout=0.2)
    kd.fit(other, train, epochs=2, seed=8, device="cpu", verbose=False, augment=kd.RandomShiftFlip(2))
    assert not torch.equal(runs[0], weights(other))


def test_generic_datasets_take_the_dataloader_path(small):
    train, val = small
    subset = Subset(train, list(range(500)))
    model = mlp()
    history = kd.fit(model, subset, epochs=3, batch_size=32, val=Subset(val, list(range(200))), device="cpu",
                     verbose=False)
    assert len(history) == 3 and history.val_acc[-1] > 0.6
    assert kd.evaluate(model, Subset(val, list(range(200)))) == pytest.approx(history.val_acc[-1])


@pytest.mark.parametrize("online", [False, True])
def test_distillation_keeps_teacher_frozen_in_eval_mode(small, online):
    train, val = small
    teacher = kd.CNN(channels=(4, 8), hidden=16)  # has BatchNorm: train mode would change its running stats
    teacher.train()
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    kd.fit(mlp(), train, epochs=1, teacher=teacher, temperature=4, alpha=0.9, device="cpu", verbose=False,
           online=online)
    assert not teacher.training
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.filterwarnings("ignore:teacher_logits.*agrees with the labels")  # a random teacher, on purpose
def test_cached_logits_train_like_the_online_teacher(small):
    train, _ = small
    torch.manual_seed(1)
    teacher = kd.MLP(hidden=(64,)).eval()
    online, cached = mlp(), mlp()
    kd.fit(online, train, epochs=2, teacher=teacher, temperature=3, alpha=0.7, device="cpu", verbose=False,
           online=True)
    logits = kd.compute_logits(teacher, train)
    kd.fit(cached, train, epochs=2, teacher_logits=logits, temperature=3, alpha=0.7, device="cpu", verbose=False)
    assert torch.allclose(weights(online), weights(cached), atol=1e-4)


def test_alpha_one_learns_from_the_teacher_alone(small):
    """A random teacher disagrees with the labels: with alpha=1 the student follows the teacher, with 0 the labels."""
    train, val = small
    torch.manual_seed(2)
    teacher = kd.MLP(hidden=(64,)).eval()
    with torch.no_grad():
        teacher.classifier.weight.mul_(5)  # confident, arbitrary predictions
    teacher_says = kd.compute_logits(teacher, val).argmax(1)
    agreement = {}
    for alpha in (0.0, 1.0):
        student = mlp(seed=3)
        kd.fit(student, train, epochs=3, teacher=teacher, temperature=2, alpha=alpha, device="cpu", verbose=False)
        agreement[alpha] = (kd.compute_logits(student, val).argmax(1) == teacher_says).float().mean().item()
    assert agreement[1.0] > 0.4 and agreement[0.0] < 0.2


def test_refuses_bad_combinations(small):
    train, _ = small
    logits = torch.zeros(len(train), 10)
    with pytest.raises(ValueError, match="augment: cannot be combined with teacher_logits"):
        kd.fit(mlp(), train, epochs=1, teacher_logits=logits, augment=kd.RandomShiftFlip())
    with pytest.raises(ValueError, match="teacher_logits: pass either a teacher or its cached logits"):
        kd.fit(mlp(), train, epochs=1, teacher=mlp(), teacher_logits=logits)
    with pytest.raises(ValueError, match=r"teacher_logits: expected one row per training sample, shape \(2000, "):
        kd.fit(mlp(), train, epochs=1, teacher_logits=logits[:10])
    with pytest.raises(ValueError, match="temperature"):
        kd.fit(mlp(), train, epochs=1, teacher=mlp(), temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        kd.fit(mlp(), train, epochs=1, teacher=mlp(), alpha=2)
    for kwargs, name in (({"epochs": 0}, "epochs"), ({"epochs": 1.5}, "epochs"),
                         ({"epochs": 1, "batch_size": 0}, "batch_size"), ({"epochs": 1, "optimizer": "lbfgs"},
                                                                          "optimizer"),
                         ({"epochs": 1, "schedule": "step"}, "schedule"),
                         ({"epochs": 1, "momentum": 0.5}, "momentum: only optimizer='sgd'"),
                         ({"epochs": 1, "lr": -1.0}, "lr"), ({"epochs": 1, "augment": kd.RandomShiftFlip}, "augment"),
                         ({"epochs": 1, "amp_dtype": torch.float32}, "amp_dtype")):
        with pytest.raises(ValueError, match=f"^{name}"):
            kd.fit(mlp(), train, **kwargs)
    for name in ("temperature", "alpha"):
        with pytest.raises(ValueError, match=f"{name}: only used for distillation"):
            kd.fit(mlp(), train, epochs=1, **{name: 2.0})
    with pytest.raises(TypeError, match="unexpected keyword.*'epoch'.*fields of TrainConfig"):
        kd.fit(mlp(), train, epoch=1)
    with pytest.raises(ValueError, match="empty"):
        kd.fit(mlp(), TensorDataset(torch.zeros(0, 784), torch.zeros(0, dtype=torch.long)), epochs=1)


def test_mismatched_teacher_and_bad_labels(small):
    train, _ = small
    with pytest.raises(ValueError, match=r"teacher_logits: shape \(128, 100\) does not match"):
        kd.fit(mlp(), train, epochs=1, teacher=kd.MLP(hidden=(8,), num_classes=100), device="cpu")
    x, y = train.tensors
    with pytest.raises(ValueError, match=r"train: labels must lie in \[0, 4\] \(the model has 5 outputs\)"):
        kd.fit(kd.MLP(num_classes=5), TensorDataset(x[:100], y[:100]), epochs=1, device="cpu")


def test_nan_loss_stops_naming_epoch_and_step(small):
    train, _ = small
    history = kd.History()
    model = Tripwire(mlp(), at=32 + 6, action="nan")  # 32 steps per epoch: 31 batches of 64, one of 16
    with pytest.raises(FloatingPointError, match="epoch 2, step 6") as err:
        kd.fit(model, train, epochs=3, batch_size=64, device="cpu", verbose=False, history=history, check_every=50)
    assert err.value.history is history and len(history) == 1


def test_interrupt_keeps_weights_and_history(small, capsys):
    train, _ = small
    model = Tripwire(mlp(), at=32 + 5, action="interrupt")
    start = weights(model)
    history = kd.fit(model, train, epochs=3, batch_size=64, device="cpu")
    assert history.interrupted and len(history) == 1
    assert not torch.equal(weights(model), start)  # the trained weights are kept
    assert "Interrupted in epoch 2, step 5" in capsys.readouterr().out


def test_history_continues_and_plots(small):
    import matplotlib
    matplotlib.use("Agg")
    train, val = small
    model = mlp()
    history = kd.fit(model, train, epochs=1, val=val, device="cpu", verbose=False)
    kd.fit(model, train, epochs=2, device="cpu", verbose=False, history=history)
    assert history.epoch == [1, 2, 3] and math.isnan(history.val_acc[-1])
    assert set(history.as_dict()) == {"epoch", "train_loss", "train_acc", "val_acc", "lr", "seconds"}
    ax = history.plot(label="mlp")
    assert len(ax.lines) == 2


def test_evaluate_restores_mode_and_compute_logits_keeps_order(small):
    _, val = small
    model = mlp(dropout=0.5).train()
    logits = kd.compute_logits(model, val, batch_size=100)
    assert model.training and logits.shape == (1000, 10)
    assert torch.allclose(logits[123], model.eval()(val.tensors[0][123:124])[0], atol=1e-6)


class DtypeProbe(nn.Module):
    """Records the dtype its linear layer computes in (what autocast chose)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.dtypes = model, set()

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.dtypes.add(out.dtype)
        return out


@pytest.mark.parametrize("native_bf16, override, expected", [
    (True, None, torch.bfloat16), (False, None, torch.float16), (True, torch.float16, torch.float16)])
def test_amp_dtype_counts_only_native_bf16(monkeypatch, native_bf16, override, expected):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return native_bf16 or including_emulation  # a T4: bf16 only emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cfg = kd.TrainConfig(amp_dtype=override)
    assert config.autocast_dtype(torch.device("cuda"), cfg) == expected
    if override is None:
        assert asked["including_emulation"] is False
    assert config.autocast_dtype(torch.device("cpu"), cfg) is None
    assert config.autocast_dtype(torch.device("cuda"), kd.TrainConfig(amp=False)) is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16+scaler"])
def test_cuda_mixed_precision(small, monkeypatch, amp_dtype):
    train, val = small
    steps = {"scaled": 0}
    real_scale = torch.amp.GradScaler.scale

    def counting_scale(self, outputs):
        if self.is_enabled():
            steps["scaled"] += 1
        return real_scale(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", counting_scale)
    teacher = mlp(seed=5, hidden=(64,))
    kd.fit(teacher, train, epochs=2, device="cuda", verbose=False, amp=False)
    student = DtypeProbe(mlp())
    history = kd.fit(student, train, epochs=2, teacher=teacher, device="cuda", val=val, verbose=False,
                     amp_dtype=amp_dtype, batch_size=128)
    assert student.dtypes == {amp_dtype}  # autocast ran in the dtype asked for
    assert steps["scaled"] == (2 * 16 if amp_dtype == torch.float16 else 0)  # the scaler only on the fp16 path
    assert next(student.parameters()).is_cuda and next(student.parameters()).dtype == torch.float32
    assert all(math.isfinite(v) for v in history.train_loss) and history.val_acc[-1] > 0.6


def count_transfers(monkeypatch, n):
    """Count copies of tensors with ``n`` rows made through kdtutor.data.device.move (the one place data moves)."""
    calls = []
    real = kdevice.move

    def move(tensor, device):
        if len(tensor) == n:
            calls.append(tensor.shape)
        return real(tensor, device)

    monkeypatch.setattr(kdevice, "move", move)
    return calls


@pytest.mark.filterwarnings("ignore:teacher_logits.*agrees with the labels")  # all-zero logits, on purpose
def test_training_data_is_moved_to_the_device_once_per_fit(small, monkeypatch):
    train, val = small
    calls = count_transfers(monkeypatch, len(train))
    val_calls = count_transfers(monkeypatch, len(val))
    kd.fit(mlp(), train, epochs=3, val=val, batch_size=256, device="cpu", verbose=False,
           teacher_logits=torch.zeros(len(train), 10), temperature=2, alpha=0.5)
    assert len(calls) == 2  # images and labels, once — not once per epoch or per evaluate
    assert len(val_calls) == 2  # the validation set, once, reused by every epoch's evaluation


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_data_is_moved_to_cuda_once_per_fit(small, monkeypatch):
    train, val = small
    calls = count_transfers(monkeypatch, len(train))
    kd.fit(mlp(), train, epochs=3, val=val, device="cuda", verbose=False)
    assert len(calls) == 2


def test_channels_last_changes_the_layout_not_the_result(small):
    train, val = small
    sub = Subset(train, range(512))
    trained = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        student, teacher = kd.student_cnn(), kd.CNN(channels=(4, 8), hidden=0, batch_norm=True)
        kd.fit(student, sub, epochs=2, teacher=teacher, verbose=False, device="cpu", channels_last=channels_last)
        for net in (student, teacher):  # the second convolution (the first has one input channel: either layout)
            conv = [m for m in net.modules() if isinstance(m, nn.Conv2d)][1].weight
            assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        trained.append(student)
    for a, b in zip(trained[0].parameters(), trained[1].parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)  # the same training, up to the rounding of other kernels
    data = kdevice.OnDevice(TensorDataset(torch.randn(4, 3, 8, 8), torch.zeros(4)), "cpu", channels_last=True)
    assert data.tensors[0].is_contiguous(memory_format=torch.channels_last)
    teacher = kd.CNN(channels=(4, 8), hidden=0)  # a teacher inside a Sum of objectives is converted too
    loss = kd.training.Sum(kd.Distillation(teacher=teacher), kd.CrossEntropy())
    kd.fit(kd.student_cnn(), Subset(train, range(64)), epochs=1, loss=loss, verbose=False, device="cpu",
           channels_last=True)
    conv = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)][1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and loss.teachers() == [teacher]
    with pytest.raises(ValueError, match="channels_last"):
        kd.TrainConfig(channels_last="yes")


@pytest.mark.filterwarnings("ignore:teacher_logits.*agrees with the labels")  # random logits, on purpose
def test_train_accuracy_counts_the_labelled_rows_only(small):
    """lr=0 leaves the model as it is: the epoch's train accuracy is its accuracy on the labelled rows, by hand."""
    train, _ = small
    x, y = train.tensors[0][:300], train.tensors[1][:300].clone()
    labelled = torch.arange(300) % 3 == 0
    y[~labelled] = -1  # unlabelled transfer data
    model = mlp()
    logits = torch.randn(300, 10, generator=torch.Generator().manual_seed(0))
    loss = kd.Distillation(teacher_logits=logits, labelled=labelled)
    history = kd.fit(model, TensorDataset(x, y), epochs=1, lr=0.0, batch_size=64, loss=loss, device="cpu",
                     verbose=False)
    with torch.no_grad():
        right = (model(x[labelled]).argmax(1) == y[labelled]).sum().item()
    assert right > 0 and history.train_acc == [right / 100]  # 100 labelled rows; the 200 others are not errors
    none = kd.Distillation(teacher_logits=logits, labelled=torch.zeros(300, dtype=torch.bool))
    history = kd.fit(model, TensorDataset(x, y), epochs=1, loss=none, device="cpu", verbose=False)
    assert math.isnan(history.train_acc[0])  # no labelled row: no accuracy, not 0 %


def test_an_online_teacher_is_used_in_place(small):
    """fit's docstring: the caller's teacher is moved, put in eval mode and converted, not copied; weights kept."""
    train, _ = small
    torch.manual_seed(0)
    teacher = kd.CNN(channels=(4, 8), hidden=0).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss = kd.Distillation(teacher=teacher)
    kd.fit(kd.student_cnn(), Subset(train, range(64)), epochs=1, loss=loss, device="cpu", verbose=False,
           channels_last=True)
    assert loss.teacher is teacher and not teacher.training
    conv = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)][1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert "used in place, not copied" in kd.fit.__doc__


class Counting(nn.Module):
    """A teacher that counts the images it has seen."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.images = net, 0

    def forward(self, x):
        self.images += len(x)
        return self.net(x)


@pytest.mark.filterwarnings("ignore:teacher_logits.*agrees with the labels")  # a random teacher, on purpose
def test_a_teacher_runs_once_where_its_logits_cannot_change(small):
    """TeacherObjective's docstring: one teacher pass per fit on fixed images, the same training as online."""
    train, _ = small
    torch.manual_seed(3)
    teacher = Counting(kd.CNN(channels=(4, 8), hidden=0))
    trained = {}
    for online in (False, True):
        teacher.images = 0
        trained[online] = mlp()
        kd.fit(trained[online], train, epochs=3, teacher=teacher, online=online, device="cpu", verbose=False)
        # 2,000 images: once, or in every epoch (plus the first batch's shape check, 128 images)
        assert teacher.images == (3 * len(train) + 128 if online else len(train))
    for a, b in zip(trained[False].parameters(), trained[True].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # the same logits, up to batch-size rounding
    teacher.images = 0  # augmented images change every step: the teacher runs on each of them
    kd.fit(mlp(), train, epochs=2, teacher=teacher, augment=kd.RandomShiftFlip(), device="cpu", verbose=False)
    assert teacher.images == 2 * len(train) + 128
    loss = kd.Distillation(teacher=teacher)  # one objective, three runs: each its own rows, dropped after
    for part, augment, seen in ((range(64), None, 64), (range(100, 196), None, 96),
                                (range(32), kd.RandomShiftFlip(), 3 * 32)):
        teacher.images = 0
        kd.fit(mlp(), Subset(train, part), epochs=2, loss=loss, augment=augment, device="cpu", verbose=False)
        assert teacher.images == seen and loss.rows is None  # augmented: every step (plus the first check)
    assert "runs once over the training set" in kd.fit.__doc__


@pytest.mark.parametrize("setting, model, device, expected", [
    ("auto", "cnn", "cpu", True), ("auto", "mlp", "cpu", False), ("auto", "cnn", "cuda", False),
    ("auto", "cnn", "mps", False), (False, "cnn", "cpu", False), (True, "mlp", "cuda", True)])
def test_channels_last_auto_is_on_for_convolutions_on_the_cpu(setting, model, device, expected):
    """TrainConfig.channels_last_for's docstring: "auto" means a Conv2d trained on the CPU, and nothing else."""
    net = kd.student_cnn() if model == "cnn" else mlp()
    cfg = kd.TrainConfig(channels_last=setting)
    assert cfg.channels_last_for(net, torch.device(device)) is expected
    assert cfg.channels_last_for(net, device) is expected  # a device name will do
    assert kd.TrainConfig().channels_last == "auto"


def test_fit_uses_the_auto_layout(small):
    train, _ = small
    cnn, net = kd.student_cnn(), mlp()
    for model in (cnn, net):
        kd.fit(model, Subset(train, range(64)), epochs=1, device="cpu", verbose=False)
    assert cnn.features[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.is_contiguous() for p in net.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_teacher_in_another_dtype_reads_and_returns_the_images_dtype(small, dtype):
    train, _ = small
    torch.manual_seed(4)
    teacher = kd.MLP(hidden=(16,)).to(dtype).eval()
    loss = kd.Distillation(teacher=teacher)
    sub = Subset(train, range(128))
    kd.fit(mlp(), sub, epochs=1, loss=loss, device="cpu", verbose=False)  # refused by matmul before the fix
    batch = next(kdevice.OnDevice(sub, "cpu").batches(8))
    got = loss.teacher_logits(batch)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, teacher(batch.x.to(dtype)).float(), rtol=0, atol=0)


# --- warm-up, clipping and a Stream (the language model's loop is fit's) ---------------------------------------------

def test_clip_caps_the_gradient_norm_like_torch(small):
    """One SGD step with clip: the same weights as torch's clip_grad_norm_ on the same batch (oracle)."""
    train, _ = small
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    reference = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    reference.load_state_dict(model.state_dict())
    x, y = train.tensors[0][:64], train.tensors[1][:64]
    kd.fit(model, TensorDataset(x, y), epochs=1, batch_size=64, lr=10.0, optimizer="sgd", momentum=0.0,
           schedule="constant", clip=1e-2, verbose=False)
    nn.functional.cross_entropy(reference(x), y).backward()
    assert nn.utils.clip_grad_norm_(reference.parameters(), 1e-2) > 1e-2  # the cap binds
    with torch.no_grad():
        for p in reference.parameters():
            p -= 10.0 * p.grad
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)  # the batch's order differs: float sums do


def test_warmup_ramps_the_learning_rate_then_the_schedule_takes_over(small):
    train, _ = small
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    data = Subset(train, range(6 * 32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", spy)
        kd.fit(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), data, epochs=1, batch_size=32, lr=1.0, warmup=2,
               verbose=False)
    assert seen == pytest.approx([0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)])
    with pytest.raises(ValueError, match="warmup: expected an integer from 0 to steps - 1 = 5"):
        kd.fit(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), data, epochs=1, batch_size=32, warmup=6,
               verbose=False)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="warmup: expected an integer >= 0"):
            kd.TrainConfig(warmup=bad)
    with pytest.raises(ValueError, match="clip: expected a positive finite number"):
        kd.TrainConfig(clip=0)


def test_a_stream_trains_drawn_batches_and_refuses_what_it_cannot_do():
    draws = []

    def draw(g):
        ids = torch.randint(5, (4, 9), generator=g)
        draws.append(ids)
        return ids

    model = nn.Sequential(nn.Embedding(5, 8), nn.Linear(8, 5))
    history = kd.fit(model, kdevice.Stream(draw, 3), epochs=2, verbose=False, seed=7)
    assert len(history) == 2 and len(draws) == 6  # three batches per epoch
    again = []
    kd.fit(nn.Sequential(nn.Embedding(5, 8), nn.Linear(8, 5)), kdevice.Stream(lambda g: again.append(
        torch.randint(5, (4, 9), generator=g)) or again[-1], 3), epochs=2, verbose=False, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(draws, again, strict=True))  # the seed fixes the draws
    cached = kd.Distillation(teacher_logits=torch.randn(4, 5))
    with pytest.raises(ValueError, match="train: a Stream's batches have no sample indices"):
        kd.fit(model, kdevice.Stream(draw, 1), epochs=1, loss=cached, verbose=False)
    with pytest.raises(ValueError, match="augment: a Stream's batches are drawn as they are"):
        kd.fit(model, kdevice.Stream(draw, 1), epochs=1, augment=kd.RandomShiftFlip(), verbose=False)
    with pytest.raises(ValueError, match=r"batches: expected the function to return integer ids of shape"):
        kd.fit(model, kdevice.Stream(lambda g: torch.zeros(4, 9), 1), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        kdevice.Stream(draw, 0)
    with pytest.raises(TypeError, match="batches: expected a function of a torch.Generator"):
        kdevice.Stream(torch.zeros(4, 9), 1)
