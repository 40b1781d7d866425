"""The set-up: the lock, the declared dependencies, environment.yml and the venv script that installs them.

- ``constraints.txt`` (the lock) pins every package exactly, and the versions that executed the stored notebook
  outputs (recorded in ``book/execution-times.md`` by ``scripts/execute_notebooks.py``) are the locked ones.
- pyproject.toml declares each dependency once (extras build on each other) and every third-party module the
  package, the tests and the scripts import; ``environment.yml`` repeats only the core dependencies, with their
  bounds.
- ``setup_venv`` (scripts/common.sh) installs at the locked versions, and a second run installs nothing and says so
  (run here against a stand-in Python that records what pip was asked to do).
"""

import ast
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _lower_bound(requirement: str) -> str:
    found = re.search(r">=\s*([\w.]+)", requirement)
    return found.group(1) if found else ""


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def recorded() -> dict[str, str]:
    text = (ROOT / "book" / "execution-times.md").read_text().partition("## Versions")[2]
    rows = re.finditer(r"^\| ([\w.-]+) \| ([\w.+-]+) \|$", text, re.M)
    return {m[1].lower(): m[2] for m in rows if m[1] not in ("package", "---")}


def test_the_lock_pins_the_versions_that_made_the_stored_outputs():
    pins, used = locked(), recorded()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from execute_notebooks import RECORDED
    finally:
        sys.path.pop(0)
    assert set(used) == set(RECORDED), "book/execution-times.md: the Versions table should list every RECORDED package"
    differ = {name: (version, pins.get(name)) for name, version in used.items() if pins.get(name) != version}
    assert not differ, (f"the stored outputs were made with other versions than the lock (recorded, locked): {differ}; "
                        "re-execute the notebooks with the locked versions, or move the lock (scripts/update_lock.sh)")


def test_the_lock_covers_every_declared_dependency():
    pins = locked()
    declared = {_name(r) for r in PROJECT["dependencies"]}
    for extra in PROJECT["optional-dependencies"].values():
        declared |= {_name(r) for r in extra if _name(r) != "kdtutor"}
    assert not declared - set(pins), f"constraints.txt does not pin {sorted(declared - set(pins))}"


def test_each_dependency_is_declared_once_and_extras_build_on_each_other():
    extras = PROJECT["optional-dependencies"]
    core = {_name(r): r for r in PROJECT["dependencies"]}
    seen: dict[str, str] = {}
    for extra, requirements in extras.items():
        for requirement in requirements:
            name = _name(requirement)
            if name == "kdtutor":
                included = re.search(r"\[(.+)\]", requirement).group(1).split(",")
                assert set(included) <= set(extras), f"extra {extra!r} includes an unknown extra: {requirement}"
                continue
            if name in core:  # allowed only to raise a core bound (the compress extra's torch for the exporter)
                assert _lower_bound(requirement) > _lower_bound(core[name]), f"{extra!r} repeats {core[name]!r}"
            assert name not in seen, f"{name} is declared in both the {seen[name]!r} and {extra!r} extras"
            seen[name] = extra
    assert "kdtutor[compress]" in extras["book"] and "kdtutor[book]" in extras["lab"]


# Modules imported through a dependency of a declared package: the parent must really require them.
TRANSITIVE = {"myst-nb": "jupyter-book", "sphinx": "jupyter-book", "nbclient": "jupyter-book",
              "nbformat": "nbval", "pillow": "torchvision"}


def imported_modules() -> set[str]:
    files = [*ROOT.glob("kdtutor/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("scripts/*.py"),
             *ROOT.glob("benchmarks/*.py"), ROOT / "book" / "conftest.py"]
    packages = {p.parent.name for p in files if p.name == "__init__.py"}  # e.g. tests/methods
    local = {p.stem for p in files} | packages | {"kdtutor", "conftest"}
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_every_imported_module_is_declared():
    declared = {_name(r) for r in PROJECT["dependencies"]}
    for extra in PROJECT["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    providers = metadata.packages_distributions()
    undeclared = {}
    for module in sorted(imported_modules()):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        if dists & declared:
            continue
        parents = {TRANSITIVE[d] for d in dists if d in TRANSITIVE}
        required = {_name(r) for p in parents for r in metadata.requires(p) or []}
        if not (dists & required and parents <= declared):
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_environment_yml_repeats_the_core_dependencies_and_installs_the_book_extra():
    env = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    conda = {}
    for line in re.findall(r"^  - (\S+)\s*$", env, re.M):
        name = {"pytorch-cpu": "torch"}.get(_name(line), _name(line))
        if name not in ("python", "pip", "pip:"):
            conda[name] = _lower_bound(line)
    wanted = {_name(r): _lower_bound(r) for r in PROJECT["dependencies"]}
    wanted["torch"] = next(_lower_bound(r) for r in PROJECT["optional-dependencies"]["compress"] if _name(r) == "torch")
    assert conda == wanted
    assert re.findall(r"^      - (.+)$", env, re.M) == ["-e .[book]"]


def test_the_book_is_built_with_warnings_as_errors():
    build = re.search(r"build_book\(\) \{\n(.+?)\n\}", (ROOT / "scripts" / "common.sh").read_text(), re.S).group(1)
    assert " -W " in build and " -n " in build


# A stand-in Python for setup_venv: pip calls are logged, imports succeed.
FAKE_PYTHON = textwrap.dedent("""\
    #!/usr/bin/env bash
    echo "$*" >> "$(dirname "$0")/../calls.log"
    case "$*" in
        "-m pip --version") echo "pip 24.0" ;;
        *hashlib*) exec python3 "$@" ;;
        -c*) echo "kdtutor x with torch y" ;;
    esac
    exit 0
""")


def run_setup(venv: Path, extras: str, lock: Path | None = None, **env) -> str:
    script = f'source scripts/common.sh; {f"LOCK={lock}; " if lock else ""}setup_venv {extras}'
    outer = {k: v for k, v in os.environ.items() if k != "KDTUTOR_TORCH_INDEX"}  # the test sets its own
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**outer, "KDTUTOR_VENV": str(venv), **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def fake_venv(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return venv


def pip_installs(venv: Path) -> list[str]:
    log = venv / "calls.log"
    return [c for c in log.read_text().splitlines() if c.startswith("-m pip install")] if log.exists() else []


def test_setup_venv_installs_the_locked_versions_once(fake_venv):
    out = run_setup(fake_venv, "test,book")
    (install,) = pip_installs(fake_venv)
    assert "-c constraints.txt" in install and "-e .[book,test]" in install, install
    assert "installing kdtutor[book,test]" in out
    out = run_setup(fake_venv, "book")  # a subset of what is installed: nothing to do
    assert len(pip_installs(fake_venv)) == 1 and "nothing to install" in out, out
    run_setup(fake_venv, "lab")  # a new extra: installs again, keeping the others
    assert pip_installs(fake_venv)[-1].endswith("-e .[book,lab,test]")


def test_setup_venv_installs_again_when_the_lock_changes_keeping_every_extra(fake_venv, tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(LOCK.read_text())
    run_setup(fake_venv, "test,book", lock=lock)
    run_setup(fake_venv, "book", lock=lock)
    assert len(pip_installs(fake_venv)) == 1
    lock.write_text(LOCK.read_text().replace("torch==", "torch==0.0.0.dev0+x", 1))
    out = run_setup(fake_venv, "book", lock=lock)
    assert len(pip_installs(fake_venv)) == 2 and pip_installs(fake_venv)[-1].endswith("-e .[book,test]"), out


def test_setup_venv_takes_torch_from_the_index_asked_for(fake_venv):
    run_setup(fake_venv, "test", KDTUTOR_TORCH_INDEX="https://example.invalid/whl/cpu")
    first, second = pip_installs(fake_venv)
    assert "--index-url https://example.invalid/whl/cpu --no-deps torch torchvision" in first
    assert "-c constraints.txt" in first
    assert "-e .[test]" in second


def test_setup_venv_refuses_a_venv_without_pip(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/usr/bin/env bash\nexit 1\n")  # every call fails, as `python -m pip` does without pip
    python.chmod(0o755)
    result = subprocess.run(["bash", "-c", "source scripts/common.sh; apt_install() { return 1; }; setup_venv test"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "KDTUTOR_VENV": str(venv)})
    assert result.returncode == 1 and "no pip" in result.stdout, result.stdout + result.stderr
