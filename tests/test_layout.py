"""The package's architecture, enforced: imports go one way, and no module reaches into another's private names.

Rooms, from the bottom up: ``checks``; ``data``; ``checkpoint``; ``models``; ``methods`` (one module per method,
its pure loss beside its objective) and ``losses`` (their index); ``evaluation``; ``training``; ``experiments``; then
the helpers for people (``notebook``, ``pitfalls``, the CLI); ``lm`` (language models) sits on top, imported only
by the CLI (and at run time by the registry, through a shipped record's ``module`` field, and by
``checkpoint.load``, to rebuild a ``CharTransformer`` from a file: ``LAZY_ARCHITECTURES``, a fixed table). Data and
models know nothing of training; losses are pure functions of tensors; nothing in the package imports the course
room or the book's notebooks. No module is longer than 400 lines.
"""

import ast
from pathlib import Path

import pytest

import kdtutor

PACKAGE = Path(kdtutor.__file__).parent

# room -> the rooms it may import from (besides itself)
ALLOWED = {
    "checks": set(),
    "data": {"checks"},
    "checkpoint": {"checks"},
    "models": {"checks", "checkpoint"},
    # one module per method: its pure loss and its objective (which read batches and record features)
    "methods": {"checks", "data", "models"},
    "losses": {"methods"},  # the index of every method's pure loss
    "progress": set(),
    "evaluation": {"checks", "data", "checkpoint", "models", "losses", "progress"},
    "training": {"checks", "data", "models", "methods", "evaluation", "progress"},
    "compression": {"checks", "data", "models", "evaluation"},
    "experiments": {"checks", "data", "models", "losses", "evaluation", "training", "notebook", "progress"},
    "selfcheck": {"data", "models", "training", "version"},
    "pitfalls": set(),
    "version": set(),
    "notebook": {"data"},
    "__main__": {"data", "selfcheck", "lm"},
    # the course exercises' checkers: they read the references (losses, evaluation); nothing imports them
    "course": {"losses", "evaluation"},
    # Part V's language models: a room of its own on top of the package; nothing but the CLI imports it
    "lm": {"checks", "checkpoint", "data", "models", "methods", "evaluation", "training"},
    "__init__": {"checkpoint", "compression", "data", "evaluation", "losses", "models", "selfcheck", "training",
                 "version"},
}


def room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def kdtutor_imports(path: Path):
    """(module imported, names imported) for every import of kdtutor in ``path``, at any depth of the file."""
    tree = ast.parse(path.read_text())
    package = ".".join(("kdtutor", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kdtutor":
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == "kdtutor":
                yield module, [a.name for a in node.names]


MODULES = sorted(PACKAGE.rglob("*.py"))


def target_room(module: str, names: list[str]) -> set[str]:
    parts = module.split(".")
    if len(parts) > 1:
        return {parts[1]}
    return set(names)  # "from kdtutor import checks" imports the room named


def test_every_module_belongs_to_a_known_room():
    assert {room(p) for p in MODULES} == set(ALLOWED)
    assert not any("course" in allowed for allowed in ALLOWED.values())  # nothing imports the course room


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    here = room(path)
    for module, names in kdtutor_imports(path):
        for target in target_room(module, names):
            if target != here:
                assert target in ALLOWED[here], f"{path.relative_to(PACKAGE)}: {here} must not import {target}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_anothers_private_names(path):
    for module, names in kdtutor_imports(path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(PACKAGE)} imports private {private} from {module}"


def test_losses_are_pure_functions_of_tensors():
    """Every method module's functions (its losses) use torch and the shared checks only: no data, model, module or
    batch — those belong to the objective beside them. The index room ``losses`` only re-exports them."""
    for path in (PACKAGE / "methods").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] in ("torch", "__future__", "kdtutor", "math", "numpy"), path
        impure = {"nn", "np", "warnings"} | {alias.asname or alias.name for node in tree.body
                                             if isinstance(node, ast.ImportFrom) and node.module
                                             and node.module.startswith(("kdtutor.data", "kdtutor.models"))
                                             for alias in node.names}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith(("_loss", "_kl", "_jsd", "_targets",
                                                                         "_map", "_terms", "_rows", "_entropy")):
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                assert not used & impure, f"{path.name}: {node.name} uses {sorted(used & impure)}"
    index = ast.parse((PACKAGE / "losses" / "__init__.py").read_text())
    assert not [n for n in index.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]  # an index only
    assert [p.name for p in (PACKAGE / "losses").glob("*.py")] == ["__init__.py"]


def test_a_method_is_one_module_and_one_index_line():
    """Each method module holds its losses and its objective; the methods index imports it in one statement."""
    index = (PACKAGE / "methods" / "__init__.py").read_text()
    for path in sorted((PACKAGE / "methods").glob("*.py")):
        if path.stem in ("__init__",):
            continue
        assert index.count(f"from kdtutor.methods.{path.stem} import") == 1, path.stem


def test_the_rule_catches_a_violation(tmp_path):
    """The checker itself: a models module importing training is found."""
    bad = PACKAGE / "models" / "_probe_for_test.py"
    bad.write_text("from kdtutor.training import fit\nfrom kdtutor.losses.logits import _private\n")
    try:
        found = list(kdtutor_imports(bad))
        assert ("kdtutor.training", ["fit"]) in found
        assert "training" not in ALLOWED[room(bad)]
        assert any(n.startswith("_") for _, names in found for n in names)
    finally:
        bad.unlink()


def test_every_room_says_what_lives_there():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{init}: first docstring line says what lives there"


def test_checkpoint_imports_by_name_only_the_modules_of_its_fixed_table():
    """``load`` imports a module because of what a file says only through this table: kdtutor's own rooms."""
    from kdtutor.checkpoint import LAZY_ARCHITECTURES

    assert LAZY_ARCHITECTURES == {"CharTransformer": "kdtutor.lm"}


def test_fit_reads_on_one_screen():
    """``fit``'s body (without its docstring) stays within 60 lines: the setup, the epoch and the step are named
    helpers (``_Run.prepare``, ``_Run.train_epoch``, ``_Run.step``), the error reports too."""
    tree = ast.parse((PACKAGE / "training" / "loop.py").read_text())
    fit = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    body = fit.body[1:] if isinstance(fit.body[0], ast.Expr) else fit.body
    assert body[-1].end_lineno - body[0].lineno + 1 <= 60


def test_no_module_is_longer_than_400_lines():
    """Each module reads top to bottom in one sitting; a longer one is split by concern."""
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_every_method_module_has_its_own_test_module():
    """The tests mirror the methods room: ``kdtutor/methods/X.py`` is tested in ``tests/methods/test_X.py``."""
    here = Path(__file__).parent / "methods"
    missing = [p.stem for p in (PACKAGE / "methods").glob("*.py")
               if p.stem != "__init__" and not (here / f"test_{p.stem}.py").is_file()]
    assert not missing, missing
