"""Progress bars appear where work is long and never in the book; ``kd.check()`` reports what a course needs."""

import email.message
import gzip
import hashlib
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor import progress, selfcheck
from kdtutor.data import datasets as kdata
from kdtutor.experiments import run_arm
from kdtutor.models import registry


@pytest.fixture
def bars(monkeypatch):
    """Record every tqdm bar created (their descriptions); bars are allowed unless a test sets the variables."""
    monkeypatch.delenv("KDTUTOR_BOOK", raising=False)
    monkeypatch.delenv("KDTUTOR_PROGRESS", raising=False)
    import tqdm.auto

    made = []
    real = tqdm.auto.tqdm

    def recording(*args, **kwargs):  # the bars shown (a disabled bar draws nothing)
        if not kwargs.get("disable"):
            made.append(kwargs.get("desc", ""))
        return real(*args, **{**kwargs, "delay": 0})

    monkeypatch.setattr(tqdm.auto, "tqdm", recording)
    return made


def tiny(n=600):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_bars_on_long_work_when_allowed(bars, capsys):
    data = tiny()
    kd.fit(kd.MLP(hidden=(8,)), data, epochs=2, batch_size=100, device="cpu")
    assert bars == ["epoch 1", "epoch 2"]  # one bar per epoch (shown only after 2 s; here the delay is 0)
    kd.compute_logits(kd.MLP(hidden=(8,)), tiny(20_000))
    assert bars[-1] == "logits"
    before = len(bars)
    kd.compute_logits(kd.MLP(hidden=(8,)), data)  # small data: no bar
    assert len(bars) == before
    run_arm("scratch", lambda: kd.MLP(hidden=(8,)), data, (0, 1), {"val": data}, epochs=1, device="cpu")
    assert bars[before:] == ["scratch"]  # the seeds of an arm; fit inside run_arm is quiet
    assert "epoch 1" in capsys.readouterr().err  # a terminal gets a text bar on stderr


@pytest.mark.parametrize("how", ["book", "off", "verbose=False"])
def test_no_bars_in_the_book_or_when_asked(bars, monkeypatch, capsys, how):
    if how == "book":
        monkeypatch.setenv("KDTUTOR_BOOK", "1")
    elif how == "off":
        monkeypatch.setenv("KDTUTOR_PROGRESS", "0")
    verbose = how != "verbose=False"
    data = tiny()
    kd.fit(kd.MLP(hidden=(8,)), data, epochs=2, batch_size=100, device="cpu", verbose=verbose)
    kd.compute_logits(kd.MLP(hidden=(8,)), tiny(20_000), verbose=verbose)
    run_arm("scratch", lambda: kd.MLP(hidden=(8,)), data, (0,), {}, verbose=verbose, epochs=1, device="cpu")
    assert bars == [] and capsys.readouterr().err == ""


def test_silent_stand_in_iterates_like_the_iterable(monkeypatch):
    monkeypatch.setenv("KDTUTOR_BOOK", "1")
    silent = progress.bar(range(3), total=3)
    assert list(silent) == [0, 1, 2]
    silent.update()
    silent.close()


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(selfcheck, "benchmark", lambda repeats=3: 2 * selfcheck.REFERENCE["benchmark_s"])


def test_check_on_a_ready_machine(fast, capsys):
    assert kd.check() is True
    out = capsys.readouterr().out
    device = {"cuda": "device: CUDA", "mps": "device: Apple MPS", "cpu": "device: CPU"}[kd.default_device().type]
    for expected in (f"torch {torch.__version__}", device, "Fashion-MNIST: ok", "teacher_fmnist: ok",
                     "extras: ", "book installed", "about", "all good"):
        assert expected in out, expected
    estimate = 2 * selfcheck.REFERENCE["chapter_s"] / 60
    assert f"would take about {estimate:.1f} min" in out


def test_check_without_the_data_names_the_fix(fast, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    monkeypatch.setattr(kdata, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(kdata, "CACHE_DIR", tmp_path / "cache")
    assert kd.check() is False
    out = capsys.readouterr().out
    assert "Fashion-MNIST: NOT FOUND" in out and "apt-get install dataset-fashion-mnist" in out
    assert "NOT READY" in out
    from kdtutor.__main__ import main

    assert main(["check"]) == 1


def test_check_with_a_corrupt_data_file_names_it(fast, monkeypatch, tmp_path, capsys):
    import shutil

    folder, _ = kdata.locate_fashion_mnist()
    for name in kdata.FMNIST_FILES:
        shutil.copy(next(folder.glob(f"{name}*")), tmp_path)
    target = next(tmp_path.glob("t10k-labels*"))
    raw = gzip.decompress(target.read_bytes()) if target.suffix == ".gz" else target.read_bytes()
    raw = raw[:-1] + bytes([(raw[-1] + 1) % 10])  # one label changed: a valid file, the wrong contents
    target.write_bytes(gzip.compress(raw) if target.suffix == ".gz" else raw)
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    assert kd.check() is False
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("Fashion-MNIST")]
    # the file first, then how it differs; not "NOT FOUND" with a fix that installs what is installed
    assert line.startswith(f"Fashion-MNIST: CORRUPT FILE {target}: contents do not match the expected SHA-256")
    assert f"hash to {hashlib.sha256(raw).hexdigest()}, expected {kdata.FMNIST_FILES['t10k-labels-idx1-ubyte']}" in line
    assert "NOT FOUND" not in out and "apt-get install dataset-fashion-mnist" not in out and "NOT READY" in out
    target.write_bytes(target.read_bytes()[:-20])  # truncated as well: still named
    assert kd.check() is False and f"CORRUPT FILE {target}" in capsys.readouterr().out


def test_help_is_plain_text(capsys):
    from kdtutor.__main__ import main

    for argv in (["--help"], ["check", "--help"], ["data", "--help"], ["corpus", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "usage: python -m kdtutor" in text
        for markup in ("``", ":func:", ":mod:", ":class:", ":doc:"):
            assert markup not in text, (argv, markup)


def test_check_with_tampered_weights_fails(fast, monkeypatch, tmp_path, capsys):
    record = kd.teacher_record()
    (tmp_path / "teacher_fmnist.json").write_text((registry.WEIGHTS_DIR / "teacher_fmnist.json").read_text())
    blob = bytearray((registry.WEIGHTS_DIR / record["file"]).read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one byte of one weight changed
    (tmp_path / record["file"]).write_bytes(bytes(blob))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    assert kd.check() is False
    out = capsys.readouterr().out
    assert "teacher_fmnist: FAILED" in out and "SHA-256" in out and "reinstall" in out


def test_a_missing_extra_is_reported_not_a_failure(fast, monkeypatch, capsys):
    meta = email.message.Message()
    meta["Provides-Extra"] = "test"
    meta["Provides-Extra"] = "compress"
    meta["Requires-Dist"] = 'pytest>=8; extra == "test"'
    meta["Requires-Dist"] = 'surely-not-installed-pkg>=1; extra == "compress"'
    monkeypatch.setattr(selfcheck.metadata, "metadata", lambda name: meta)
    assert selfcheck.extras() == {"test": True, "compress": False}
    assert kd.check() is True
    assert 'compress missing (pip install "kdtutor[compress]")' in capsys.readouterr().out


def test_benchmark_takes_seconds_not_minutes():
    seconds = selfcheck.benchmark(repeats=1)
    assert 0 < seconds < 60


def test_reference_chapter_matches_the_execution_table():
    """The figure the estimate scales is the heaviest chapter's time in book/execution-times.md (within 25%)."""
    import re
    from pathlib import Path

    table = (Path(__file__).resolve().parents[1] / "book" / "execution-times.md").read_text()
    rows = {m[0]: float(m[1]) for m in re.findall(r"^\| `([^`]+)` \| ([\d.]+) \|", table, re.M)}
    heaviest = max(rows, key=rows.get)
    assert heaviest == selfcheck.REFERENCE["chapter"]
    assert rows[heaviest] == pytest.approx(selfcheck.REFERENCE["chapter_s"], rel=0.25)


def test_cli_check_runs_in_a_terminal():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "kdtutor", "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all good" in done.stdout
