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
  ``fit`` and shuffled there with a device-side permutation (:class:`kdtutor.data.OnDevice`). A
  :class:`kdtutor.data.Stream` is drawn afresh at every step instead (a language model's text windows:
  :func:`kdtutor.lm.train` is ``fit`` on one); it has no sample indices, so cached teacher outputs, cached features,
  a ``labelled`` mask and ``augment`` are refused with it, and its inputs are not checked in advance.
* **Fast by default**: a frozen teacher runs once per ``fit`` where its logits cannot change (images in memory,
  no augmentation) rather than on every batch of every epoch (``online=True`` keeps it per batch), and a
  convolutional model trains on the CPU in the channels-last layout (``channels_last="auto"``).
* **Schedule and clipping**: ``warmup`` steps of linear warm-up, then cosine to 0 (or constant); ``clip`` caps the
  gradients' total norm (of the student and any parameters the objective trains), after unscaling under float16.
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

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from kdtutor import checks
from kdtutor.data import OnDevice, Stream, nonempty
from kdtutor.evaluation import evaluate
from kdtutor.methods import CrossEntropy, Distillation, Objective
from kdtutor.models import record_activations
from kdtutor.progress import bar
from kdtutor.training import distributed
from kdtutor.training.config import TrainConfig, autocast_dtype, build_optimizer
from kdtutor.training.history import EpochStats, History

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
        alpha: float | None = None, online: bool | None = None, **settings) -> History:
    """Train ``model`` on ``train`` by minimising ``loss`` (cross-entropy on the labels by default).

    ``config`` holds the training settings (:class:`TrainConfig`: epochs, batch size, learning rate, optimizer,
    schedule and warm-up, gradient clipping, augmentation, seed, mixed precision, memory layout); any of its fields
    may be passed as a keyword instead, overriding it. ``teacher=`` or ``teacher_logits=`` (with ``temperature``,
    default 4, ``alpha``, default 0.9, and for a teacher ``online``) are shortcuts for ``loss=Distillation(...)``.
    ``val`` is evaluated after every epoch.
    Prints one line per epoch, and a progress bar inside epochs that last longer than two seconds, unless
    ``verbose=False``. The model is left on the training device, in eval mode. Returns the :class:`History`; see the
    module docstring for interrupts, non-finite losses and continuing a run.

    A ``teacher`` runs once over the training set when its logits cannot change (images in memory, no
    augmentation), and on every batch otherwise or with ``online=True`` (:class:`TeacherObjective`).
    It is used in place, not copied (a large teacher costs no second copy): ``fit`` moves it to the training
    device, puts it in eval mode and, in the channels-last layout, converts it to that layout; it stays so
    afterwards (its weights are never changed). A teacher stored in another dtype (float64, bfloat16) reads
    the images in its dtype and its logits are cast back to theirs. The training accuracy counts the labelled rows
    only (a ``labelled`` mask leaves the others out; NaN for an epoch without one).
    """
    cfg = _settings(config, settings)
    objective = _objective(loss, teacher, teacher_logits, temperature, alpha, online)
    checks.nn_module("model", model)
    _check_parameters(model)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history: expected a kdtutor History (e.g. the one an earlier fit returned) or None, got "
                        f"{type(history).__name__}")
    run = _Run.prepare(model, train, val, cfg, objective, device, verbose)
    history = history if history is not None else History()
    history.interrupted = False
    first = history.epoch[-1] + 1 if history.epoch else 1
    where = _Where(epoch=first)  # the epoch, step and batch reached: what the handlers below report
    hooks = record_activations(model, objective.features) if objective.features else nullcontext({})
    good = _Snapshot(model, objective)  # the weights at the start of the epoch, restored if training diverges
    try:
        with hooks as features, run.procs.catch_interrupts():
            for where.epoch in range(first, first + cfg.epochs):
                good.take()
                start = time.perf_counter()
                stats = run.train_epoch(where, features)
                _check_weights(run.params, where.epoch)
                run.procs.broadcast(model, parameters=False)  # rank 0's BatchNorm statistics (the weights agree)
                val_acc = _validate(model, run.val, run.procs) if run.val is not None else float("nan")
                history.add(where.epoch, stats.mean_loss(), stats.accuracy(), val_acc,
                            run.opt.param_groups[0]["lr"], time.perf_counter() - start)
                if run.verbose:
                    print(history.line(first + cfg.epochs - 1), flush=True)
            if run.procs.agree(run.procs.interrupted)[0]:  # a Ctrl-C after the last check: the run is complete
                history.interrupted = True
    except KeyboardInterrupt:
        history.interrupted = True
        if run.verbose:
            _report_interrupt(where, history)
    except FloatingPointError as err:
        good.restore()
        raise _diverged(err, run, where, history) from None
    finally:
        model.eval()
        objective.finish()  # e.g. a teacher pass's rows: this run's only
    return history


# --- one run: what fit sets up, and one epoch of steps ---------------------------------------------------------------


@dataclass
class _Where:
    """How far a run got: the epoch, the step within it and the last batch (for the interrupt and error reports)."""

    epoch: int
    step: int = 0
    batch: object = None


class _Run:
    """What one ``fit`` call sets up before its first step (:meth:`prepare`) and the epochs it trains with it."""

    @classmethod
    def prepare(cls, model, train, val, cfg: TrainConfig, objective: Objective, device, verbose: bool) -> _Run:
        run = cls()
        run.model, run.objective, run.cfg = model, objective, cfg
        device = torch.device(device) if device is not None else default_device()
        run.procs = procs = distributed.group(device)  # one process, or this one's place among torchrun's
        device, run.verbose = procs.device, verbose and procs.rank == 0
        if isinstance(train, Stream):
            _check_stream(cfg, objective)
        layout = cfg.channels_last_for(model, device)  # "auto": channels-last for convolutions on the CPU
        run.data = train if isinstance(train, Stream) else OnDevice(nonempty("train", train), device, layout)
        run.val = OnDevice(nonempty("val", val), device, layout) if val is not None else None
        run.steps_per_epoch = run.data.steps(cfg.batch_size, procs.world_size)
        steps = cfg.epochs * run.steps_per_epoch
        if cfg.warmup >= steps:
            raise checks.bad("warmup", f"an integer from 0 to steps - 1 = {steps - 1}", cfg.warmup)
        model.to(device)
        with torch.random.fork_rng(devices=[]):  # parameters an objective builds start from the run's seed
            torch.manual_seed(cfg.seed)
            objective.attach(model, run.data)  # e.g. a FitNets regressor sized to the student's features
        if layout:  # convolutions in the channels-last layout: the student's, and every teacher's
            for net in (model, *objective.teachers()):
                net.to(memory_format=torch.channels_last)
        objective.to(device).setup(run.data, cfg.augment)  # e.g. one teacher pass where the images never change
        procs.broadcast(objective)  # e.g. the same FitNets regressors on every process
        run.labels = _label_ranges(run.data, run.val, objective.labelled)  # checked once against the outputs
        run.params = [p for p in (*model.parameters(), *objective.parameters()) if p.requires_grad]
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"model: has no trainable parameters ({type(model).__name__}); nothing for fit to train")
        run.opt, run.sched = build_optimizer(cfg, run.params, steps=steps, fused=device.type == "cuda")
        amp_dtype = autocast_dtype(device, cfg)
        run.autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
        run.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        run.net = procs.wrap(model, some_unused=bool(objective.features))  # the model, or DDP around it
        torch.manual_seed(cfg.seed + procs.rank)  # dropout and augmentation differ between processes
        run.shuffle = run.data.generator(cfg.seed)  # the same order on every process, each takes its part of a batch
        run.check = run._check_first
        return run

    def train_epoch(self, where: _Where, features: dict) -> EpochStats:
        """One pass over the training data; the losses are checked every ``check_every`` steps and at the end."""
        self.model.train()
        self.objective.train()
        where.step, stats = 0, EpochStats(self.procs, where.epoch, self.cfg.check_every)
        labelled = self.objective.labelled  # the rows the training accuracy counts (None: all of them)
        batches = bar(self.data.batches(self.cfg.batch_size, self.shuffle, True, self.procs.rank,
                                        self.procs.world_size),
                      total=self.steps_per_epoch, desc=f"epoch {where.epoch}", verbose=self.verbose, delay=2,
                      leave=False)  # long epochs only
        for where.step, batch in enumerate(batches, start=1):
            where.batch, out, value = self.step(batch, features)
            stats.add(value, out, where.batch.y, where.step, None if labelled is None else labelled[batch.idx])
        stats.close(where.step, last=True)
        return stats

    def step(self, batch, features: dict):
        """One optimizer step on ``batch`` (augmented first, if the run augments): the batch, outputs and loss."""
        if self.cfg.augment is not None:
            batch = batch._replace(x=self.cfg.augment(batch.x))
        with self.autocast():
            out = self.net(batch.x)
            self.check(out, batch)
            value = self.objective(out, batch, features)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(value).backward()
        self.procs.average_gradients(self.objective.parameters())
        if self.cfg.clip is not None:  # the norm of the true gradients: unscaled first (a no-op without a scaler)
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return batch, out, value

    def _check_first(self, out: torch.Tensor, batch) -> None:
        """Shapes and labels on the run's first batch (its only host sync before the first loss check); then none."""
        _check_outputs(out, self.labels)
        self.objective.check(out, batch)
        self.check = lambda out, batch: None


def _report_interrupt(where: _Where, history: History) -> None:
    print(f"Interrupted in epoch {where.epoch}, step {where.step}: the model keeps the weights trained so far; "
          f"the history holds the {len(history)} completed epoch(s).", flush=True)


def _check_stream(cfg: TrainConfig, objective: Objective) -> None:
    """What a Stream cannot do: its batches are drawn afresh, with no sample index to look rows up by."""
    if cfg.augment is not None:
        raise ValueError("augment: a Stream's batches are drawn as they are; augment inside its batches function")
    if objective.indexed:
        raise ValueError("train: a Stream's batches have no sample indices, so cached teacher outputs, cached "
                         "features and a labelled mask cannot be looked up; pass teacher= to run the teacher online")


def _diverged(err: FloatingPointError, run: _Run, where: _Where, history: History) -> FloatingPointError:
    """The error a non-finite loss or weight raises: its likeliest cause, and the history attached."""
    cause = _bad_input(run.data) or (run.objective.diagnose(where.batch) if where.batch is not None else None)
    stopped = FloatingPointError(f"{err}; {cause or 'lower the learning rate, or check the inputs'}. The model is "
                                 f"back at its weights from the start of epoch {where.epoch}")
    stopped.history = history
    return stopped


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


def _objective(loss, teacher, teacher_logits, temperature, alpha, online) -> Objective:
    if loss is not None:
        if isinstance(loss, type):
            raise TypeError(f"loss: expected an Objective instance such as kd.CrossEntropy() or kd.Distillation(...), "
                            f"got the class {loss.__name__} itself; create it first, e.g. {loss.__name__}(...)")
        if not isinstance(loss, Objective):
            raise TypeError(f"loss: expected an Objective such as kd.CrossEntropy() or kd.Distillation(...), got "
                            f"{type(loss).__name__}")
        if any(v is not None for v in (teacher, teacher_logits, temperature, alpha, online)):
            raise ValueError("loss: give the teacher, teacher_logits, temperature, alpha and online to the "
                             "objective, not to fit as well")
        return loss
    if teacher is None and teacher_logits is None:
        for name, value in (("temperature", temperature), ("alpha", alpha), ("online", online)):
            if value is not None:
                raise ValueError(f"{name}: only used for distillation; pass teacher= or teacher_logits= as well "
                                 f"(got {name}={value!r} without a teacher)")
        return CrossEntropy()
    if teacher is not None and teacher_logits is not None:
        raise ValueError("teacher_logits: pass either a teacher or its cached logits, not both")
    if online is not None and teacher is None:
        raise ValueError(f"online: says when a teacher model runs; cached teacher_logits have no teacher to run "
                         f"(got online={online!r} with teacher_logits)")
    given = {"temperature": temperature, "alpha": alpha, "online": online}  # the rest: Distillation's defaults
    return Distillation(teacher, teacher_logits, **{k: v for k, v in given.items() if v is not None})


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
        if d is not None and d.labels is not None:  # a Stream's are checked on its first batch
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


# --- what fit keeps and checks -----------------------------------------------------------------------------------


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
    if isinstance(data, Stream):  # drawn afresh: no fixed sample to point at
        return None
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
