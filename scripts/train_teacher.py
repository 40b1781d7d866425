"""Retrain the shipped Fashion-MNIST teacher from scratch, deterministically, and record how.

    python scripts/train_teacher.py            # writes kdtutor/weights/teacher_fmnist.{pt,json}
    python scripts/train_teacher.py --out DIR  # writes elsewhere (e.g. to compare with the shipped one)

The recipe below is the single source of truth: the record beside the weights repeats it, and a test checks the two
agree. On the same CPU, torch version and thread count the weights come out bit-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import torch

import kdtutor as kd
from kdtutor.models import TEACHER_NAME, WEIGHTS_DIR

RECIPE = {
    "architecture": "teacher_cnn: Conv(1->32)+BN+ReLU+MaxPool, Conv(32->64)+BN+ReLU+MaxPool, FC 3136->128, FC 128->10",
    "data": "Fashion-MNIST training set minus the book's validation split (book_split: 5,000 images, seed 0)",
    "epochs": 8,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "augment": None,
    "seed": 0,
    "init_seed": 0,
    "threads": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()

    torch.set_num_threads(RECIPE["threads"])
    torch.use_deterministic_algorithms(True)
    train_full, test = kd.load_fashion_mnist()
    train, val = kd.book_split(train_full)
    torch.manual_seed(RECIPE["init_seed"])
    model = kd.teacher_cnn()
    start = time.perf_counter()
    history = kd.fit(model, train, val=val, epochs=RECIPE["epochs"], batch_size=RECIPE["batch_size"],
                     optimizer=RECIPE["optimizer"], lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"],
                     schedule=RECIPE["schedule"], seed=RECIPE["seed"], device="cpu")
    seconds = time.perf_counter() - start
    if history.interrupted:
        raise SystemExit("interrupted: nothing written")
    test_acc = kd.evaluate(model, test)
    val_acc = kd.evaluate(model, val)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = kd.save(model, args.out / f"{TEACHER_NAME}.pt", recipe=RECIPE, test_acc=test_acc)
    record = {
        "name": TEACHER_NAME,
        "file": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "parameters": kd.count_params(model),
        "size_bytes": weights.stat().st_size,
        "recipe": RECIPE,
        "val_acc": val_acc,
        "test_acc": test_acc,
        "train_seconds": round(seconds, 1),
        "history": history.as_dict(),
        "trained_on": {"torch": torch.__version__, "python": platform.python_version(),
                       "machine": platform.machine(), "device": "cpu"},
        "command": "python scripts/train_teacher.py",
    }
    (args.out / f"{TEACHER_NAME}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"test accuracy {100 * test_acc:.2f}%, val accuracy {100 * val_acc:.2f}%, {seconds:.0f} s; "
          f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
