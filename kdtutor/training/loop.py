"""The training loop: ``fit`` minimises any :class:`~kdtutor.training.Objective`, and ``History``.

``fit(student, train, epochs=8)`` trains on hard labels (:class:`~kdtutor.training.CrossEntropy`);
``loss=`` takes any objective; and the shortcuts ``teacher=...`` or ``teacher_logits=...`` (with ``temperature``
and ``alpha``) build :class:`~kdtutor.training.Distillation`::

    history = fit(student, train, epochs=8, teacher=teacher, temperature=4, alpha=0.9, val=val)
    history = fit(student, train, TrainConfig(epochs=8), loss=Distillation(logits=cached, temperature=4))

What the loop does for you:

* **Device**: CUDA, then Apple's MPS, then CPU (or ``device=``). On CUDA it uses mixed precision: bfloat16 where
  the GPU has it natively, else float16 with a gradient scaler (``amp_dtype=`` forces one). Losses are computed in
  float32.
* **Data stays on the device**: an in-memory dataset (and the validation set) is copied to the device once per
  ``fit`` and shuffled there with a device-side permutation (:class:`kdtutor.data.OnDevice`).
* **Determinism**: ``seed`` fixes the shuffling, dropout and augmentation; on CPU the same seed and the same initial
  weights give identical trained weights.
* **Nothing is lost**: pressing stop (``KeyboardInterrupt``) ends training cleanly — the model keeps the weights
  trained so far and ``fit`` returns the history of the completed epochs with ``history.interrupted = True``. Pass
  your own ``history=History()`` to keep it even if something else goes wrong. A non-finite loss (checked every
  ``check_every`` steps, so the GPU is not synchronised on every step) or non-finite weights (checked after every
  epoch) raise ``FloatingPointError`` naming the epoch and step, with the model restored to its finite weights from
  the start of that epoch, in eval mode, and the history attached as ``err.history``. Before advising a lower
  learning rate it looks for another cause: a training sample whose inputs hold NaN or infinity (named by its index
  in the training set), an online teacher whose logits do, or cached teacher features that do.
* **Checked up front**: the arguments, every training and validation label (against the model's number of
  outputs, on the first batch), cached teacher logits (shape, finiteness) — before any training step, so a
  mistake costs seconds, not an epoch.
* **Continuing**: ``fit(..., history=h)`` appends epochs to ``h``; it is a *new* run over those epochs (a fresh
  optimizer, learning-rate schedule and shuffle order), not a resume of the old one.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from kdtutor import checks
from kdtutor.data import OnDevice, nonempty
from kdtutor.evaluation import evaluate
from kdtutor.methods import CrossEntropy, Distillation, Objective
from kdtutor.models import record_activations
from kdtutor.progress import bar
from kdtutor.training import distributed
from kdtutor.training.config import TrainConfig

__all__ = ["History", "default_device", "fit"]


def default_device() -> torch.device:
    """CUDA if available, then Apple's MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fit(model: nn.Module, train: Dataset, config: TrainConfig | None = None, *, loss: Objective | None = None,
        val: Dataset | None = None, device=None, history: History | None = None, verbose: bool = True,
        teacher: nn.Module | None = None, teacher_logits=None, temperature: float | None = None,
        alpha: float | None = None, **settings) -> History:
    """Train ``model`` on ``train`` by minimising ``loss`` (cross-entropy on the labels by default).

    ``config`` holds the training settings (:class:`TrainConfig`: epochs, batch size, learning rate, optimizer,
    schedule, augmentation, seed, mixed precision); any of its fields may be passed as a keyword instead, overriding
    it. ``teacher=`` or ``teacher_logits=`` (with ``temperature``, default 4, and ``alpha``, default 0.9) are
    shortcuts for ``loss=Distillation(...)``. ``val`` is evaluated after every epoch. Prints one line per epoch, and
    a progress bar inside epochs that last longer than two seconds, unless ``verbose=False``. The model is left on
    the training device, in eval mode. Returns the :class:`History`; see the module docstring for interrupts,
    non-finite losses and continuing a run.

    An online ``teacher`` is used in place, not copied (a large teacher costs no second copy): ``fit`` moves it to
    the training device, puts it in eval mode and, with ``channels_last``, converts it to that memory layout; it
    stays so afterwards (its weights are never changed). A teacher stored in another dtype (float64, bfloat16) reads
    the images in its dtype and its logits are cast back to theirs. The training accuracy counts the labelled rows
    only (a ``labelled`` mask leaves the others out; NaN for an epoch without one).
    """
    cfg = _settings(config, settings)
    objective = _objective(loss, teacher, teacher_logits, temperature, alpha)
    checks.nn_module("model", model)
    _check_parameters(model)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history: expected a kdtutor History (e.g. the one an earlier fit returned) or None, got "
                        f"{type(history).__name__}")
    device = torch.device(device) if device is not None else default_device()
    procs = distributed.group(device)  # one process, or this one's place among torchrun's (module docstring)
    device, verbose = procs.device, verbose and procs.rank == 0
    data = OnDevice(nonempty("train", train), device, cfg.channels_last)
    val_data = OnDevice(nonempty("val", val), device, cfg.channels_last) if val is not None else None
    model.to(device)
    with torch.random.fork_rng(devices=[]):  # parameters an objective builds start from the run's seed
        torch.manual_seed(cfg.seed)
        objective.attach(model, data)  # e.g. a FitNets regressor sized to the student's features
    objective.to(device).setup(data, cfg.augment)
    if cfg.channels_last:  # convolutions in the channels-last layout: the student's, and every online teacher's
        for net in (model, *objective.teachers()):
            net.to(memory_format=torch.channels_last)
    procs.broadcast(objective)  # e.g. the same FitNets regressors on every process
    labels = _label_ranges(data, val_data, objective.labelled)  # every label, checked once against the outputs
    params = [p for p in (*model.parameters(), *objective.parameters()) if p.requires_grad]
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"model: has no trainable parameters ({type(model).__name__}); nothing for fit to train")
    steps_per_epoch = math.ceil(len(data) / (cfg.batch_size * procs.world_size))
    opt, sched = _optimizer(cfg, params, steps=cfg.epochs * steps_per_epoch, fused=device.type == "cuda")
    amp_dtype = _amp_dtype(device, cfg)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    net = procs.wrap(model, some_unused=bool(objective.features))  # the model, or DDP around it
    torch.manual_seed(cfg.seed + procs.rank)  # dropout and augmentation differ between processes
    shuffle = data.generator(cfg.seed)  # the same order on every process, which takes its own part of each batch
    history = history if history is not None else History()
    history.interrupted = False
    first = history.epoch[-1] + 1 if history.epoch else 1
    last, epoch, step, batch, checked = first + cfg.epochs - 1, first, 0, None, False
    hooks = record_activations(model, objective.features) if objective.features else nullcontext({})
    labelled = objective.labelled  # the rows the training accuracy counts (None: all of them)
    good = _Snapshot(model, objective)  # the weights at the start of the epoch, restored if training diverges
    try:
        with hooks as features, procs.catch_interrupts():
            for epoch in range(first, last + 1):
                good.take()
                model.train()
                objective.train()
                start, step, stats = time.perf_counter(), 0, _EpochStats(procs, epoch, cfg.check_every)
                batches = bar(data.batches(cfg.batch_size, shuffle, True, procs.rank, procs.world_size),
                              total=steps_per_epoch, desc=f"epoch {epoch}", verbose=verbose, delay=2,
                              leave=False)  # long epochs only
                for step, batch in enumerate(batches, start=1):
                    if cfg.augment is not None:
                        batch = batch._replace(x=cfg.augment(batch.x))
                    with autocast():
                        out = net(batch.x)
                        if not checked:  # shapes and labels, once (the only host sync before the first check)
                            _check_outputs(out, labels)
                            objective.check(out, batch)
                            checked = True
                        value = objective(out, batch, features)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(value).backward()
                    procs.average_gradients(objective.parameters())
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    stats.add(value, out, batch.y, step, None if labelled is None else labelled[batch.idx])
                stats.close(step, last=True)
                _check_weights(params, epoch)
                procs.broadcast(model, parameters=False)  # rank 0's BatchNorm statistics (the weights agree)
                val_acc = _validate(model, val_data, procs) if val_data is not None else float("nan")
                history.add(epoch, stats, val_acc, opt.param_groups[0]["lr"], time.perf_counter() - start)
                if verbose:
                    print(history.line(last), flush=True)
            if procs.agree(procs.interrupted)[0]:  # a Ctrl-C after the last check: not lost, the run is complete
                history.interrupted = True
    except KeyboardInterrupt:
        history.interrupted = True
        if procs.rank == 0:
            print(f"Interrupted in epoch {epoch}, step {step}: the model keeps the weights trained so far; the "
                  f"history holds the {len(history)} completed epoch(s).", flush=True)
    except FloatingPointError as err:
        good.restore()
        cause = _bad_input(data) or (objective.diagnose(batch) if batch is not None else None)
        stopped = FloatingPointError(f"{err}; {cause or 'lower the learning rate, or check the inputs'}. The model "
                                     f"is back at its weights from the start of epoch {epoch}")
        stopped.history = history
        raise stopped from None
    finally:
        model.eval()
    return history


# --- what fit is given ---------------------------------------------------------------------------------------------


def _settings(config: TrainConfig | None, settings: dict) -> TrainConfig:
    if config is TrainConfig:
        raise TypeError("config: expected a TrainConfig instance, got the class TrainConfig itself; create one "
                        "first, e.g. TrainConfig(epochs=5)")
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    unknown = set(settings) - set(TrainConfig.field_names())
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s) {sorted(unknown)}; the training settings are "
                        f"the fields of TrainConfig: {TrainConfig.field_names()}")
    return replace(config or TrainConfig(), **settings)


def _objective(loss, teacher, teacher_logits, temperature, alpha) -> Objective:
    if loss is not None:
        if isinstance(loss, type):
            raise TypeError(f"loss: expected an Objective instance such as kd.CrossEntropy() or kd.Distillation(...), "
                            f"got the class {loss.__name__} itself; create it first, e.g. {loss.__name__}(...)")
        if not isinstance(loss, Objective):
            raise TypeError(f"loss: expected an Objective such as kd.CrossEntropy() or kd.Distillation(...), got "
                            f"{type(loss).__name__}")
        if any(v is not None for v in (teacher, teacher_logits, temperature, alpha)):
            raise ValueError("loss: give the teacher, teacher_logits, temperature and alpha to the objective, not "
                             "to fit as well")
        return loss
    if teacher is None and teacher_logits is None:
        for name, value in (("temperature", temperature), ("alpha", alpha)):
            if value is not None:
                raise ValueError(f"{name}: only used for distillation; pass teacher= or teacher_logits= as well "
                                 f"(got {name}={value!r} without a teacher)")
        return CrossEntropy()
    if teacher is not None and teacher_logits is not None:
        raise ValueError("teacher_logits: pass either a teacher or its cached logits, not both")
    return Distillation(teacher, teacher_logits, 4.0 if temperature is None else temperature,
                        0.9 if alpha is None else alpha)


def _check_parameters(model: nn.Module) -> None:
    """Refuse a model whose parameters are not plain floating-point tensors (e.g. torchao's int8 weights): the
    optimizer would train only the rest (the biases), silently."""
    odd = [(name, p) for name, p in model.named_parameters() if not p.is_floating_point() or
           (type(p) not in (nn.Parameter, torch.Tensor) and not isinstance(p, nn.parameter.UninitializedParameter))]
    if odd:
        name, p = odd[0]
        raise ValueError(f"model: expected floating-point nn.Parameter weights, got {len(odd)} parameter(s) of another "
                         f"kind, e.g. {name!r} ({type(p).__name__}, {p.dtype}): a quantized model (such as "
                         "kdtutor.compression.int8_linear's) cannot be trained; train the float model first, then "
                         "quantize it")


def _label_ranges(data: OnDevice, val_data: OnDevice | None, labelled) -> dict[str, tuple[int, int]]:
    """The smallest and largest label of the training (its labelled rows) and validation set: one sync each."""
    ranges = {}
    for name, d in (("train", data), ("val", val_data)):
        if d is not None:
            y = d.labels
            if y.is_floating_point() or y.dtype == torch.bool:
                raise ValueError(f"{name}: expected integer class labels, got {y.dtype}")
            if name == "train" and labelled is not None:
                y = y[labelled.to(y.device)]
            if len(y):
                ranges[name] = (int(y.min()), int(y.max()))
    if val_data is not None and data.tensors is not None and val_data.tensors is not None and \
            data.tensors[0].shape[1:] != val_data.tensors[0].shape[1:]:
        raise ValueError(f"val: samples of shape {tuple(val_data.tensors[0].shape[1:])} do not match the training "
                         f"samples' {tuple(data.tensors[0].shape[1:])}")
    return ranges


def _check_outputs(out: torch.Tensor, labels: dict[str, tuple[int, int]]) -> None:
    if out.ndim < 2:
        raise ValueError(f"model: returns outputs of shape {tuple(out.shape)}; expected (batch, classes) logits")
    classes = out.shape[-1]
    for name, (low, high) in labels.items():
        if low < 0 or high >= classes:
            raise ValueError(f"{name}: labels must lie in [0, {classes - 1}] (the model has {classes} outputs), "
                             f"got labels from {low} to {high}")


def _optimizer(cfg: TrainConfig, params, steps: int, fused: bool = False):
    """The optimizer and its schedule; ``fused`` (on CUDA) makes AdamW update every parameter in one kernel."""
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    else:
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay,
                              nesterov=momentum > 0)
    if cfg.schedule == "cosine":
        factor = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731
    else:
        factor = lambda s: 1.0  # noqa: E731
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _amp_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype | None:
    """The autocast dtype on CUDA: the override, else bf16 where the GPU has it natively (not emulated), else fp16."""
    if device.type != "cuda" or not cfg.amp:
        return None
    if cfg.amp_dtype is not None:
        return cfg.amp_dtype
    try:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch has no including_emulation (and counts only native support)
        native_bf16 = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native_bf16 else torch.float16


# --- what fit records ----------------------------------------------------------------------------------------------


class _EpochStats:
    """Loss and accuracy summed on the device; losses checked for NaN/inf every ``check_every`` steps.

    With several processes each check is agreed on by all of them (one small all-reduce), so that a non-finite loss
    or a Ctrl-C on one process stops every process at the same step, and the epoch's sums are added up at its end.
    """

    def __init__(self, procs: distributed.Group, epoch: int, check_every: int):
        self.procs, self.epoch, self.check_every, self.window = procs, epoch, check_every, []
        self.loss_sum = torch.zeros((), device=procs.device)
        self.correct = torch.zeros((), device=procs.device, dtype=torch.int64)
        self.seen, self.steps = 0, 0  # seen: an int, or a device tensor when only some rows are labelled

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor, step: int,
            rows: torch.Tensor | None = None) -> None:
        """Record a step; ``rows`` (bool, one per sample) marks the labelled samples, the only ones counted."""
        self.window.append(loss.detach())
        right = out.detach().argmax(-1) == y
        if rows is None:
            self.correct += right.sum()
            self.seen += y.numel()
        else:  # summed on the device: no host sync
            self.correct += (right & rows).sum()
            self.seen = self.seen + rows.sum()
        if len(self.window) == self.check_every:
            self.close(step)

    def close(self, step: int, last: bool = False) -> None:
        """Check the losses since the last check; at the epoch's ``last`` step, also add up the processes' sums."""
        if not self.window and not (last and self.procs.distributed):
            return
        losses = torch.stack(self.window) if self.window else torch.zeros(0, device=self.procs.device)
        finite = torch.isfinite(losses)
        here = not bool(finite.all())
        anywhere, stop = self.procs.agree(here, self.procs.interrupted)
        if here:
            first = int((~finite).nonzero()[0])
            bad_step = step - len(self.window) + 1 + first
            where = f" on rank {self.procs.rank}" if self.procs.distributed else ""
            raise FloatingPointError(f"loss became {losses[first].item()}{where} at epoch {self.epoch}, step "
                                     f"{bad_step} (training stopped)")
        if anywhere:
            raise FloatingPointError(f"loss became non-finite on another rank by epoch {self.epoch}, step {step} "
                                     "(training stopped on every rank)")
        if stop:
            raise KeyboardInterrupt
        self.loss_sum += losses.sum()
        self.steps += len(self.window)
        self.window = []
        if last and self.procs.distributed:
            total = self.procs.sum(torch.stack([self.loss_sum.double(), self.correct.double(),
                                                torch.as_tensor(self.seen, device=self.procs.device).double(),
                                                torch.tensor(float(self.steps), device=self.procs.device)]))
            self.loss_sum, self.correct = total[0], total[1]
            self.seen, self.steps = int(total[2]), int(total[3])

class _Snapshot:
    """A copy of the model's (and the objective's) weights, taken at the start of each epoch."""

    def __init__(self, *modules: nn.Module):
        self.modules, self.states = modules, None

    def take(self) -> None:
        self.states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.modules]

    def restore(self) -> None:
        if self.states is not None:
            for module, state in zip(self.modules, self.states, strict=True):
                module.load_state_dict(state)


def _validate(model: nn.Module, val_data: OnDevice, procs: distributed.Group) -> float:
    """Validation accuracy; with several processes, each evaluates its part of the set and the counts are added."""
    if not procs.distributed:
        return evaluate(model, val_data)
    part = torch.arange(len(val_data)).tensor_split(procs.world_size)[procs.rank]
    counts = torch.zeros(2)
    if len(part):
        shard = Subset(val_data.data, part.tolist()) if val_data.tensors is None else \
            TensorDataset(*(t[part.to(t.device)] for t in val_data.tensors))  # already on the device
        counts = torch.tensor([evaluate(model, shard) * len(part), len(part)])
    correct, total = procs.sum(counts).tolist()
    return correct / total


def _bad_input(data: OnDevice) -> str | None:
    """After a non-finite loss: the first training sample whose inputs hold NaN or infinity (one pass, in order)."""
    for batch in data.batches(1024):
        if batch.x.is_floating_point():
            bad = ~torch.isfinite(batch.x.reshape(len(batch.x), -1)).all(1)
            if bool(bad.any()):
                return (f"train: sample {int(batch.idx[bad.nonzero()[0, 0]])} (its index in the training set) holds "
                        "NaN or infinite values: the inputs are the cause, not the learning rate")
    return None


def _check_weights(params: list[torch.Tensor], epoch: int) -> None:
    """Weights can turn NaN or infinite while every loss so far was finite (e.g. a huge learning rate)."""
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise FloatingPointError(f"weights became NaN or infinite in epoch {epoch}")


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run (one entry per *completed* epoch)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)  # of the labelled rows (NaN if an epoch had none)
    val_acc: list[float] = field(default_factory=list)  # NaN when fit had no val set
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    interrupted: bool = False

    COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc", "lr", "seconds")

    def __len__(self) -> int:
        return len(self.epoch)

    def add(self, epoch: int, stats: _EpochStats, val_acc: float, lr: float, seconds: float) -> None:
        self.epoch.append(epoch)
        self.train_loss.append(stats.loss_sum.item() / max(stats.steps, 1))
        seen = int(stats.seen)
        self.train_acc.append(stats.correct.item() / seen if seen else float("nan"))
        self.val_acc.append(val_acc)
        self.lr.append(lr)
        self.seconds.append(seconds)

    def as_dict(self) -> dict:
        """The columns as a dict of lists (e.g. for ``pandas.DataFrame`` or a checkpoint's metadata)."""
        return {k: list(getattr(self, k)) for k in self.COLUMNS}

    @classmethod
    def from_dict(cls, columns: dict) -> History:
        """The inverse of :meth:`as_dict` (e.g. the ``history`` stored in a shipped model's record)."""
        return cls(**{k: list(columns[k]) for k in cls.COLUMNS})

    def line(self, last_epoch: int) -> str:
        """The printed summary of the latest epoch."""
        width = len(str(last_epoch))
        text = (f"epoch {self.epoch[-1]:>{width}}/{last_epoch}  loss {self.train_loss[-1]:.4f}  "
                f"train acc {100 * self.train_acc[-1]:5.2f}%")
        if not math.isnan(self.val_acc[-1]):
            text += f"  val acc {100 * self.val_acc[-1]:5.2f}%"
        return text + f"  ({self.seconds[-1]:.1f} s)"

    def plot(self, ax=None, label: str = "", train: bool = True, **style):
        """Learning curves on one matplotlib axis: training accuracy (dashed, unless ``train=False``) and
        validation accuracy per epoch, in percent. ``style`` goes to ``ax.plot`` (e.g. ``ms=3``)."""
        import matplotlib.pyplot as plt

        ax = ax or plt.gca()
        if train:
            ax.plot(self.epoch, [100 * a for a in self.train_acc], "--", label=f"{label} train".strip(), **style)
        if any(not math.isnan(a) for a in self.val_acc):
            ax.plot(self.epoch, [100 * a for a in self.val_acc], "-o", label=f"{label} val".strip(), **style)
        ax.set(xlabel="epoch", ylabel="accuracy (%)")
        ax.legend()
        return ax
