"""``python -m kdtutor check`` and ``kd.check()``: is this machine ready for the book and its exercises?

Prints, in a few lines: the Python, torch and torchvision versions; the device training will use; whether
Fashion-MNIST was found and where (or the exact fix; a corrupt file is named, with its SHA-256 mismatch); whether
each shipped model's weights verify; which of the package's extras are installed (read from its metadata); and a
micro-benchmark of a few seconds that estimates how long the book's heaviest chapter takes here, from reference
figures measured on the book's build machine. Missing extras are reported, not failures; missing or corrupt data or
a shipped model that fails verification are.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import time

import torch
from packaging.requirements import Requirement

from kdtutor.data import DEBIAN_FMNIST_DIR, locate_fashion_mnist
from kdtutor.models import MLP, pretrained, shipped_models, student_cnn
from kdtutor.training import default_device
from kdtutor.version import __version__

__all__ = ["REFERENCE", "benchmark", "check", "extras"]

# Measured on the book's build machine (2 CPU cores, x86_64, torch 2.14.1) by benchmark() and by
# scripts/execute_notebooks.py; a test keeps the chapter's figure in step with book/execution-times.md. The two were
# not measured in the same hour (this machine's speed varies by ~40%), so the estimate is good to about that.
REFERENCE = {
    "machine": "2 CPU cores, x86_64",
    "benchmark_s": 0.57,  # benchmark(3) on 2026-12-03, on a quiet machine (later the same day: 0.54 and 0.71)
    "chapter": "book/patient-teaching.ipynb",
    "chapter_s": 215.0,
}


def check(verbose: bool = True) -> bool:
    """Run the checks, print one line each (unless ``verbose=False``); True when the data and models are usable."""
    lines, ok = [], True
    say = lines.append
    say(f"kdtutor {__version__}: Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {_installed('torchvision') or 'MISSING'}")
    say(f"device: {_describe_device()}")
    try:
        (folder, found), corrupt = locate_fashion_mnist(), None
    except ValueError as err:  # a corrupt or truncated file: the message starts with its path, then what is wrong
        folder, found, corrupt = None, [], err
    if corrupt is not None:
        ok = False
        fix = ("sudo apt-get install --reinstall dataset-fashion-mnist" if str(DEBIAN_FMNIST_DIR) in str(corrupt) else
               "replace it with a good copy, or delete it and run python -m kdtutor data to download it again")
        say(f"Fashion-MNIST: CORRUPT FILE {corrupt}. Fix: {fix}")
    elif folder is not None:
        say(f"Fashion-MNIST: ok, {len(found['train-labels-idx1-ubyte']):,} training and "
            f"{len(found['t10k-labels-idx1-ubyte']):,} test images in {folder}")
    else:
        ok = False
        say("Fashion-MNIST: NOT FOUND. Fix: sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), or put the "
            "four *-ubyte.gz files in a folder and set KDTUTOR_DATA to it, or run python -m kdtutor data "
            "(downloads with torchvision). Looked in: " + "; ".join(found))
    for name in shipped_models():
        try:
            pretrained(name)
            say(f"shipped model {name}: ok (SHA-256 verified)")
        except Exception as err:  # a tampered or missing file, or a file torch cannot read
            ok = False
            say(f"shipped model {name}: FAILED ({err}). Fix: pip install --force-reinstall kdtutor")
    found_extras = extras()
    say("extras: " + ("; ".join(f"{extra} " + ("installed" if have else f'missing (pip install "kdtutor[{extra}]")')
                                for extra, have in found_extras.items()) or "none declared"))
    seconds = benchmark()
    estimate = REFERENCE["chapter_s"] * seconds / REFERENCE["benchmark_s"]
    chapter = REFERENCE["chapter"].removeprefix("book/").removesuffix(".ipynb")
    say(f"speed: micro-benchmark {seconds:.1f} s on the CPU (reference {REFERENCE['benchmark_s']:.1f} s on "
        f"{REFERENCE['machine']}): the heaviest chapter, {chapter}, would take about {estimate / 60:.1f} min here"
        + (" on the CPU (less on the GPU)" if default_device().type != "cpu" else ""))
    say("all good" if ok else "NOT READY: fix the lines marked above")
    if verbose:
        print("\n".join(lines))
    return ok


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _describe_device() -> str:
    device = default_device()
    if device.type == "cuda":
        return f"CUDA, {torch.cuda.get_device_name(0)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU, {torch.get_num_threads()} threads"


def extras() -> dict[str, bool]:
    """Each extra of the installed kdtutor (from its metadata) and whether all its requirements are installed."""
    try:
        meta = metadata.metadata("kdtutor")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return {}
    wanted: dict[str, list[str]] = {extra: [] for extra in meta.get_all("Provides-Extra") or []}
    for requirement in map(Requirement, meta.get_all("Requires-Dist") or []):
        if requirement.marker is None or "extra" not in str(requirement.marker):
            continue  # a core requirement (installed with kdtutor itself)
        for extra in wanted:
            if requirement.marker.evaluate({"extra": extra}):
                wanted[extra].append(requirement.name)
    return {extra: all(_installed(name) for name in names) for extra, names in wanted.items()}


def benchmark(repeats: int = 3) -> float:
    """Seconds for a fixed slice of the book's CPU work: the fastest of ``repeats`` runs (each ~0.75 s on the book's 2
    cores; with warm-up, about 3 s in all).

    The work: 100 training steps of the MLP student (batch 256) and 50 of the small CNN student (batch 128), as
    the chapters' experiments do, on random data so that no file is needed.
    """
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 1, 28, 28, generator=g), torch.randint(0, 10, (256,), generator=g)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for model, steps, batch in ((MLP(hidden=(128,)), 100, 256), (student_cnn(), 50, 128)):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(model(x[:batch]), y[:batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        best = min(best, time.perf_counter() - start)
    return best
