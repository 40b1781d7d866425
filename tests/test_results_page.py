"""book/results.md, "Results at a glance": every number on it is glued from a chapter, never typed. Each key it
pastes is glued by that chapter's code and stored in its outputs (so a renamed key fails here, not only in the
build), each line links to the section of the chapter whose cell glues its numbers, and the page sits in the
table of contents just before the API page."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGE = BOOK / "results.md"
ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]*)`")  # {glue:text}`chapter.ipynb::key:format`
LINK = re.compile(r"\]\(([\w\-]+\.ipynb)#([\w\-]*)\)")  # [text](chapter.ipynb#section-slug)
MATH = re.compile(r"\$[^$]*\$")


def lines() -> list[str]:
    """The page's bullet lines, each with its continuation lines joined."""
    found: list[str] = []
    for line in PAGE.read_text().splitlines():
        if line.startswith("- "):
            found.append(line[2:])
        elif line.startswith("  ") and found:
            found[-1] += " " + line.strip()
    return found


def pasted(line: str) -> list[tuple[str, str, str]]:
    """(notebook, key, format) of every glue role in a line; every one names its notebook (``path::key``)."""
    roles = []
    for content in ROLE.findall(line):
        doc, sep, rest = content.partition("::")
        assert sep, f"results.md: {content!r} should name its chapter, as chapter.ipynb::key"
        key, _, fmt = rest.partition(":")
        roles.append((doc, key, fmt))
    return roles


def notebook(doc: str) -> dict:
    path = BOOK / doc
    assert path.is_file(), f"results.md glues from {doc}, which is not in book/"
    return json.loads(path.read_text())


FSTRING_GLUE = re.compile(r"\bglue\(\s*f([\"'])(.*?)\1")  # glue(f"{name}_gain", ...): its template


def glue_cell(nb: dict, key: str) -> int | None:
    """The index of the code cell that glues ``key``: the one that calls ``glue("key", ...)``, or, for a key a loop
    builds, the cell with an f-string call whose template matches the key (``{...}`` standing for any text) and
    whose stored outputs hold it."""
    call = re.compile(rf"\bglue\(\s*[\"']{re.escape(key)}[\"']")
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and call.search("".join(c["source"]))]
    if code:
        return code[0]
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code":
            continue
        templates = [t for _, t in FSTRING_GLUE.findall("".join(c["source"]))]
        patterns = [re.sub(r"\\\{.*?\\\}", ".+", re.escape(t)) for t in templates]
        stored = any(out.get("metadata", {}).get("scrapbook", {}).get("name") == key for out in c.get("outputs", []))
        if stored and any(re.fullmatch(p, key) for p in patterns):
            return i
    return None


def stored_value(nb: dict, key: str) -> str | None:
    """The glued value's text/plain as stored in the notebook's outputs (what the build pastes)."""
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                return out["data"].get("application/papermill.record/text/plain")
    return None


def section_slug(nb: dict, cell: int) -> str:
    """The MyST anchor of the last level-1 or level-2 heading before ``cell``: myst-parser's default slug of the
    heading's text without its math (lower case, spaces to dashes, other punctuation dropped)."""
    for c in reversed(nb["cells"][:cell]):
        if c["cell_type"] == "markdown":
            headings = re.findall(r"^#{1,2} (.+)$", "".join(c["source"]), re.M)
            if headings:
                text = MATH.sub("", headings[-1])
                return re.sub(r"[^\w\u4e00-\u9fff\- ]", "", text.lower().replace(" ", "-"))
    raise AssertionError(f"no heading before cell {cell}")


LINES = lines()


def test_the_page_has_lines_and_is_listed_before_the_api_page():
    assert len(LINES) >= 10 and all(pasted(line) for line in LINES), "every line of results.md pastes a number"
    toc = re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())
    assert "book/results" in toc and toc.index("book/results") + 1 == toc.index("book/api"), toc


@pytest.mark.parametrize("line", LINES, ids=[pasted(line)[0][1] for line in LINES])
def test_every_pasted_key_is_glued_and_stored_by_its_chapter(line):
    for doc, key, fmt in pasted(line):
        nb = notebook(doc)
        assert glue_cell(nb, key) is not None, f"results.md pastes {key!r}, but {doc} has no glue({key!r}, ...)"
        value = stored_value(nb, key)
        assert value is not None, f"{doc} glues {key!r} but its stored outputs do not hold it: re-execute it"
        if fmt and fmt[-1] in "eEfFgG%":
            format(float(value), fmt)  # the format the page asks for fits the stored value


@pytest.mark.parametrize("line", LINES, ids=[pasted(line)[0][1] for line in LINES])
def test_every_line_links_to_the_section_that_measures_it(line):
    links = set(LINK.findall(line))
    for doc, key, _ in pasted(line):
        nb = notebook(doc)
        cell = glue_cell(nb, key)
        assert cell is not None, f"results.md pastes {key!r}, but {doc} has no glue({key!r}, ...)"
        section = section_slug(nb, cell)
        assert (doc, section) in links, f"results.md: the line with {key!r} should link to {doc}#{section}"


@pytest.mark.parametrize("line", LINES, ids=[pasted(line)[0][1] for line in LINES])
def test_no_result_is_typed(line):
    text = MATH.sub("", LINK.sub("]", ROLE.sub("", line)))
    typed = re.findall(r"\d+\.\d+|\d+\s*%|\d+\s*×", text)
    assert not typed, f"results.md: {typed} typed in {line[:60]!r}...: glue it from its chapter"


def test_glue_cell_finds_literal_and_built_keys_and_nothing_else():
    def cell(source, stored=()):
        outputs = [{"metadata": {"scrapbook": {"name": k}}} for k in stored]
        return {"cell_type": "code", "source": [source], "outputs": outputs}

    nb = {"cells": [cell('glue("plain", 1)'),
                    cell('for name in ("a", "b"):\n    glue(f"{name}_gain", 1)', stored=["a_gain", "b_gain"]),
                    cell('glue(f"x_{i}", 1)', stored=["stale_key"])]}
    assert glue_cell(nb, "plain") == 0 and glue_cell(nb, "a_gain") == 1 and glue_cell(nb, "b_gain") == 1
    assert glue_cell(nb, "c_gain") is None  # the template fits, but no stored output holds it
    assert glue_cell(nb, "stale_key") is None  # stored, but no template of the cell can build it
