"""How fast is ``kd.fit``? The same distillation job the tutorial way and kdtutor's way, in one process and one run.

    python benchmarks/kd_speed.py                 # prints a table, writes benchmarks/results/kd_speed-<device>.json
    python benchmarks/kd_speed.py --epochs 5      # more epochs per run (default 3)
    python benchmarks/kd_speed.py --quick         # a few hundred images: checks that every path runs (used by a test)

The job: distil the shipped teacher (``kd.pretrained_teacher()``) into a student — the small CNN and the MLP
784-128-10 — on the book's 55,000-image split, T = 4, alpha = 0.9, AdamW, the same number of epochs for every path.

* **tutorial**: what most tutorials write. torchvision's ``FashionMNIST`` read from its files with
  ``ToTensor()`` and ``Normalize``, a ``DataLoader`` with batch 128, shuffling and 2 worker processes, the teacher
  run on every batch, float32, lr 1e-3, Hinton's loss written out with ``F.kl_div``.
* **fit, 0.9 defaults**: ``kd.fit(student, train, teacher_logits=...)`` as 0.9.0's defaults ran it: batch 128, lr
  1e-3, the images in the default memory layout (``channels_last=False``). The data sits on the device as tensors and
  the teacher's logits are computed once (the "cache" column; kdtutor keeps them on disk, so later runs skip it)
  instead of on every step; on CUDA, bf16 autocast and a fused AdamW.
* **fit, defaults**: the same call with today's defaults: ``channels_last="auto"`` (channels-last for a convolutional
  student on the CPU).
* **fit, teacher=**: the README tour's call, ``kd.fit(student, train, teacher=teacher, ...)``: ``fit`` runs the
  teacher once over the training set (its pass is inside the call, not in the epochs' seconds; the table prints the
  whole call's time too), then trains like the cached path.
* **fit, fast**: the setting the book documents as fastest (``FAST`` below): a 4x larger batch with a larger
  learning rate, and the channels-last layout for the convolutions.
* ``batch_choice`` (full runs only): would a larger default batch do? Validation accuracy of the small CNN at the
  default batch and at ``FAST``'s, in the book's two regimes, 3 seeds. Of 5e-3 and 8e-3 tried for batch 512 over 3
  epochs, 8e-3 kept the tutorial's accuracy — a choice made on this benchmark's own test figures, so read its
  accuracy column as a check that speed did not cost accuracy, not as a result.

Seconds per epoch are medians over the epochs of one run (the tutorial's include its workers' start-up, as written);
images/s = training images / seconds per epoch; test accuracy after the last epoch on the 10,000 test images;
"end to end" adds up the measured pieces of the fast path for the small CNN: loading the data, computing the
teacher's logits, and the whole ``fit`` call (every epoch, warm-up included) with the test evaluation. Compare only
figures from one run on one machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import kdtutor as kd

T, ALPHA = 4.0, 0.9
FAST = dict(batch_size=512, lr=8e-3, channels_last=True)  # 4x the default batch, with a learning rate to match
STUDENTS = {"small CNN": kd.student_cnn, "MLP 784-128-10": lambda: kd.MLP(hidden=(128,))}


def tutorial_data(limit: int | None):
    """torchvision's FashionMNIST (ToTensor + Normalize) on the book's split, from the same files kdtutor reads."""
    from torchvision import datasets, transforms

    folder, _ = kd.data.locate_fashion_mnist()
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: run the test command, or see README 'Running offline'")
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((kd.FMNIST_MEAN,), (kd.FMNIST_STD,))])
    with tempfile.TemporaryDirectory(prefix="kdtutor-tv-") as root:  # torchvision reads the files once, at creation
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name in kd.data.datasets.FMNIST_FILES:  # torchvision wants the unpacked files in FashionMNIST/raw
            packed = next(p for p in (folder / f"{name}.gz", folder / name, folder / "FashionMNIST" / "raw" / name,
                                      folder / "FashionMNIST" / "raw" / f"{name}.gz") if p.is_file())
            data = packed.read_bytes()
            (raw / name).write_bytes(gzip.decompress(data) if packed.suffix == ".gz" else data)
        train, _ = kd.book_split(datasets.FashionMNIST(root, train=True, transform=to_tensor))
    return torch.utils.data.Subset(train, range(limit)) if limit else train


def tutorial_epochs(student, teacher, train, epochs: int, device) -> list[float]:
    """The loop most tutorials write: a DataLoader with workers, the teacher at every step, float32."""
    loader = DataLoader(train, batch_size=128, shuffle=True, num_workers=2)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.0)  # as fit's default
    teacher.to(device).eval()
    student.to(device)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        student.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                soft = F.softmax(teacher(x) / T, dim=1)
            out = student(x)
            kd_term = F.kl_div(F.log_softmax(out / T, dim=1), soft, reduction="batchmean") * T * T
            loss = ALPHA * kd_term + (1 - ALPHA) * F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def run(args) -> dict:
    device = torch.device(args.device) if args.device else kd.default_device()
    limit, epochs = (1024, 2) if args.quick else (args.limit, args.epochs)
    start = time.perf_counter()
    train_all, test = kd.load_fashion_mnist()
    train, val = kd.book_split(train_all)
    if limit:
        train, test = kd.subset(train, range(limit)), kd.subset(test, range(2000 if args.quick else len(test)))
    teacher = kd.pretrained_teacher().to(device)
    tick = time.perf_counter()
    logits = kd.compute_logits(teacher, train, verbose=False)  # what kd.cached_logits stores on its first call
    cache_s = time.perf_counter() - tick
    load_s = tick - start
    tv_train = tutorial_data(limit)
    rows = []
    for name, build in STUDENTS.items():
        paths = {
            "tutorial": None,
            "fit, 0.9 defaults": {"channels_last": False},  # fit's defaults before channels_last="auto"
            "fit, defaults": {},
            "fit, teacher=": {"teacher": True},  # the README tour: the teacher model, not its logits
            "fit, fast": FAST,
        }
        for path, setting in paths.items():
            torch.manual_seed(0)
            student = build()
            tick = time.perf_counter()
            if setting is None:
                seconds = tutorial_epochs(student, kd.pretrained_teacher(), tv_train, epochs, device)
            else:
                source = {"teacher": kd.pretrained_teacher()} if setting.get("teacher") else {"teacher_logits": logits}
                rest = {k: v for k, v in setting.items() if k != "teacher"}
                seconds = kd.fit(student, train, epochs=epochs, temperature=T, alpha=ALPHA, device=device,
                                 verbose=False, **source, **rest).seconds
            call_s = time.perf_counter() - tick  # every epoch, and for teacher= the one teacher pass
            accuracy = kd.evaluate(student, test)
            per_epoch = statistics.median(seconds)
            rows.append({"student": name, "path": path, "setting": setting, "seconds_per_epoch": per_epoch,
                         "images_per_s": len(train) / per_epoch, "test_acc": accuracy, "call_s": call_s,
                         "run_s": time.perf_counter() - tick})  # every epoch and the evaluation
    steps = [] if args.quick else speedup_steps(train, logits, epochs, device)
    batches = [] if args.quick else batch_choice(train, val, logits, device)
    tutorial = {r["student"]: r["seconds_per_epoch"] for r in rows if r["path"] == "tutorial"}
    for r in rows:
        r["speedup"] = tutorial[r["student"]] / r["seconds_per_epoch"]
    fast_cnn = next(r for r in rows if r["path"] == "fit, fast" and r["student"] == "small CNN")
    end_to_end = load_s + cache_s + fast_cnn["run_s"]  # measured pieces of one pipeline, added up
    return {"device": _device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "train_images": len(train), "epochs": epochs,
            "quick": args.quick, "load_s": load_s, "cache_s": cache_s, "end_to_end_s": end_to_end, "rows": rows,
            "steps": steps, "batch_choice": batches}


def speedup_steps(train, logits, epochs: int, device) -> list[dict]:
    """What each step bought: the small CNN through fit with cached logits, one change added at a time."""
    settings = [
        ("fit, 0.9 defaults (channels_last=False)", {"channels_last": False}),
        ("+ channels-last layout (the 'auto' default on a CPU)", {"channels_last": True}),
        ("+ batch 512, lr 8e-3 (FAST)", FAST),
    ]
    steps = []
    for name, setting in settings:
        torch.manual_seed(0)
        student = kd.student_cnn()
        seconds = kd.fit(student, train, epochs=epochs, teacher_logits=logits, temperature=T, alpha=ALPHA,
                         device=device, verbose=False, **setting).seconds
        steps.append({"step": name, "seconds_per_epoch": statistics.median(seconds)})
    return steps


def batch_choice(train, val, logits, device, seeds=(0, 1, 2)) -> list[dict]:
    """Would a larger default batch do? Validation accuracy of the small CNN distilled with cached logits at the
    default batch (128, lr 1e-3) and at FAST's (512, lr 8e-3), in the book's two regimes: all 55,000 labels for 3
    epochs, and 200 labelled images per class for 25 epochs (Part II's few-labels regime); 3 seeds each."""
    regimes = {"all labels, 3 epochs": (None, 3), "200 per class, 25 epochs": (200, 25)}
    rows = []
    for regime, (per_class, epochs) in regimes.items():
        for batch_size, lr in ((128, 1e-3), (512, 8e-3)):
            accs, seconds = [], []
            for seed in seeds:
                idx = (torch.arange(len(train)) if per_class is None else
                       kd.stratified_indices(train.tensors[1], per_class, seed=seed))
                torch.manual_seed(seed)
                student = kd.student_cnn()
                tick = time.perf_counter()
                kd.fit(student, kd.subset(train, idx), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       teacher_logits=logits[idx], temperature=T, alpha=ALPHA, device=device, verbose=False)
                seconds.append(time.perf_counter() - tick)
                accs.append(kd.evaluate(student, val))
            rows.append({"regime": regime, "batch_size": batch_size, "lr": lr, "val_acc": statistics.fmean(accs),
                         "val_acc_std": statistics.stdev(accs), "fit_s": statistics.fmean(seconds)})
    return rows


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def table(result: dict) -> str:
    lines = [f"{result['device']}, torch {result['torch']}: {result['train_images']:,} training images, "
             f"{result['epochs']} epochs; teacher logits computed once in {result['cache_s']:.1f} s",
             f"{'student':<16}{'path':<19}{'s/epoch':>9}{'images/s':>10}{'speed-up':>10}{'test acc':>10}"]
    for r in result["rows"]:
        lines.append(f"{r['student']:<16}{r['path']:<19}{r['seconds_per_epoch']:>9.2f}{r['images_per_s']:>10,.0f}"
                     f"{r['speedup']:>9.1f}x{100 * r['test_acc']:>9.2f}%")
    for r in result["rows"]:
        if r["path"] == "fit, teacher=":
            lines.append(f"  {r['student']}, teacher=: the whole call {r['call_s']:.1f} s, one teacher pass included")
    for step in result["steps"]:
        lines.append(f"  small CNN through fit: {step['step']:<46}{step['seconds_per_epoch']:>7.2f} s/epoch")
    for b in result["batch_choice"]:
        lines.append(f"  batch {b['batch_size']:>3}, lr {b['lr']:.0e}, {b['regime']:<26} val "
                     f"{100 * b['val_acc']:.2f}% +- {100 * b['val_acc_std']:.2f} (3 seeds), fit {b['fit_s']:.1f} s")
    lines.append(f"end to end, small CNN, fit fast: {result['end_to_end_s']:.1f} s (data {result['load_s']:.1f} s, "
                 f"logits {result['cache_s']:.1f} s, {result['epochs']} epochs and the test evaluation)")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images of the split")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: kdtutor's choice)")
    parser.add_argument("--quick", action="store_true", help="1,024 images, 2 epochs: does every path run?")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result))
    if not args.quick or args.out:
        kind = "cuda" if "CPU" not in result["device"] else "cpu"
        out = args.out or Path(__file__).parent / "results" / f"kd_speed-{kind}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
