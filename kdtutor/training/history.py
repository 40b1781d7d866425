"""What :func:`~kdtutor.training.fit` records: ``History`` (one row per completed epoch) and ``EpochStats`` (the
running sums of an epoch, kept on the device, with the check for non-finite losses that stops a run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kdtutor.training import distributed

__all__ = ["EpochStats", "History"]


class EpochStats:
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
        self._stop_if_bad(losses, step)
        self.loss_sum += losses.sum()
        self.steps += len(self.window)
        self.window = []
        if last and self.procs.distributed:
            self._add_up_processes()

    def _stop_if_bad(self, losses: torch.Tensor, step: int) -> None:
        """The vote: a non-finite loss here or on another process, or a Ctrl-C anywhere, stops every process."""
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

    def _add_up_processes(self) -> None:
        total = self.procs.sum(torch.stack([self.loss_sum.double(), self.correct.double(),
                                            torch.as_tensor(self.seen, device=self.procs.device).double(),
                                            torch.tensor(float(self.steps), device=self.procs.device)]))
        self.loss_sum, self.correct = total[0], total[1]
        self.seen, self.steps = int(total[2]), int(total[3])

    def mean_loss(self) -> float:
        """The epoch's mean training loss (one host sync)."""
        return self.loss_sum.item() / max(self.steps, 1)

    def accuracy(self) -> float:
        """The epoch's training accuracy over its labelled rows (NaN if it had none)."""
        seen = int(self.seen)
        return self.correct.item() / seen if seen else float("nan")


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

    def add(self, epoch: int, train_loss: float, train_acc: float, val_acc: float, lr: float, seconds: float) -> None:
        """Append one completed epoch."""
        self.epoch.append(epoch)
        self.train_loss.append(train_loss)
        self.train_acc.append(train_acc)
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
