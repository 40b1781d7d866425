"""The exercise notebooks and the instructor's page: each part ends with its exercises, each exercise has a
skeleton whose checker says "not implemented yet", a hidden solution (tagged ``solution``, between sphinx-exercise's
``solution-start`` and ``solution-end``) whose checker passes, and the instructor's page names every checker, links
every notebook on Colab and pastes only times the notebooks glued."""

import json
import re
from pathlib import Path

import pytest

from kdtutor import course

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
EXERCISES = sorted(BOOK.glob("exercises-part*.ipynb"))
PAGE = (BOOK / "instructors.md").read_text()
CONFIG = (ROOT / "_config.yml").read_text()
REPO_URL = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", CONFIG, re.M).group(1)
CHECKERS = [name for name in course.__all__ if name.startswith("check_")]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"])


def text_out(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))


def test_one_exercise_notebook_per_part_at_the_end_of_the_part():
    toc = (ROOT / "_toc.yml").read_text()
    parts = re.findall(r'caption: "Part (\w+):[^\n]*\n\s+chapters:\n((?:\s+- file: \S+\n)+)', toc)
    assert len(parts) == len(EXERCISES) == 5
    for n, (_, files) in enumerate(parts, start=1):
        assert re.findall(r"file: (\S+)", files)[-1] == f"book/exercises-part{n}"


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_each_exercise_has_a_skeleton_a_checker_and_a_hidden_solution_that_passes(path):
    cells = load(path)["cells"]
    starts = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "{solution-start}" in source(c)]
    assert starts
    for i in starts:
        label = re.search(r"\{solution-start\}\s+(\S+)", source(cells[i])).group(1)
        task = next(c for c in cells[:i][::-1] if "{exercise}" in source(c))
        assert f":label: {label}" in source(task), f"{path.name}: solution {label} follows another exercise"
        skeleton, check = cells[i - 2], cells[i - 1]
        assert "raise NotImplementedError" in source(skeleton)
        assert re.fullmatch(r"course\.check_\w+\(my_\w+\)", source(check).strip())
        assert "not implemented yet" in text_out(check), f"{path.name}: {label}'s stored checker output"
        solution, end = cells[i + 1], cells[i + 2]
        assert "solution" in solution["metadata"].get("tags", []), "tag it solution: nbconvert can strip it"
        assert solution["metadata"].get("cellView") == "form", "collapsed in Colab"
        assert solution["metadata"]["jupyter"]["source_hidden"], "collapsed in Jupyter"
        assert "raise NotImplementedError" not in source(solution)
        assert f"assert {source(check).strip()}" in source(solution), "the solution ends with its checker"
        assert "correct" in text_out(solution) and "not implemented" not in text_out(solution)
        assert "{solution-end}" in source(end)


def test_every_checker_is_exercised_and_explained_on_the_instructors_page():
    code = "\n".join(source(c) for p in EXERCISES for c in load(p)["cells"] if c["cell_type"] == "code")
    assert len(CHECKERS) >= 9
    for name in CHECKERS:
        assert f"course.{name}(" in code, f"no exercise calls course.{name}"
        assert f"`{name}`" in PAGE, f"book/instructors.md does not explain {name}"


def test_the_instructors_page_links_every_notebook_on_colab_from_the_books_repository():
    repo = REPO_URL.removeprefix("https://github.com/")
    links = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", PAGE)
    assert links == [f"https://colab.research.google.com/github/{repo}/blob/main/book/{p.name}" for p in EXERCISES]


def test_the_instructors_page_pastes_only_times_the_notebooks_glued_and_stored():
    roles = re.findall(r"\{glue:text\}`([\w\-]+\.ipynb)::(\w+):[^`]*`", PAGE)
    assert len(roles) == sum(len(re.findall(r"course\.check_\w+\(my_", source(c))) for p in EXERCISES
                             for c in load(p)["cells"] if "solution" not in c["metadata"].get("tags", [])
                             ) + len(EXERCISES)  # one per checker, one per open experiment
    for doc, key in roles:
        stored = [o for c in load(BOOK / doc)["cells"] for o in c.get("outputs", [])
                  if o.get("metadata", {}).get("scrapbook", {}).get("name") == key]
        assert stored, f"instructors.md pastes {doc}::{key}, which {doc} does not store"
