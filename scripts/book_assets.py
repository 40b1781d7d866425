"""The book's math and widget scripts, served from the built site so that the book reads offline.

Jupyter Book 1 loads MathJax 3 and the ipywidgets manager (require.js, @jupyter-widgets/html-manager) from CDNs.
This file does two things:

* ``python scripts/book_assets.py`` (the build's "book assets" stage) fetches pinned npm packages with ``npm pack``,
  checks each tarball's SHA-512 against the value pinned below, and copies what the pages load (~12 MB) into
  ``_build/.assets/site/_static/offline/`` (git-ignored; the tarballs stay cached in ``_build/.assets/npm/``, so a
  second build fetches nothing). Where they cannot be fetched it prints one line and exits 0: the book then builds
  with the CDN links and needs a network for math.
* As a Sphinx extension (``sphinx: local_extensions`` in ``_config.yml``) it checks, before anything reads the
  configuration, that the files ``mathjax_path`` and ``nb_ipywidgets_js`` point at are there; if they are not, it
  puts back the CDN defaults and drops the missing ``html_extra_path`` entry, so the build stays warning-free
  (``-W``) either way.

``python scripts/book_assets.py --check`` exits 0 if the assets are in place, 1 if not (fetches nothing).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".assets"
TARBALLS = CACHE / "npm"  # the npm tarballs, kept between builds
SITE = CACHE / "site"  # the html_extra_path folder: copied as is into _build/html/
OFFLINE = SITE / "_static" / "offline"  # paths in _config.yml are relative to _static/

# package spec -> (SHA-512 of its npm tarball as npm's "integrity" field, files and folders copied: source -> target
# under _static/offline/). Versions are pinned: this is code that runs in every reader's browser.
PACKAGES = {
    "mathjax@3.2.2": (
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        {
            # the component Sphinx loads by default, and what it loads on demand: TeX extensions (autoload),
            # the CHTML fonts, the menu and the accessibility tools (with the speech-rule engine they use)
            "es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
            "es5/input/tex/extensions": "mathjax/input/tex/extensions",
            "es5/input/mml": "mathjax/input/mml",
            "es5/output/chtml": "mathjax/output/chtml",
            "es5/a11y": "mathjax/a11y",
            "es5/ui": "mathjax/ui",
            "es5/sre": "mathjax/sre",
            "LICENSE": "mathjax/LICENSE",
        },
    ),
    "requirejs@2.3.8": (
        "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        {"require.js": "widgets/require.js", "package.json": "widgets/requirejs-package.json"},
    ),
    # the version myst-nb 1.x loads from its CDN; embed-amd.js bundles the base and controls widgets
    "@jupyter-widgets/html-manager@1.0.6": (
        "sha512-+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ==",
        {"dist/embed-amd.js": "widgets/embed-amd.js", "dist/*.woff2": "widgets/", "dist/*.woff": "widgets/",
         "LICENSE": "widgets/LICENSE"},
    ),
}
# Loaded between require.js and embed-amd.js (nb_ipywidgets_js in _config.yml). The widget manager finds the fonts
# its styles use next to its AMD modules, which require.js places under the page's own folder unless told otherwise.
REQUIRE_CONFIG = "widgets/require-config.js"
REQUIRE_CONFIG_JS = """\
// Written by scripts/book_assets.py: the widget manager's modules (and the fonts their styles load) are here.
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  require.config({paths: {
    "@jupyter-widgets/base": here + "base",
    "@jupyter-widgets/controls": here + "controls",
    "@jupyter-widgets/html-manager": here + "html-manager",
    "@jupyter-widgets/html-manager/dist": here.replace(/\\/$/, "")
  }});
})();
"""
STAMP = OFFLINE / "assets.json"  # written last: which packages (and which require.js configuration) the folder holds
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
FALLBACK = "the book will load MathJax and the widget manager from CDNs: it needs a network for math"


# --- fetching (the build's "book assets" stage) ----------------------------------------------------------------


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return 0 if in_place() else 1
    if argv:
        print(__doc__)
        return 2
    if in_place():
        print(f"book assets: cached in {SITE.relative_to(ROOT)} ({', '.join(PACKAGES)})")
        return 0
    try:
        fetch()
    except (OSError, RuntimeError, subprocess.SubprocessError, tarfile.TarError) as exc:
        print(f"book assets: could not fetch them ({one_line(exc)}); {FALLBACK}")
        return 0
    print(f"book assets: {', '.join(PACKAGES)} from npm, in {SITE.relative_to(ROOT)} ({size_mb(SITE)} MB)")
    return 0


def in_place() -> bool:
    """True if the site folder holds exactly the pinned packages (the stamp is written after everything else)."""
    try:
        return json.loads(STAMP.read_text()) == contents()
    except (OSError, ValueError):
        return False


def contents() -> dict[str, str]:
    """What the site folder holds: each package with its tarball's SHA-512, and the require.js configuration's."""
    config = "sha256-" + base64.b64encode(hashlib.sha256(REQUIRE_CONFIG_JS.encode()).digest()).decode()
    return {spec: sha for spec, (sha, _) in PACKAGES.items()} | {REQUIRE_CONFIG: config}


def fetch() -> None:
    """Download (or reuse) each pinned tarball, check it, and build the site folder next to the old one, then swap."""
    TARBALLS.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="site-", dir=CACHE))
    try:
        for spec, (integrity, files) in PACKAGES.items():
            tarball = cached_tarball(spec, integrity)
            with tempfile.TemporaryDirectory(dir=CACHE) as unpacked:
                with tarfile.open(tarball) as tar:
                    tar.extractall(unpacked, **SAFE_EXTRACT)
                copy_files(Path(unpacked) / "package", files, staging / "_static" / "offline")
        (staging / "_static" / "offline" / REQUIRE_CONFIG).write_text(REQUIRE_CONFIG_JS)
        (staging / "_static" / "offline" / "assets.json").write_text(json.dumps(contents(), indent=1) + "\n")
        shutil.rmtree(SITE, ignore_errors=True)
        staging.rename(SITE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached_tarball(spec: str, integrity: str) -> Path:
    """The package's tarball, from the cache or fetched with ``npm pack``, checked against its pinned SHA-512."""
    name, version = spec.rsplit("@", 1)
    tarball = TARBALLS / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not (tarball.is_file() and sri(tarball) == integrity):
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed")
        done = subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(TARBALLS), spec],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not tarball.is_file():
            raise RuntimeError(f"npm pack {spec} failed: {done.stderr.strip() or done.stdout.strip()}")
    if sri(tarball) != integrity:
        tarball.unlink()
        raise RuntimeError(f"{spec}: the tarball's SHA-512 is not the pinned one")
    return tarball


def sri(path: Path) -> str:
    """A file's subresource-integrity string, as npm writes it: ``sha512-`` and the base64 digest."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def copy_files(package: Path, files: dict[str, str], target: Path) -> None:
    """Copy each source (file, folder or ``*`` pattern) of an unpacked package to its place under ``target``."""
    for source, dest in files.items():
        matches = sorted(package.glob(source)) if "*" in source else [package / source]
        if not matches or not all(m.exists() for m in matches):
            raise RuntimeError(f"{package.parent.name}: {source} is not in the package")
        for match in matches:
            to = target / dest / match.name if dest.endswith("/") else target / dest
            to.parent.mkdir(parents=True, exist_ok=True)
            if match.is_dir():
                shutil.copytree(match, to)
            else:
                shutil.copy2(match, to)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def size_mb(folder: Path) -> str:
    return f"{sum(f.stat().st_size for f in folder.rglob('*') if f.is_file()) / 1e6:.1f}"


# --- the Sphinx extension ---------------------------------------------------------------------------------------


def setup(app):
    # before myst-nb (builder-inited) and Sphinx's html_extra_path check (config-inited, priority 800) read them
    app.connect("config-inited", use_offline_assets_if_present, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def use_offline_assets_if_present(app, config) -> None:
    """Keep the local ``mathjax_path`` and ``nb_ipywidgets_js`` if their files exist; else put the CDN defaults back."""
    static = OFFLINE.parent
    settings = {"mathjax_path": [config.mathjax_path], "nb_ipywidgets_js": list(config.nb_ipywidgets_js)}
    local = {name: [p for p in paths if "://" not in p] for name, paths in settings.items()}
    if all((static / path).is_file() for paths in local.values() for path in paths):
        return
    from sphinx.util import logging

    logging.getLogger(__name__).info(f"book assets missing: {FALLBACK}")
    for name, paths in local.items():
        if paths:
            setattr(config, name, config.values[name].default)
    config.html_extra_path = [p for p in config.html_extra_path if Path(app.confdir, p).resolve() != SITE]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
