"""The book's rules, checked on every notebook: kernelspec, the Colab cell, clean stored outputs, PNG plots,
tolerance checks after machine-dependent cells, the table of contents, and the configuration the book relies on."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CONFIG = (ROOT / "_config.yml").read_text()
REPO_URL = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", CONFIG, re.M).group(1)


def toc_files():
    return re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())


def load(path):
    return json.loads(path.read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_book_rules(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = code_cells(nb)
    first = "".join(cells[0]["source"])
    assert '"google.colab" in sys.modules' in first and f"git+{REPO_URL}" in first, "first code cell: Colab install"
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"code cell {i} stores a traceback"
            assert out.get("name") != "stderr", f"code cell {i} stores stderr: {out.get('text', '')[:200]}"
            data = out.get("data", {})
            assert "image/svg+xml" not in data and "image/jpeg" not in data, f"code cell {i}: plots must be PNG"
            assert "Warning" not in "".join(out.get("text", "")), f"code cell {i} stores a warning"
        if any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            assert source.rstrip().endswith(";"), f"code cell {i} plots: end it with ';'"
        if "nbval-ignore-output" in tags(cell):
            follower = cells[i + 1] if i + 1 < len(cells) else None
            assert follower is not None and "remove-cell" in tags(follower) and "assert" in "".join(
                follower["source"]), f"code cell {i} is nbval-ignore-output: follow it with a hidden assertion"
    assert any(c.get("outputs") for c in cells), "no stored outputs: run bash scripts/execute.sh"


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = toc_files()
    for path in NOTEBOOKS:
        assert str(path.relative_to(ROOT).with_suffix("")) in listed, f"{path} is not in _toc.yml"
    for entry in listed:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml: {entry} missing"


def test_configuration():
    assert re.search(r'execute_notebooks:\s*"off"', CONFIG)
    for needed in ("dollarmath", "amsmath", "book/references.bib", "only_build_toc_files: true", "colab_url",
                   "binderhub_url", "sphinx.ext.autodoc"):
        assert needed in CONFIG
    assert REPO_URL in (ROOT / "README.md").read_text()
    assert REPO_URL in (ROOT / "pyproject.toml").read_text()


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["book"]}
    conda_to_pip = {"pytorch-cpu": "torch", "pytorch": "torch"}
    env = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    named = set()
    for line in re.findall(r"^\s*-\s+(\S+)\s*$", env, re.M):
        name = _name(line)
        if name not in ("python", "pip", "pip:", "-e"):
            named.add(conda_to_pip.get(name, name))
    assert named == wanted
