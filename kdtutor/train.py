"""Training and evaluation: one loop for plain training and for distillation.

``fit(student, train, epochs=8)`` trains on hard labels; add ``teacher=...`` (or precomputed ``teacher_logits=...``)
and it minimises :func:`kdtutor.losses.distillation_loss` instead::

    history = fit(student, train, epochs=8, teacher=teacher, temperature=4, alpha=0.9, val=val)

What the loop does for you:

* **Device**: CUDA, then Apple's MPS, then CPU (or ``device=``). On CUDA it uses mixed precision: bfloat16 where
  the GPU supports it, else float16 with a gradient scaler. Losses are always computed in float32.
* **Fast path**: an in-memory ``TensorDataset`` is moved to the device once and shuffled by index: no DataLoader,
  no workers. Any other map-style dataset goes through a ``DataLoader``.
* **Teacher**: kept in eval mode and run under ``torch.no_grad()`` on the same (possibly augmented) batch.
  ``teacher_logits`` is the cheaper alternative: one row per training sample, aligned by index; it cannot be
  combined with ``augment`` because a cached logit belongs to the un-augmented image.
* **Determinism**: ``seed`` fixes the shuffling, dropout and augmentation; on CPU the same seed and the same
  initial weights give identical trained weights.
* **Nothing is lost**: pressing stop (``KeyboardInterrupt``) ends training cleanly — the model keeps the weights
  trained so far and ``fit`` returns the history of the completed epochs with ``history.interrupted = True``. Pass
  your own ``history=History()`` to keep it even if something else goes wrong; a non-finite loss raises
  ``FloatingPointError`` naming the epoch and step (checked every ``check_every`` steps, so the GPU is not
  synchronised on every step), with the history attached as ``err.history``.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from kdtutor.losses import _check_alpha, _check_logits, _check_targets, _check_temperature, _distillation_loss


def default_device() -> torch.device:
    """CUDA if available, then Apple's MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run (one entry per *completed* epoch)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)  # NaN when fit had no val set
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    interrupted: bool = False

    def __len__(self) -> int:
        return len(self.epoch)

    def as_dict(self) -> dict:
        """The columns as a dict of lists (e.g. for ``pandas.DataFrame``)."""
        return {k: list(getattr(self, k)) for k in ("epoch", "train_loss", "train_acc", "val_acc", "lr", "seconds")}

    def plot(self, ax=None, label: str = ""):
        """Learning curves: training and validation accuracy per epoch on one matplotlib axis."""
        import matplotlib.pyplot as plt

        ax = ax or plt.gca()
        ax.plot(self.epoch, [100 * a for a in self.train_acc], "--", label=f"{label} train".strip())
        if any(not math.isnan(a) for a in self.val_acc):
            ax.plot(self.epoch, [100 * a for a in self.val_acc], "-o", label=f"{label} val".strip())
        ax.set(xlabel="epoch", ylabel="accuracy (%)")
        ax.legend()
        return ax


def _batches(data: Dataset, batch_size: int, device, *, generator=None, with_index=False):
    """Yield ``(x, y)`` or ``(x, y, idx)`` batches on ``device``; shuffled when a generator is given."""
    n = len(data)
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x_all, y_all = (t.to(device) for t in data.tensors)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if generator is not None and len(idx) < 2 < n:  # BatchNorm cannot train on a batch of one
                break
            idx_dev = idx.to(device)
            yield (x_all[idx_dev], y_all[idx_dev], idx) if with_index else (x_all[idx_dev], y_all[idx_dev])
        return
    loader = DataLoader(range(n), batch_size=batch_size, shuffle=generator is not None, generator=generator)
    for idx in loader:
        samples = [data[int(i)] for i in idx]
        x = torch.stack([torch.as_tensor(s[0]) for s in samples]).to(device)
        y = torch.as_tensor([int(s[1]) for s in samples], dtype=torch.int64, device=device)
        yield (x, y, idx) if with_index else (x, y)


@torch.no_grad()
def compute_logits(model: nn.Module, data: Dataset, batch_size: int = 1024, device=None) -> torch.Tensor:
    """The model's logits for every sample of ``data`` in order, as a float32 CPU tensor ``N x classes``.

    Use it to cache a teacher's outputs once (``fit(..., teacher_logits=compute_logits(teacher, train))``).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(x).float().cpu() for x, _ in _batches(data, batch_size, device)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1024, device=None) -> float:
    """Top-1 accuracy of ``model`` on ``data``, a fraction in [0, 1]. The model's train/eval mode is restored."""
    logits = compute_logits(model, data, batch_size, device)
    labels = torch.as_tensor([int(data[i][1]) for i in range(len(data))]) if not isinstance(data, TensorDataset) \
        else data.tensors[1].cpu()
    return (logits.argmax(1) == labels).float().mean().item()


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def _make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    raise ValueError(f"optimizer: expected 'adamw' or 'sgd', got {name!r}")


def fit(model: nn.Module, train: Dataset, *, epochs: int, teacher: nn.Module | None = None,
        teacher_logits: torch.Tensor | None = None, temperature: float = 4.0, alpha: float = 0.9,
        val: Dataset | None = None, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
        optimizer: str = "adamw", momentum: float = 0.9, schedule: str = "cosine", augment=None, seed: int = 0,
        device=None, amp: bool = True, history: History | None = None, verbose: bool = True,
        check_every: int = 50) -> History:
    """Train ``model`` on ``train`` for ``epochs`` epochs; distil from ``teacher`` or ``teacher_logits`` if given.

    Loss: cross-entropy on labels, or with a teacher
    ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE`` (see :mod:`kdtutor.losses`).
    ``schedule`` is ``"cosine"`` (learning rate annealed to 0 over all steps) or ``"constant"``; ``augment`` a
    callable on a batch tensor on the device (e.g. :class:`kdtutor.data.RandomShiftFlip`). Prints one line per
    epoch unless ``verbose=False``. The model is left on the training device, in eval mode. Returns the
    :class:`History`; see the module docstring for interrupts and non-finite losses.
    """
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    check_every = _positive_int("check_every", check_every)
    if len(train) == 0:
        raise ValueError("train: the dataset is empty")
    if teacher is not None and teacher_logits is not None:
        raise ValueError("teacher_logits: pass either a teacher or its cached logits, not both")
    if teacher_logits is not None:
        if augment is not None:
            raise ValueError("augment: cannot be combined with teacher_logits — a cached logit belongs to the "
                             "un-augmented image; pass teacher= to teach on the augmented view")
        if teacher_logits.ndim != 2 or len(teacher_logits) != len(train):
            raise ValueError(f"teacher_logits: expected one row per training sample, shape ({len(train)}, classes), "
                             f"got {tuple(teacher_logits.shape)}")
    distil = teacher is not None or teacher_logits is not None
    t, a = (_check_temperature(temperature), _check_alpha(alpha)) if distil else (1.0, 0.0)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule: expected 'cosine' or 'constant', got {schedule!r}")

    device = torch.device(device) if device is not None else default_device()
    amp_dtype = None
    if amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    cached = teacher_logits.to(device) if teacher_logits is not None else None
    opt = _make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))) if schedule == "cosine" else
        (lambda s: 1.0))
    history = history if history is not None else History()
    first_epoch = history.epoch[-1] + 1 if history.epoch else 1
    checked = False
    epoch, step = first_epoch, 0
    try:
        for epoch in range(first_epoch, first_epoch + epochs):
            model.train()
            start, n_seen = time.perf_counter(), 0
            window: list[torch.Tensor] = []
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for step, (x, y, idx) in enumerate(_batches(train, batch_size, device, generator=shuffle,
                                                        with_index=True), start=1):
                if augment is not None:
                    x = augment(x)
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                    logits = model(x)
                    if teacher is not None:
                        with torch.no_grad():
                            t_logits = teacher(x)
                    elif cached is not None:
                        t_logits = cached[idx.to(device)]
                if not checked:  # validate shapes and labels once, on the first batch (one sync)
                    _check_targets(y, logits)
                    if distil:
                        _check_logits(logits, t_logits)
                    checked = True
                if distil:
                    loss = _distillation_loss(logits, t_logits, y, t, a)
                else:
                    loss = nn.functional.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                window.append(loss.detach())
                correct += (logits.argmax(1) == y).sum()
                n_seen += len(y)
                if len(window) == check_every:
                    loss_sum += _checked_sum(window, epoch, step)
                    window = []
            if window:
                loss_sum += _checked_sum(window, epoch, step)
            val_acc = evaluate(model, val, device=device) if val is not None else float("nan")
            history.epoch.append(epoch)
            history.train_loss.append(loss_sum.item() / step)
            history.train_acc.append(correct.item() / n_seen)
            history.val_acc.append(val_acc)
            history.lr.append(opt.param_groups[0]["lr"])
            history.seconds.append(time.perf_counter() - start)
            if verbose:
                print(_epoch_line(history, first_epoch + epochs - 1), flush=True)
    except KeyboardInterrupt:
        history.interrupted = True
        print(f"Interrupted in epoch {epoch}, step {step}: the model keeps the weights trained so far; the history "
              f"holds the {len(history)} completed epoch(s).", flush=True)
    except FloatingPointError as err:
        err.history = history
        raise
    model.eval()
    return history


def _checked_sum(window: list[torch.Tensor], epoch: int, step: int) -> torch.Tensor:
    """Sum of the window's losses; raises FloatingPointError naming the first non-finite step."""
    losses = torch.stack(window)
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        bad_step = step - len(window) + 1 + first
        raise FloatingPointError(f"loss became {losses[first].item()} at epoch {epoch}, step {bad_step}; lower the "
                                 "learning rate or check the inputs (training stopped)")
    return losses.sum()


def _epoch_line(h: History, last_epoch: int) -> str:
    width = len(str(last_epoch))
    line = (f"epoch {h.epoch[-1]:>{width}}/{last_epoch}  loss {h.train_loss[-1]:.4f}  "
            f"train acc {100 * h.train_acc[-1]:5.2f}%")
    if not math.isnan(h.val_acc[-1]):
        line += f"  val acc {100 * h.val_acc[-1]:5.2f}%"
    return line + f"  ({h.seconds[-1]:.1f} s)"
