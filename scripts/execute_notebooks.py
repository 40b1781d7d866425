"""Execute the book's notebooks in place, so their stored outputs are the ones nbval will re-check.

    python scripts/execute_notebooks.py                       # every notebook in _toc.yml, in book order
    python scripts/execute_notebooks.py book/getting-started.ipynb

Runs each notebook with the ``python3`` kernel from its own folder (as nbval does) in book mode
(``KDTUTOR_BOOK=1``: glue stores values without echoing them, no progress bars) with the book's pinned numerics
(``kdtutor.notebook.pin_numerics``: AVX2 kernels, 2 threads; ``book/conftest.py`` sets the same for nbval), fails
on any error or stderr output, warns about any chapter over its time budget, and updates the per-notebook timing
table and the versions table of ``book/execution-times.md``. Use ``bash scripts/execute.sh``, which sets up the
environment first.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from kdtutor.notebook import pin_numerics

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "book" / "execution-times.md"
HEADER = """# Execution times

How long each chapter takes to execute from top to bottom, measured by `scripts/execute_notebooks.py` when it
last stored the chapter's outputs. CI re-executes every notebook under nbval; the whole book must stay within
**45 minutes on 2 CPU cores**, and each chapter within **4 minutes** unless its issue says otherwise. The
scripts execute the notebooks, and nbval checks them, with the book's pinned numerics (see below); the machine
column says which numerics stored each chapter.

| notebook | seconds | machine |
| --- | ---: | --- |
"""
VERSIONS_HEADER = """## Versions

The packages that executed the notebooks, as the last run of the script found them. They must equal the lock,
`constraints.txt`, which the test command installs (`tests/test_setup.py` checks it).

| package | version |
| --- | --- |
"""
# The packages whose versions can change a stored output: the numerics, the exporters, the notebook machinery.
RECORDED = ("torch", "torchvision", "numpy", "matplotlib", "onnx", "onnxscript", "onnxruntime", "torchao",
            "torch-pruning", "nbval", "nbclient", "ipykernel", "myst-nb", "jupyter-book")
KEPT = "## Pinned numerics"  # this section and what follows it are written by hand and kept as they are
CHAPTER_BUDGET_S = 240  # 4 minutes per chapter, unless its issue says otherwise
ROW = re.compile(r"^\| `(?P<nb>[^`]+)` \| (?P<s>[\d.]+) \| (?P<machine>.*) \|$")


def toc_notebooks() -> list[Path]:
    files = re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text())
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def problems(nb) -> list[str]:
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out['ename']}: {out['evalue']}")
            elif out.get("name") == "stderr":
                found.append(f"cell {i}: stderr: {out['text'][:300]}")
    return found


def main(paths: list[str]) -> int:
    notebooks = [Path(p).resolve() for p in paths] or toc_notebooks()
    os.environ["KDTUTOR_BOOK"] = "1"  # book mode; the kernels started below inherit it
    pin_numerics()  # the CPU numerics nbval checks with (book/conftest.py): AVX2, 2 threads
    old = {}
    if TABLE.exists():
        for line in TABLE.read_text().splitlines():
            if m := ROW.match(line):
                old[m["nb"]] = (float(m["s"]), m["machine"])
    machine = (f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}, "
               f"{os.environ.get('ATEN_CPU_CAPABILITY', 'native')} kernels, {os.environ.get('OMP_NUM_THREADS', 'all')} "
               "threads")
    failed = False
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except Exception as err:  # the notebook keeps the outputs up to the failing cell for inspection
            print(f"{path.name}: FAILED: {type(err).__name__}: {str(err)[-1500:]}")
            failed = True
        seconds = time.perf_counter() - start
        nbformat.write(nb, path)
        bad = problems(nb)
        if bad:
            print(f"{path.name}: stored outputs hold errors or stderr:\n  " + "\n  ".join(bad))
            failed = True
        old[str(path.relative_to(ROOT))] = (seconds, machine)
        print(f"{path.relative_to(ROOT)}: {seconds:.1f} s")
        if seconds > CHAPTER_BUDGET_S:
            print(f"WARNING: {path.relative_to(ROOT)} took {seconds:.0f} s, over the {CHAPTER_BUDGET_S} s budget of "
                  "a chapter (unless its issue grants more)")
    order = [str(p.relative_to(ROOT)) for p in toc_notebooks()]
    rows = [f"| `{nb}` | {old[nb][0]:.1f} | {old[nb][1]} |" for nb in order if nb in old]
    total = sum(old[nb][0] for nb in order if nb in old)
    versions = [f"| {name} | {public_version(name)} |" for name in RECORDED]
    kept = TABLE.read_text().partition(KEPT)[1:] if TABLE.exists() else ("", "")
    TABLE.write_text(HEADER + "\n".join(rows) + f"\n| **whole book** | **{total:.1f}** | |\n\n"
                     + VERSIONS_HEADER + "\n".join(versions) + "\n\n" + "".join(kept).rstrip() + "\n")
    return 1 if failed else 0


def public_version(name: str) -> str:
    """The installed version without a local label (torch's ``+cu130`` or ``+cpu`` builds compute the same on a CPU)."""
    try:
        return metadata.version(name).split("+")[0]
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
