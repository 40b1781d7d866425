"""Training on several processes: what :func:`~kdtutor.training.fit` does when it is launched by ``torchrun``.

A script that calls ``fit`` runs unchanged on several GPUs (or CPU processes) with::

    torchrun --nproc_per_node 4 my_script.py

``torchrun`` starts one process per GPU and tells each its rank and the world size (environment variables);
``fit`` sees them (:func:`group`) and

* starts the process group once (NCCL on CUDA, gloo on CPU) and puts each process on its own GPU
  (``cuda:LOCAL_RANK``);
* wraps the student in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients of every
  step over the processes (the frozen teacher is not wrapped: it only runs forward); an objective's own parameters
  (a FitNets regressor) are averaged by :meth:`Group.average_gradients`;
* trains each process on its part of every global batch (:meth:`kdtutor.data.OnDevice.batches`): the global batch
  is ``batch_size`` × the number of processes, so scale the learning rate with it (or divide ``batch_size``);
  sample indices stay global, so cached teacher logits are looked up as in one process;
* adds up the losses, accuracies and validation counts of all processes (:meth:`Group.sum`), so every process
  returns the same :class:`~kdtutor.training.History` (but for ``seconds``, which each measures); only rank 0
  prints, and :func:`kdtutor.checkpoint.save` writes only on rank 0;
* stops every process together: the non-finite-loss check (every ``check_every`` steps) and Ctrl-C (caught under
  ``torchrun`` and read at that check) are agreed on by all processes, so one process never waits for another
  that has stopped. (``torchrun`` itself forwards Ctrl-C to every process and kills them 30 seconds later: the
  check, the epoch's validation and your script's save must fit in that time.)

**BatchNorm.** Each process normalizes with the statistics of its own part of the batch (so a model with
BatchNorm does not train exactly as one process with the global batch would; a model without it does, up to
rounding — the tests check this), and the running statistics kept for evaluation are rank 0's, copied to every
process after each epoch. For statistics over the global batch, convert the model first with
:meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` (on GPUs).

In one process (no ``torchrun``) none of this happens: :func:`group` returns a group of one.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Group", "group"]


@dataclass
class Group:
    """The processes training together: this one's ``rank`` among ``world_size``, and its ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    interrupted: bool = False  # Ctrl-C seen by this process (under torchrun), acted on at the next agreed check

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait until every process gets here (e.g. until rank 0 has stored the teacher's logits)."""
        if self.distributed:
            dist.barrier()

    def wrap(self, model: nn.Module, some_unused: bool = False) -> nn.Module:
        """The model to call in training steps: ``model`` itself, or a DistributedDataParallel around it.

        ``some_unused``: the loss may not reach every parameter (an objective that reads intermediate features, such
        as FitNets alone, leaves the classifier without gradients); DDP then looks for them after every backward."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=some_unused)

    def broadcast(self, module: nn.Module, parameters: bool = True) -> None:
        """Give every process rank 0's parameters and buffers, or (``parameters=False``) its buffers only: the
        BatchNorm statistics at the end of an epoch, when DDP has already kept the parameters equal."""
        if self.distributed:
            for t in (*(module.parameters() if parameters else ()), *module.buffers()):
                dist.broadcast(t.data, src=0)

    def average_gradients(self, params) -> None:
        """Average the gradients of parameters that DistributedDataParallel does not own (an objective's)."""
        if self.distributed:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world_size

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the processes (float64, on this process's device)."""
        values = values.to(self.device, torch.float64)
        if self.distributed:
            dist.all_reduce(values)
        return values

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag true on *any* process (one collective call): how the processes decide to stop together."""
        if not self.distributed:
            return list(flags)
        return [bool(f) for f in self.sum(torch.tensor([float(f) for f in flags])) > 0]

    @contextmanager
    def catch_interrupts(self):
        """Under torchrun, turn Ctrl-C into a flag that every process reads at the next check (a process stopped on
        its own would leave the others waiting); in one process, Ctrl-C stays an immediate KeyboardInterrupt."""
        if not self.distributed or threading.current_thread() is not threading.main_thread():
            yield
            return

        def note(signum, frame):
            self.interrupted = True

        previous = signal.signal(signal.SIGINT, note)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def group(device: torch.device) -> Group:
    """The group this process trains in: started from torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) the first time, or one already started by the caller."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_available() or (not dist.is_initialized() and world <= 1):
        return Group(device=device)
    if device.type == "cuda":  # one GPU per process
        local = int(os.environ.get("LOCAL_RANK", device.index or 0))
        if local >= torch.cuda.device_count():
            raise ValueError(f"device: process {local} on this machine needs cuda:{local}, but there are "
                             f"{torch.cuda.device_count()} GPUs; start at most that many processes per machine "
                             "(torchrun --nproc_per_node), or pass device='cpu'")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_close)
    return Group(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
