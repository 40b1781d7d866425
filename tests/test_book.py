"""The book's rules, checked on every notebook: kernelspec, the Colab cell (collapsed), code lines that fit the
rendered page, clean stored outputs (no glue echo), PNG plots, hidden assertions after machine-dependent cells that
check what those cells computed, the table of contents, the API page's "Used in" lines, and the configuration the
book relies on."""

import ast
import importlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CONFIG = (ROOT / "_config.yml").read_text()
REPO_URL = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", CONFIG, re.M).group(1)
MAX_CODE_LINE = 88  # the rendered page's code column cuts longer lines (book/ruff.toml enforces the same)


def toc_files():
    return re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())


def load(path):
    return json.loads(path.read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def python_source(cell) -> str:
    """A code cell's source without IPython magics and shell escapes (``%pip ...``, ``!ls``), parseable by ast."""
    lines = "".join(cell["source"]).splitlines()
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def _bound(target) -> set[str]:
    """Names a target binds or changes: ``a``, ``a, b``, ``*rest``, and the root name of ``a[i]`` or ``a.b``."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_bound(t) for t in target.elts))
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    if isinstance(target, (ast.Subscript, ast.Attribute)):
        return _bound(target.value)
    return set()


def assigned_names(source: str) -> set[str]:
    """The names a cell assigns in the notebook's namespace: assignment targets, for-loop targets, ``with ... as``
    names, walrus targets, and defined functions and classes (whose bodies are their own scope)."""
    names: set[str] = set()
    todo = list(ast.parse(source).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue  # assignments inside a function are its locals
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Assign):
            names |= set().union(*(_bound(t) for t in node.targets))
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.NamedExpr)):
            names |= _bound(node.target)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            names |= set().union(set(), *(_bound(i.optional_vars) for i in node.items if i.optional_vars))
        todo.extend(ast.iter_child_nodes(node))
    return names


def used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def has_assert(source: str) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(source)))


def glued_names(nb) -> set[str]:
    return {m for c in code_cells(nb) for m in re.findall(r"\bglue\(\s*[\"'](\w+)[\"']", "".join(c["source"]))}


def test_there_are_notebooks():
    assert NOTEBOOKS


def test_assigned_names_follow_the_rule():
    source = "%time x = 1\na, (b, *c) = f()\nd[0] += 1\ne.f = 2\ng: int = 3\nfor h, i in y:\n    j = 4\n" \
             "with k() as l, m():\n    pass\ndef n(o):\n    p = 5\nif (q := 6):\n    pass\n"
    assert assigned_names(python_source({"source": source})) == set("abcdeghijlnq")  # not x: a magic line
    assert used_names("assert r > s[t]") == {"r", "s", "t"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_book_rules(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = code_cells(nb)
    first = "".join(cells[0]["source"])
    assert '"google.colab" in sys.modules' in first and f"git+{REPO_URL}" in first, "first code cell: Colab install"
    assert "hide-cell" in tags(cells[0]), "first code cell (the Colab install): tag it hide-cell"
    glued = glued_names(nb)
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        for n, line in enumerate(source.splitlines(), start=1):
            assert len(line) <= MAX_CODE_LINE, f"code cell {i}, line {n}: {len(line)} > {MAX_CODE_LINE} characters"
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"code cell {i} stores a traceback"
            assert out.get("name") != "stderr", f"code cell {i} stores stderr: {out.get('text', '')[:200]}"
            data = out.get("data", {})
            assert "image/svg+xml" not in data and "image/jpeg" not in data, f"code cell {i}: plots must be PNG"
            text = "".join(out.get("text", ""))
            assert "Warning" not in text, f"code cell {i} stores a warning"
            echoed = [m for m in re.findall(r"^([a-z_0-9]+) = ", text, re.M) if m in glued]
            assert not echoed, f"code cell {i} stores glue's echo of {echoed}: execute with KDTUTOR_BOOK=1"
        if any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            assert source.rstrip().endswith(";"), f"code cell {i} plots: end it with ';'"
        # an ignored cell is checked by the hidden assertion after it, unless it is itself a hidden assertion
        # whose glued values vary from machine to machine (it asserts on what it computed)
        checks_itself = "remove-cell" in tags(cell) and has_assert(python_source(cell))
        if "nbval-ignore-output" in tags(cell) and not checks_itself:
            follower = cells[i + 1] if i + 1 < len(cells) else None
            assert follower is not None and "remove-cell" in tags(follower), (
                f"code cell {i} is nbval-ignore-output: follow it with a hidden (remove-cell) assertion")
            hidden = python_source(follower)
            assert has_assert(hidden), f"code cell {i + 1}: the hidden cell after an ignored one must assert"
            computed = assigned_names(python_source(cell))
            assert used_names(hidden) & computed, (
                f"code cell {i + 1}: the hidden assertion must check what code cell {i} computed (one of "
                f"{sorted(computed)})")
    assert any(c.get("outputs") for c in cells), "no stored outputs: run bash scripts/execute.sh"


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = toc_files()
    for path in NOTEBOOKS:
        assert str(path.relative_to(ROOT).with_suffix("")) in listed, f"{path} is not in _toc.yml"
    for entry in listed:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml: {entry} missing"


# --- book/api.md: each section's "Used in:" line lists the chapters that use its module --------------------------

API = ROOT / "book" / "api.md"
SECTION = re.compile(r"^## .+ — `(kdtutor(?:\.\w+)*)`\s*$", re.M)


def api_sections() -> dict[str, set[str]]:
    """``{module: chapters listed in its "Used in:" paragraph}`` for every ``## Title — `kdtutor.module``` section
    of book/api.md (an empty set where the section has no "Used in:" line)."""
    text = API.read_text()
    heads = list(SECTION.finditer(text))
    sections = {}
    for head, after in zip(heads, heads[1:] + [None], strict=True):
        body = text[head.end():after.start() if after else len(text)]
        body = re.split(r"^#{1,2} ", body, flags=re.M)[0]
        used = re.search(r"^Used in:(.*?)(?:\n\s*\n|\Z)", body, re.M | re.S)
        docs = re.findall(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`", used.group(1)) if used else []
        sections[head.group(1)] = {d.strip() for d in docs}
    return sections


def _module_of(dotted: str) -> str | None:
    """The longest importable ``kdtutor...`` prefix of a dotted path (``kdtutor.data.split`` -> ``kdtutor.data``)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


def _home_of_top_level_name(kd, name: str) -> str | None:
    """The module that defines ``kd.<name>``: its ``__module__``, or for a constant (no ``__module__``) the
    deepest kdtutor module that lists it in ``__all__`` and holds the same object."""
    obj = getattr(kd, name)
    home = getattr(obj, "__module__", None)
    if isinstance(home, str) and home.startswith("kdtutor"):
        return home
    import sys

    holders = [m for m, mod in list(sys.modules.items()) if m.startswith("kdtutor.") and mod is not None
               and name in getattr(mod, "__all__", ()) and getattr(mod, name, None) is obj]
    return max(holders, key=lambda m: m.count("."), default=None)


def modules_used(nb) -> set[str]:
    """Every kdtutor module a chapter's code uses: ``from kdtutor.X import``, ``from kdtutor import X`` (a room),
    ``kdtutor.X.name``, and ``kd.<name>``
    for a name in ``kdtutor.__all__`` (counted for the module that defines it)."""
    kd = importlib.import_module("kdtutor")
    for extra in ("kdtutor.notebook", "kdtutor.experiments", "kdtutor.pitfalls"):
        importlib.import_module(extra)
    code = "\n".join(python_source(c) for c in code_cells(nb))
    used = set()
    for dotted in re.findall(r"\bfrom\s+(kdtutor(?:\.\w+)+)\s+import\b", code):
        used.add(dotted)
    for names in re.findall(r"\bfrom\s+kdtutor\s+import\s+([\w, ]+)", code):  # rooms: from kdtutor import lm, course
        for name in (n.split()[0] for n in names.split(",") if n.strip()):  # "compression as kc": compression
            if importlib.util.find_spec(f"kdtutor.{name}"):
                used.add(f"kdtutor.{name}")
    for dotted in re.findall(r"(?<![\w.])(kdtutor(?:\.\w+)+)", code):
        module = _module_of(dotted)
        if module and module != "kdtutor":
            used.add(module)
    for name in re.findall(r"(?<![\w.])kd\.(\w+)", code):
        if name in kd.__all__ and (home := _home_of_top_level_name(kd, name)):
            used.add(home)
    return used


INDEXED_BY = {"kdtutor.methods": ("kdtutor.losses",)}  # the losses room is the index of the methods' losses


def chapters_using(module: str) -> set[str]:
    rooms = (module, *INDEXED_BY.get(module, ()))
    return {path.stem for path in NOTEBOOKS
            if any(m == r or m.startswith(r + ".") for m in modules_used(load(path)) for r in rooms)}


API_SECTIONS = api_sections() if API.exists() else {}


def test_the_api_page_has_sections():
    assert API_SECTIONS, "book/api.md: no '## Title — `kdtutor.module`' sections found"


@pytest.mark.parametrize("module", sorted(API_SECTIONS))
def test_api_used_in_lists_the_chapters_that_use_the_module(module):
    listed, actual = API_SECTIONS[module], chapters_using(module)
    assert listed == actual, (f"book/api.md, section {module}: 'Used in:' should list {sorted(actual) or 'nothing'}"
                              f"; missing {sorted(actual - listed)}, not using it {sorted(listed - actual)}")


def test_configuration():
    assert re.search(r'execute_notebooks:\s*"off"', CONFIG)
    for needed in ("dollarmath", "amsmath", "book/references.bib", "only_build_toc_files: true", "colab_url",
                   "binderhub_url", "sphinx.ext.autodoc"):
        assert needed in CONFIG
    assert REPO_URL in (ROOT / "README.md").read_text()
    assert REPO_URL in (ROOT / "pyproject.toml").read_text()
