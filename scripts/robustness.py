"""Do the book's claims hold on other machines? Re-execute notebooks under several numerics and compare.

    python scripts/robustness.py book/kd-transfer.ipynb            # every variant, one notebook
    python scripts/robustness.py --variants native,threads1        # chosen variants, every notebook in _toc.yml
    python scripts/robustness.py --page book/updating.ipynb        # ... and record the result on the page

The stored outputs are made with pinned numerics (``kdtutor.notebook.pin_numerics``: PyTorch's kernels and oneDNN
at AVX2, 2 threads). A reader's machine computes otherwise: its own best instruction set, another thread count, no
vector unit at all. Each variant below re-executes a notebook (as nbval does: book mode, from its own folder, on a
copy — the stored notebook is never written) with that machine's numerics, and the report says, for every hidden
assertion (a ``remove-cell`` that asserts) and every glued value, whether it held: an assertion that fails, or a
glued verdict (a word, not a number) that differs from the stored one, is a claim that flipped. Numbers are compared
with the stored ones too: the largest relative change says how far the variant moved the chapter's results.

``--page`` writes one row per notebook to ``book/reproducibility.md`` (started from a template when missing) with
the notebook's source hash, so that a changed chapter shows as not re-checked. Use ``bash scripts/robustness.sh``, which
sets up the environment first. Each variant costs one execution of the notebook: the whole book, three variants, takes
about three times the nbval stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "reproducibility.md"
REPORTS = ROOT / "_build" / "robustness"

# Each variant: what it changes in the book's pinned numerics (pin_numerics fills in what a variant leaves unset).
VARIANTS = {
    "pinned": {},  # the book's own numerics, as nbval runs them: reproduces the stored outputs (checks the harness)
    "native": {},  # nothing pinned: the machine's best kernels (AVX-512 where it has it), all its threads
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},  # no AVX: an old CPU, or ARM's order
    "threads1": {"OMP_NUM_THREADS": "1"},  # a single thread (a busy laptop, a notebook server's quota)
    "threads4": {"OMP_NUM_THREADS": "4"},  # four threads (a bigger laptop)
}


# Glued names that hold a time (seconds, milliseconds, a speed ratio): they differ on every run, and are not results.
TIMING = re.compile(r"^t_(?!star)|(^|_)(ms|s|sec|seconds|minutes|time|times|latency|speed|speedup|faster|slower)"
                    r"(_|$|\d)")


def toc_notebooks() -> list[Path]:
    files = re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text())
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def source_hash(path: Path) -> str:
    """SHA-256 (first 12 hex digits) of every cell's source and type: a changed chapter gets a new hash."""
    nb = nbformat.read(path, as_version=4)
    text = "\n\0".join(f"{c.cell_type}\0{c.source}" for c in nb.cells)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def claims(nb) -> tuple[dict[int, str | None], dict[str, str]]:
    """The hidden assertions (cell index -> None if it held, else the error) and the glued values (name -> repr)."""
    checks, glued = {}, {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if "remove-cell" in cell.metadata.get("tags", []) and re.search(r"^\s*assert\b", cell.source, re.M):
            checks[i] = f"{errors[0]['ename']}: {errors[0]['evalue'][:200]}" if errors else None
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:  # myst-nb's glue: the value's repr under the papermill record's MIME type
                data = out.get("data", {})
                glued[name] = data.get("application/papermill.record/text/plain", data.get("text/plain", ""))
    return checks, glued


def verdict_of(text: str | None) -> str | None:
    """A glued sentence without its numbers: "+0.03 (95% CI +0.02 to +0.04) -> clear gain" keeps its words only, so
    that a number moving inside it is not counted as a flipped verdict (the numbers are compared on their own)."""
    return None if text is None else re.sub(r"[-+\u2212]?\d[\d.,]*(?:e[-+]?\d+)?", "#", text)


def number(text: str) -> float | None:
    try:
        return float(text.replace("np.float64(", "").rstrip(")"))
    except ValueError:
        return None


def variant_env(name: str) -> dict[str, str]:
    """The kernel's environment for a variant: book mode, the pinned numerics with the variant's changes."""
    from kdtutor.notebook import BOOK_NUMERICS, pin_numerics

    env = {k: v for k, v in os.environ.items() if k not in BOOK_NUMERICS and k != "KDTUTOR_NUMERICS"}
    env["KDTUTOR_BOOK"] = "1"  # as nbval runs the notebooks (book/conftest.py)
    if name != "native":  # "pinned" changes nothing: pin_numerics alone
        env.update(VARIANTS[name])
        pin_numerics(env)
    return env


def spread_of(name: str, glued: dict[str, str]) -> float | None:
    """The seed-to-seed spread of a glued mean or gain, where the chapter glues it too: its standard deviation
    (``x_std`` beside ``x_acc``/``x_mean``), or the half-width of its 95% interval (``x_low``/``x_high``, also as
    ``x_ci_low``/``x_ci_high``, beside ``x`` or ``x_gain``). A shift of 1 such unit can flip a verdict."""
    base = name.removesuffix("_gain").removesuffix("_mean").removesuffix("_acc")
    std = number(glued.get(f"{base}_std", "") or "")
    if std:
        return abs(std)
    for low, high in ((f"{name}_low", f"{name}_high"), (f"{base}_low", f"{base}_high"),
                      (f"{base}_ci_low", f"{base}_ci_high")):
        lo, hi = number(glued.get(low, "") or ""), number(glued.get(high, "") or "")
        if lo is not None and hi is not None and hi > lo and name not in (low, high):
            return (hi - lo) / 2
    return None


def run_variant(path: Path, env: dict[str, str], timeout: int) -> tuple[object, float]:
    """Execute a copy of the notebook, its kernel started with ``env``; an error does not stop the run."""
    nb = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)


def compare(path: Path, variants: list[str], timeout: int) -> dict:
    stored_checks, stored_glue = claims(nbformat.read(path, as_version=4))
    verdicts = {k for k, v in stored_glue.items() if number(v) is None}
    report = {"notebook": str(path.relative_to(ROOT)), "hash": source_hash(path), "checks": len(stored_checks),
              "verdicts": len(verdicts), "numbers": len(stored_glue) - len(verdicts), "variants": {}}
    for name in variants:
        nb, seconds = run_variant(path, variant_env(name), timeout)
        checks, glued = claims(nb)
        failed = {str(i): err for i, err in checks.items() if err}
        flipped = {k: [stored_glue[k], glued.get(k)] for k in sorted(verdicts)
                   if verdict_of(glued.get(k)) != verdict_of(stored_glue[k])}
        pairs = {k: (a, b) for k, v in stored_glue.items() if k not in verdicts and not TIMING.search(k)
                 if (a := number(v)) is not None and (b := number(glued.get(k, ""))) is not None
                 and math.isfinite(a) and math.isfinite(b)}
        moved = {k: abs(b - a) / max(abs(a), 1e-12) for k, (a, b) in pairs.items()}
        spread = {k: abs(b - a) / s for k, (a, b) in pairs.items() if (s := spread_of(k, stored_glue))}
        report["variants"][name] = {"seconds": round(seconds, 1), "failed_checks": failed, "flipped": flipped,
                                    "max_relative_change": max(moved.values(), default=0.0),
                                    "most_moved": sorted(moved, key=moved.get, reverse=True)[:5],
                                    "unchanged_numbers": sum(m == 0 for m in moved.values()),
                                    "max_shift_in_spreads": max(spread.values(), default=None)}
        print(f"{path.name} [{name}] {seconds:.0f} s: {len(failed)}/{len(checks)} hidden checks failed, "
              f"{len(flipped)}/{len(verdicts)} glued verdicts flipped; results (timings aside) moved up to "
              f"{100 * max(moved.values(), default=0.0):.2g}% ({sum(m == 0 for m in moved.values())}/{len(moved)} "
              + (f"unchanged), means by up to {max(spread.values()):.2f} of their seed spread" if spread
                 else "unchanged)"))
    return report


ROW = re.compile(r"^\| `(?P<nb>[^`]+)` \|")
PAGE_TEMPLATE = """# Reproducibility

The stored outputs are made and checked with pinned numerics (PyTorch's kernels and oneDNN at AVX2, 2 threads:
`kdtutor.notebook.pin_numerics`). A reader's machine computes otherwise. `bash scripts/robustness.sh` re-executes
each notebook under other numerics and records here whether every hidden check and glued verdict held.

| notebook | source hash | variants | hidden checks | glued verdicts | flipped | largest change |
| --- | --- | --- | ---: | ---: | --- | ---: |

"""
TABLE_HEAD = ("| notebook | source hash | variants | hidden checks | glued verdicts | flipped | largest change |\n"
              "| --- | --- | --- | ---: | ---: | --- | ---: |\n")


def write_row(report: dict) -> None:
    """Replace (or add) the notebook's row in the page's table, keeping the book's order."""
    text = PAGE.read_text() if PAGE.exists() else PAGE_TEMPLATE
    head, sep, rest = text.partition(TABLE_HEAD)
    if not sep:
        raise SystemExit(f"{PAGE}: the results table's header is missing")
    lines = rest.split("\n")
    end = next(i for i, line in enumerate(lines) if not line.startswith("|"))
    rows = {ROW.match(line)["nb"]: line for line in lines[:end] if ROW.match(line)}
    v = report["variants"]
    bad = [f"{name}: " + ", ".join([f"check in cell {c}" for c in r["failed_checks"]] + list(r["flipped"]))
           for name, r in v.items() if r["failed_checks"] or r["flipped"]]
    change = max((r["max_relative_change"] for r in v.values()), default=0.0)
    rows[report["notebook"]] = (f"| `{report['notebook']}` | `{report['hash']}` | {', '.join(v)} | {report['checks']} "
                                f"| {report['verdicts']} | {'; '.join(bad) or 'none'} | {100 * change:.2g}% |")
    order = [str(p.relative_to(ROOT)) for p in toc_notebooks()]
    table = [rows[nb] for nb in order if nb in rows]
    PAGE.write_text(head + TABLE_HEAD + "\n".join(table) + "\n" + "\n".join(lines[end:]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to check (default: every one in _toc.yml)")
    parser.add_argument("--variants", default="native,default,threads1,threads4",
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all but pinned)")
    parser.add_argument("--page", action="store_true", help="record each result on book/reproducibility.md")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: expected names from {', '.join(VARIANTS)}, got {', '.join(unknown)}")
    REPORTS.mkdir(parents=True, exist_ok=True)
    flipped = 0
    for path in [Path(p).resolve() for p in args.notebooks] or toc_notebooks():
        report = compare(path, variants, args.timeout)
        (REPORTS / f"{path.stem}.json").write_text(json.dumps(report, indent=1))
        flipped += sum(bool(r["failed_checks"] or r["flipped"]) for r in report["variants"].values())
        if args.page:
            write_row(report)
    print(f"{flipped} variant run(s) with a failed check or a flipped verdict; reports in {REPORTS}")
    return 1 if flipped else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
