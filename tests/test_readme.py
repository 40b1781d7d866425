"""The README's API tour runs as written (on a slice of the data, so that it takes seconds)."""

import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot
import pytest

import kdtutor as kd

ROOT = Path(__file__).resolve().parents[1]


def tour() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A short API tour", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.data
def test_the_api_tour_runs(fmnist, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    train, test = fmnist
    small = kd.subset(train, range(6000)), kd.subset(test, range(1000))
    monkeypatch.setattr(kd, "load_fashion_mnist", lambda *a, **k: small)
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(tour(), "README.md", "exec"), namespace)
    assert 0.5 < namespace["kd"].evaluate(namespace["student"], small[1]) <= 1
    assert namespace["meta"] == {"note": "T=4"} and (tmp_path / "student.pt").is_file()
    assert namespace["logits"].shape == (1000, 10) and len(list((tmp_path / "cache").rglob("*.pt"))) == 1
    matplotlib.pyplot.close("all")
