"""Distil the book's small CNN from the shipped teacher on several GPUs (or CPU processes) with torchrun.

    torchrun --nproc_per_node 4 scripts/distill_ddp.py     # 4 processes: 4 GPUs, or 4 CPU processes without one
    python scripts/distill_ddp.py                          # the same script in one process
    python scripts/distill_ddp.py --epochs 1 --limit 2000  # a quick try on 2,000 images

Offline distillation at scale: the teacher runs once, on rank 0, and its logits are stored (kdtutor's logit cache);
every process then reads the stored rows and trains on its own shard of each global batch (``fit`` under torchrun,
see kdtutor.training.distributed). The teacher never runs during the student's training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import kdtutor as kd
from kdtutor.training.distributed import group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--global-batch", type=int, default=512, help="samples per step, over all processes")
    parser.add_argument("--lr", type=float, default=8e-3, help="for the global batch")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: a GPU per process if there is one)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images of the split only")
    parser.add_argument("--out", type=Path, default=Path("students/small_cnn_ddp.pt"))
    args = parser.parse_args()

    procs = group(torch.device(args.device) if args.device else kd.default_device())  # (fit would start it too)
    train, test = kd.load_fashion_mnist()
    train, val = kd.book_split(train)
    if args.limit:
        train = kd.subset(train, range(args.limit))
    teacher = kd.pretrained_teacher().to(procs.device)
    if procs.rank == 0:
        kd.cached_logits(teacher, train, verbose=False)  # computed once and stored
    procs.barrier()
    logits = kd.cached_logits(teacher, train, verbose=False)  # every process reads the stored rows

    student = kd.student_cnn()
    batch = max(1, args.global_batch // procs.world_size)  # per process: the global batch is batch x processes
    history = kd.fit(student, train, epochs=args.epochs, batch_size=batch, lr=args.lr, channels_last=True,
                     teacher_logits=logits, temperature=4, alpha=0.9, val=val, device=procs.device)
    accuracy = kd.evaluate(student, test)
    kd.save(student, args.out, history=history, test_acc=accuracy)  # rank 0 writes
    if procs.rank == 0:
        print(f"{procs.world_size} process(es), global batch {batch * procs.world_size}: test accuracy "
              f"{100 * accuracy:.2f}% after {args.epochs} epochs; saved to {args.out}")


if __name__ == "__main__":
    main()
