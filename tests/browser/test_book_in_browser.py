"""The built book as a reader meets it, offline: every page of _build/html in headless Chromium, served on 127.0.0.1
with every other host blocked.

Each page logs no console error but the two every Jupyter Book 1 page logs, asks no other host for anything, shows
no raw TeX (every equation rendered by the MathJax the site serves) and loads every image. The search page finds a
chapter; each chapter's Colab and Binder links open that chapter's notebook in the repository named in _config.yml;
the widget chapter shows the static figure that stands in for its live explorer. Screenshots of the index and two
chapters go to _build/browser/ for a person to look at.

Run by the browser stage of the test command (``bash scripts/test.sh``), after the book build; Playwright drives
Debian's Chromium (no ``playwright install``).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "browser"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHROMIUM = os.environ.get("KDTUTOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Every Jupyter Book 1 page logs these two (sphinx-thebe's script declares its URL twice; the theme reads its mode
# before it is set); they are allowed, and nothing else is.
BENIGN_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared", "Got invalid theme mode")
MATH_HEAVY = ("book/soft-targets.html", "book/soft-target-gradient.html")  # must show rendered math
SCREENSHOTS = ("index.html", "book/soft-targets.html", "book/soft-target-gradient.html")
SEARCH_WORD, SEARCH_HIT = "temperature", "book/soft-targets.html"
WIDGET_CHAPTER, EXPLORER_CODE = "book/soft-targets.html", "widgets.interact("

# Every page a reader can open; search.html is visited with a query (test_search_finds_a_chapter).
PAGES = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
               if not p.relative_to(SITE).parts[0].startswith("_") and p.name != "search.html")
CHAPTERS = [entry for entry in re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())
            if (ROOT / f"{entry}.ipynb").is_file()]


# --- what a visit records ---------------------------------------------------------------------------------------


@dataclass
class Visit:
    """One page, loaded and settled (math typeset, fonts and images loaded), kept open for further checks."""

    path: str
    page: object = None
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    blocked: list[str] = field(default_factory=list)  # requests to any host but the local server
    bad_responses: list[str] = field(default_factory=list)  # local requests that failed or answered >= 400
    math: dict = field(default_factory=dict)
    raw_tex: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything wrong with the page as a reader would see it offline; empty when it is clean."""
        found = [f"console error: {e}" for e in self.errors if not any(b in e for b in BENIGN_ERRORS)]
        found += [f"asked another host (the book must read offline): {u}" for u in self.blocked]
        found += [f"failed to load: {r}" for r in self.bad_responses]
        if self.math["elements"] and not self.math["mathjax"]:
            found.append(f"{self.math['elements']} equations but MathJax did not load")
        found += [f"equation not rendered: {t}" for t in self.math["unrendered"]]
        found += [f"raw TeX in the visible text: {t!r}" for t in self.raw_tex]
        found += [f"image not loaded: {i['src']}" for i in self.images if not i["ok"]]
        return found


SETTLE = """async () => {
    const maths = [...document.querySelectorAll('.math')];
    const ready = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
    for (let t = 0; maths.length && !ready() && t < 200; t++) await new Promise(r => setTimeout(r, 50));
    if (ready()) await MathJax.startup.promise;
    const images = [...document.images];
    images.forEach(i => { i.loading = 'eager'; });
    await Promise.all(images.map(i => i.complete ? null : new Promise(r => {
        i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); })));
    await document.fonts.ready;
    return {
        math: {elements: maths.length, mathjax: !!ready(),
               containers: document.querySelectorAll('mjx-container').length,
               unrendered: maths.filter(m => !m.querySelector('mjx-container'))
                                .map(m => m.textContent.trim().slice(0, 80))},
        images: images.map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    };
}"""

# TeX delimiters left in text a reader can see. Excluded: code, the rendered math itself, and the search page's
# results, which Sphinx shows as plain-text excerpts of the pages (their math as TeX) by design.
RAW_TEX = r"""() => {
    const skip = 'pre, code, script, style, noscript, textarea, template, mjx-container, #search-results';
    const tex = /\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{/;
    const found = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        const el = n.parentElement;
        if (!el || el.closest(skip) || !el.getClientRects().length) continue;
        if (tex.test(n.textContent)) found.push(n.textContent.trim().slice(0, 120));
    }
    return found;
}"""


# --- the site, the server, the browser --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def site() -> Path:
    assert (SITE / "index.html").is_file(), "no built book in _build/html: run bash scripts/build_book.sh first"
    mathjax = {p.relative_to(SITE).as_posix(): re.findall(r'<script[^>]*src="([^"]*tex-mml-chtml[^"]*)"', p.read_text())
               for p in SITE.rglob("*.html")}
    from_cdn = sorted(page for page, srcs in mathjax.items() if any("://" in src for src in srcs))
    assert (SITE / "_static" / "offline" / "assets.json").is_file() and not from_cdn, (
        f"the book was built without its offline math and widget scripts ({len(from_cdn)} pages load MathJax from a "
        "CDN): run bash scripts/build_book.sh where npm can reach its registry (see scripts/book_assets.py)")
    return SITE


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def base_url(site):
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    assert Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}: the test command installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def visit(browser, base_url):
    """``visit(path, query="")``: the page loaded once per session, with what it logged and what it asked for."""
    visits: dict[str, Visit] = {}

    def load(path: str, query: str = "") -> Visit:
        if path + query not in visits:
            visits[path + query] = open_page(browser, base_url, path, query)
        return visits[path + query]

    return load


def open_page(browser, base_url: str, path: str, query: str) -> Visit:
    visit = Visit(path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def only_local(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            visit.blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = visit.page = context.new_page()
    page.on("console", lambda msg: visit.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: visit.errors.append(str(exc)))
    page.on("requestfailed", lambda req: None if req.url in visit.blocked else
            visit.bad_responses.append(f"{req.url} ({req.failure})"))
    page.on("response", lambda resp: visit.bad_responses.append(f"{resp.url} (HTTP {resp.status})")
            if resp.status >= 400 else None)
    page.goto(base_url + path + query, wait_until="load")
    redirect = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', (SITE / path).read_text()[:500])
    if redirect:  # the site's root index.html sends the reader to the book's first page
        page.wait_for_url(urljoin(base_url + path, redirect.group(1)), wait_until="load")
    settled = page.evaluate(SETTLE)
    visit.math, visit.images = settled["math"], settled["images"]
    visit.raw_tex = page.evaluate(RAW_TEX)
    page.wait_for_load_state("networkidle")
    return visit


# --- the tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES or ["index.html"])
def test_page_reads_offline(visit, path):
    page = visit(path)
    problems = page.problems()
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)
    if path in MATH_HEAVY:
        assert page.math["containers"] > 0, f"{path}: no equation rendered by MathJax (no mjx-container)"


def test_screenshots_of_the_index_and_two_chapters(visit):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for path in SCREENSHOTS:
        page = visit(path).page
        # a chapter: its first displayed equation at the top, so the shot shows rendered math
        page.evaluate("() => { const m = document.querySelector('div.math'); if (m) m.scrollIntoView(); }")
        shot = SHOTS / (Path(path).stem + ".png")
        page.screenshot(path=shot)
        assert shot.stat().st_size > 10_000, f"{shot}: nearly empty"


def test_search_finds_a_chapter(visit):
    page = visit("search.html", f"?q={SEARCH_WORD}")
    page.page.wait_for_selector("#search-results ul.search li a", timeout=20_000)
    hits = page.page.eval_on_selector_all("#search-results ul.search li a", "links => links.map(a => a.href)")
    assert any(SEARCH_HIT in h for h in hits), f"searching {SEARCH_WORD!r} did not find {SEARCH_HIT}: {hits}"
    problems = page.problems()
    assert not problems, "search.html:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_launch_links_open_the_chapter_notebook(visit, chapter):
    """The rocket menu's Colab and Binder links, built by the theme from _config.yml, open this chapter's notebook."""
    repository, launch = CONFIG["repository"], CONFIG["launch_buttons"]
    org, repo = urlsplit(repository["url"]).path.strip("/").split("/")[:2]
    branch = repository.get("branch", "main")
    notebook = "/".join(p for p in (repository.get("path_to_book", "").strip("/"), f"{chapter}.ipynb") if p)
    assert (ROOT / notebook).is_file()
    expected = {
        "Colab": f"{launch['colab_url'].rstrip('/')}/github/{org}/{repo}/blob/{branch}/{notebook}",
        "Binder": f"{launch['binderhub_url'].rstrip('/')}/v2/gh/{org}/{repo}/{branch}?urlpath=tree/{notebook}",
    }
    links = visit(f"{chapter}.html").page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    for service, url in expected.items():
        host = urlsplit(url).hostname
        found = [link for link in links if urlsplit(link).hostname == host]
        assert found == [url], f"{chapter}: the {service} link should be {url}, found {found}"


def test_widget_chapter_shows_the_static_figure(visit):
    """The explorer (a live ipywidgets.interact) has its output removed in the book; the cell after it draws the same
    thing for a few images as a PNG, which the page shows in the same section."""
    page = visit(WIDGET_CHAPTER).page
    found = page.evaluate("""(code) => {
        const cells = [...document.querySelectorAll('div.cell')];
        const source = c => (c.querySelector('.cell_input') || {textContent: ''}).textContent;
        const i = cells.findIndex(c => source(c).includes(code));
        if (i < 0) return null;
        const [explorer, next] = [cells[i], cells[i + 1]];
        const img = next && next.querySelector('.cell_output img');
        return {
            explorer_outputs: explorer.querySelectorAll('.cell_output').length,
            same_section: !!next && explorer.closest('section') === next.closest('section'),
            img: img && {src: img.currentSrc, width: img.naturalWidth, shown: img.getClientRects().length > 0},
            widget_state: !!document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]'),
            require: typeof window.require,
        };
    }""", EXPLORER_CODE)
    assert found, f"{WIDGET_CHAPTER}: no code cell with {EXPLORER_CODE!r} (the explorer)"
    assert found["explorer_outputs"] == 0, "the explorer's output should be removed in the book (remove-output)"
    assert found["same_section"] and found["img"], "the cell after the explorer should show a figure, in its section"
    img = found["img"]
    assert img["src"].endswith(".png") and img["width"] > 0 and img["shown"], f"static figure not shown: {img}"
    if found["widget_state"]:  # myst-nb then loads the widget manager: it must come from the site
        assert found["require"] == "function", "the widget manager's require.js did not load"
