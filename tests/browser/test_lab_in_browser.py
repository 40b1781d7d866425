"""The chapters run in JupyterLab as a reader runs them (``bash scripts/lab.sh``), and the soft-targets explorer is
live there: its sliders appear and moving one redraws the figure.

A JupyterLab server from this environment starts on a free port of 127.0.0.1, with no browser, a random token and a
temporary root folder that holds a *copy* of the chapter (the tracked notebook is never opened), outside book mode
(``KDTUTOR_BOOK`` unset, as lab.sh does) and with its own temporary Jupyter config, data, runtime, settings and
workspace folders. Headless Chromium, allowed to reach 127.0.0.1 only, opens the copy, runs every cell (Run > Run
All Cells), waits for the kernel, then checks the explorer: its sliders are there, and pressing the right arrow on the
temperature slider changes the drawn figure and the printed probabilities (softer at a higher temperature). A
screenshot goes to _build/browser/lab.png. The server and its kernel are stopped whatever happens.

Run by the test command (``bash scripts/test.sh``) in its own stage after the book's browser test (``lab_test`` in
scripts/common.sh); Playwright drives Debian's Chromium (no ``playwright install``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kdtutor.data import locate_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]
CHAPTER = ROOT / "book" / "soft-targets.ipynb"
EXPLORER_CODE = "widgets.interact("
SHOT = ROOT / "_build" / "browser" / "lab.png"
CHROMIUM = os.environ.get("KDTUTOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The reader's view without what would change between runs or machines: every cell in the DOM (no windowing, so
# the test can read every prompt), no news or update checks (they would ask other hosts).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}
START_TIMEOUT, RUN_TIMEOUT, REACT_TIMEOUT = 60, 60, 20  # seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in a temporary folder; ``api(path)`` asks its REST API (token included)."""

    def __init__(self, tmp: Path):
        self.tmp, self.port, self.token = tmp, free_port(), secrets.token_hex(16)
        self.root = tmp / "notebooks"
        self.root.mkdir()
        shutil.copyfile(CHAPTER, self.root / CHAPTER.name)
        self.runtime = tmp / "runtime"
        settings = tmp / "lab-settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        folder, _ = locate_fashion_mnist()
        assert folder is not None, "Fashion-MNIST is missing: the test command installs it (ensure_fashion_mnist)"
        env = {k: v for k, v in os.environ.items() if k not in ("KDTUTOR_BOOK", "MPLBACKEND")}  # a reader's kernel
        env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
                   JUPYTER_RUNTIME_DIR=str(self.runtime),
                   JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
                   KDTUTOR_DATA=str(folder), JUPYTER_PREFER_ENV_PATH="1")  # python3 = this environment's kernel
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--IdentityProvider.token={self.token}",
               "--ServerApp.ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
               f"--ServerApp.root_dir={self.root}", "--LabApp.news_url="]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = tmp / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(cmd, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_up(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"JupyterLab exited ({self.process.returncode}):\n{self.log_tail()}"
            try:
                urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        pytest.fail(f"JupyterLab did not answer on {self.url} within {START_TIMEOUT} s:\n{self.log_tail()}")

    def kernel_states(self) -> list[str]:
        return [k["execution_state"] for k in self.api("kernels")]

    def stop(self):
        """Shut the server down with its kernels; terminate, then kill, whatever does not stop."""
        if self.process.poll() is None:
            try:
                self.api("shutdown", method="POST")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        # kernels run in sessions of their own; any left is found by its connection file in our runtime folder
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(self.runtime) in cmdline and int(proc.name) != os.getpid():
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except OSError:
                    pass


@pytest.fixture
def lab(tmp_path):
    server = Lab(tmp_path)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(lab):
    assert Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}: the test command installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def only_local(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_local)
            tab = context.new_page()
            tab.blocked = blocked
            tab.errors = []
            tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
            yield tab
        finally:
            browser.close()


# In the page: the code cells, their prompts, the explorer's cell and what its output shows.
CELLS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')].map(c => ({
    prompt: (c.querySelector('.jp-InputPrompt') || {textContent: ''}).textContent.trim(),
    errors: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(o => o.textContent.trim()).filter(t => /Error|Traceback/.test(t)).map(t => t.slice(-600)),
}))"""
EXPLORER = """(code) => {
    const cell = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')].find(c =>
        (c.querySelector('.jp-InputArea-editor') || {textContent: ''}).textContent.includes(code));
    if (!cell) return null;
    const out = cell.querySelector('.jp-Cell-outputArea') || cell;
    const sliders = [...out.querySelectorAll('.widget-slider')].map(s => ({
        label: (s.querySelector('.widget-label') || {textContent: ''}).textContent.trim(),
        readout: (s.querySelector('.widget-readout') || {textContent: ''}).textContent.trim(),
    }));
    const img = out.querySelector('.jupyter-widgets img, .widget-output img');
    return {
        widgets: out.querySelectorAll('.jupyter-widgets').length,
        sliders,
        img: img && img.src,
        text: [...out.querySelectorAll('.widget-output .jp-RenderedText')].map(t => t.textContent).join('\\n'),
    };
}"""


def test_explorer_is_live_in_jupyterlab(lab, page):
    SHOT.with_name("lab-failed.png").unlink(missing_ok=True)
    try:
        check_explorer(lab, page)
    except BaseException:  # what the page showed, for a person to look at (benign console errors are not checked)
        print(f"uncaught page errors: {page.errors}\nrequests to other hosts blocked: {page.blocked}")
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=SHOT.with_name("lab-failed.png"))
        except Exception as err:  # the browser may be gone
            print(f"no screenshot: {err}")
        raise


def wait_for_kernel(lab, page, what: str, timeout: float, ready=lambda: True):
    """Poll until the kernel is idle and ``ready()`` holds; Playwright's wait, not time.sleep, so that the page keeps
    being served (Playwright routes its requests only while it runs)."""
    deadline = time.monotonic() + timeout
    while not (lab.kernel_states() == ["idle"] and ready()):
        assert time.monotonic() < deadline, f"{what}: not done after {timeout} s\n{lab.log_tail()}"
        page.wait_for_timeout(250)


def probabilities(text: str) -> list[float]:
    """The numbers of the ``tensor([...])`` the explorer prints (the soft targets it drew)."""
    found = re.search(r"tensor\(\[(.*?)\]\)", text, re.S)
    return [float(x) for x in found.group(1).split(",")] if found else []


def check_explorer(lab, page):
    start = time.monotonic()
    page.goto(f"{lab.url}/lab/tree/{CHAPTER.name}?token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=START_TIMEOUT * 1000)

    # the kernel that opened with the notebook: this environment's python3, idle
    wait_for_kernel(lab, page, "starting the notebook's kernel", START_TIMEOUT, lambda: lab.api("sessions"))
    kernels = [s["kernel"]["name"] for s in lab.api("sessions")]
    assert kernels == ["python3"], f"the notebook opened with {kernels}, not python3"

    # Run > Run All Cells; the cells queue ([*]), then every code cell has run ([n]) and the kernel is idle again
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:visible", has=page.locator(".lm-Menu-itemLabel",
                                                            has_text=re.compile(r"^Run All Cells$"))).click()
    page.wait_for_function("() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]"
                           ".some(p => p.textContent.includes('*'))", timeout=10_000)
    cells = []

    def all_ran():
        cells[:] = page.evaluate(CELLS)
        return all(re.fullmatch(r"\[\d+\]:", c["prompt"]) for c in cells)

    wait_for_kernel(lab, page, "Run All Cells", RUN_TIMEOUT, all_ran)
    errors = [e for c in cells for e in c["errors"]]
    assert not errors, "a cell failed:\n" + "\n".join(errors)
    ran = time.monotonic() - start

    # the explorer: its two sliders, the figure and the probabilities its first view drew
    before = page.evaluate(EXPLORER, EXPLORER_CODE)
    assert before, f"no code cell with {EXPLORER_CODE!r} (the explorer) in {CHAPTER.name}"
    labels = [s["label"] for s in before["sliders"]]
    assert before["widgets"] and labels == ["image", "T"], f"the explorer's sliders are not shown: {before}"
    assert before["img"] and len(probabilities(before["text"])) == 10, f"the explorer drew nothing: {before}"

    # five steps right on the temperature slider (keyboard): the kernel redraws; wait until it has settled
    cell = page.locator(".jp-Notebook .jp-CodeCell", has_text=EXPLORER_CODE)
    handle = cell.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(r"^T$"))) \
        .locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    seen = []

    def settled():
        seen.append(page.evaluate(EXPLORER, EXPLORER_CODE))
        return len(seen) > 1 and seen[-1] == seen[-2] and seen[-1]["sliders"][1]["readout"] != before["sliders"][1][
            "readout"] and seen[-1]["img"] != before["img"]

    wait_for_kernel(lab, page, "redrawing after the temperature slider moved", REACT_TIMEOUT, settled)
    after = seen[-1]
    t0, t1 = (float(e["sliders"][1]["readout"]) for e in (before, after))
    p0, p1 = probabilities(before["text"]), probabilities(after["text"])
    assert t1 > t0, f"the temperature did not rise: {t0} -> {t1}"
    assert len(p1) == 10 and abs(sum(p1) - 1) < 1e-3, f"the redrawn soft targets are not probabilities: {p1}"
    assert max(p1) < max(p0), f"a higher temperature should soften the soft targets: {p0} -> {p1}"

    SHOT.parent.mkdir(parents=True, exist_ok=True)
    cell.scroll_into_view_if_needed()
    page.screenshot(path=SHOT)
    assert SHOT.stat().st_size > 10_000, f"{SHOT}: nearly empty"
    print(f"\nthe explorer is live in JupyterLab: T {t0:g} -> {t1:g}, top probability {max(p0):.4f} -> {max(p1):.4f}; "
          f"notebook ran in {ran:.1f} s, {time.monotonic() - start:.1f} s in the browser; "
          f"requests to other hosts blocked: {page.blocked or 'none'}")
