# Shared by scripts/test.sh and scripts/build_book.sh: the virtual environment, the data, stage timing.
VENV=${KDTUTOR_VENV:-.venv}
PY="$VENV/bin/python"
export PYTHONDONTWRITEBYTECODE=1
# The book's notebooks run quietly (kdtutor's book mode): no glue echo, no progress bars.
export KDTUTOR_BOOK=1

# stage NAME COMMAND...: run COMMAND, then print how long it took; stop everything if it fails.
stage() {
    local name=$1 start=$SECONDS
    shift
    echo "=== $name"
    if ! "$@"; then
        echo "=== $name FAILED after $((SECONDS - start)) s"
        exit 1
    fi
    echo "=== $name: $((SECONDS - start)) s"
}

# The lock: the exact versions the stored notebook outputs were made with (constraints.txt; `pip install -c`).
# The package itself keeps lower bounds only (pyproject.toml), so Colab keeps its own torch.
LOCK=constraints.txt
STAMP="$VENV/.kdtutor-installed"

# setup_venv EXTRAS: create the venv if needed and install kdtutor (editable) with the given extras (comma-separated),
# at the locked versions. Installs only when pyproject.toml, the lock, KDTUTOR_TORCH_INDEX or the extras asked for
# changed since the last install (a stamp in the venv), and says so when there is nothing to do. With
# KDTUTOR_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu for a laptop without a GPU) torch and torchvision come
# from that index first, at the locked versions.
setup_venv() {
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV" || { echo "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"; return 1; }
    fi
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        echo "$VENV has no pip (a venv made without python3-venv): installing Debian's python3-venv, then pip"
        apt_install python3-venv "pip is missing from $VENV" || true
        "$PY" -m ensurepip --upgrade >/dev/null 2>&1 || true
        if ! "$PY" -m pip --version >/dev/null 2>&1; then
            echo "$VENV still has no pip: install python3-venv (apt-get install python3-venv), remove $VENV, run again"
            return 1
        fi
    fi
    local want extras have=""
    want=$("$PY" -c 'import hashlib, sys
print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest()[:16])' pyproject.toml "$LOCK") ||
        return 1
    want="$want-${KDTUTOR_TORCH_INDEX:-pypi}"
    extras=$1
    [ -f "$STAMP" ] && have=$(sed -n 2p "$STAMP")
    if [ -f "$STAMP" ] && [ "$(sed -n 1p "$STAMP")" = "$want" ]; then
        local missing="" e
        for e in ${extras//,/ }; do
            [[ ",$have," == *",$e,"* ]] || missing="$missing $e"
        done
        if [ -z "$missing" ] && "$PY" -c "import kdtutor" 2>/dev/null; then
            echo "$VENV is up to date with pyproject.toml and $LOCK: nothing to install"
            "$PY" -c "import torch, kdtutor; print('kdtutor', kdtutor.__version__, 'with torch', torch.__version__)"
            return 0
        fi
    fi
    extras="$have,$extras"  # keep what is installed: the stamp lists every extra installed so far
    extras=$(echo "$extras" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)
    local log
    log=$(mktemp)
    rm -f "$STAMP"
    if [ -n "${KDTUTOR_TORCH_INDEX:-}" ]; then
        echo "torch and torchvision from $KDTUTOR_TORCH_INDEX (KDTUTOR_TORCH_INDEX), at the locked versions"
        # --no-deps: their dependencies come from the usual index in the next step, at the locked versions
        if ! "$PY" -m pip install -q --disable-pip-version-check -c "$LOCK" --index-url "$KDTUTOR_TORCH_INDEX" \
            --no-deps torch torchvision >"$log" 2>&1; then
            grep -v "^WARNING: Location" "$log"
            rm -f "$log"
            return 1
        fi
    fi
    echo "installing kdtutor[$extras] at the versions of $LOCK"
    if ! "$PY" -m pip install -q --disable-pip-version-check -c "$LOCK" -e ".[$extras]" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log"
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    printf '%s\n%s\n' "$want" "$extras" >"$STAMP"
    "$PY" -c "import torch, kdtutor; print('kdtutor', kdtutor.__version__, 'with torch', torch.__version__)"
}

# notebook_setup EXTRAS: what executing the notebooks needs: the venv with EXTRAS, Fashion-MNIST, Part V's corpus.
notebook_setup() {
    stage "set up $VENV" setup_venv "$1"
    stage "Fashion-MNIST" ensure_fashion_mnist
    stage "text corpus (Part V)" ensure_kjv
}

# ensure_fashion_mnist: find the data; if missing, install Debian's package where possible, else download.
ensure_fashion_mnist() {
    if "$PY" -m kdtutor data --no-download; then
        return 0
    fi
    if apt_install dataset-fashion-mnist "Fashion-MNIST is missing (offline-friendly)" &&
        "$PY" -m kdtutor data --no-download; then
        return 0
    fi
    echo "Trying to download Fashion-MNIST with torchvision"
    "$PY" -m kdtutor data
}

# ensure_kjv: Part V's corpus (the King James Version from Debian's bible-kjv, 2.6 MB); installed once where apt-get
# is allowed. Elsewhere the loader's message says how to bring the text (python -m kdtutor corpus).
ensure_kjv() {
    if "$PY" -m kdtutor corpus; then
        return 0
    fi
    apt_install bible-kjv "Part V's corpus is missing" || true
    "$PY" -m kdtutor corpus
}

# build_book: Jupyter Book 1.x to HTML, warnings as errors, nitpicky references.
build_book() {
    "$VENV/bin/jupyter-book" build . -W -n --keep-going --quiet
}

# nbval: re-execute every notebook and compare with its stored outputs (strict mode).
run_nbval() {
    "$PY" -m pytest --nbval book --nbval-sanitize-with tests/nbval-sanitize.cfg -p no:cacheprovider -q
}

# apt_install PACKAGE WHY: install a Debian package where this machine allows it (apt-get as root, or password-less
# sudo), saying what it installs and why; runs apt-get update only if the first try fails, and shows apt-get's own
# error when the install fails. Returns 1 where it cannot.
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if ! command -v apt-get >/dev/null || { [ -n "$sudo" ] && ! sudo -n true 2>/dev/null; }; then
        return 1
    fi
    echo "$2: installing Debian's $1 (apt-get install -y $1)"
    local log
    log=$(mktemp)
    if $sudo apt-get install -y -q "$1" >"$log" 2>&1 ||
        { $sudo apt-get update -q >"$log" 2>&1 && $sudo apt-get install -y -q "$1" >"$log" 2>&1; }; then
        rm -f "$log"
        return 0
    fi
    echo "apt-get could not install $1:"
    tail -n 15 "$log"
    rm -f "$log"
    return 1
}

# book_assets: MathJax and the widget manager for a book that reads offline, fetched once from npm into
# _build/.assets (scripts/book_assets.py; installs Debian's npm first where npm is missing and apt-get is allowed).
# Never fails: without them the book builds with the CDN links, and the script says so in one line.
book_assets() {
    if ! "$PY" scripts/book_assets.py --check && ! command -v npm >/dev/null; then
        apt_install npm "npm is missing and the book's math scripts come from npm" || true
    fi
    "$PY" scripts/book_assets.py
}

# ensure_chromium: Debian's Chromium for the browser test; installed once if missing (~480 MB; 21 s here).
CHROMIUM=${KDTUTOR_CHROMIUM:-/usr/bin/chromium}
ensure_chromium() {
    if [ -x "$CHROMIUM" ]; then
        return 0
    fi
    if ! apt_install chromium "the browser test needs Chromium" || [ ! -x "$CHROMIUM" ]; then
        echo "Chromium is missing at $CHROMIUM and could not be installed (apt-get install chromium)"
        return 1
    fi
}

# browser_ready: Chromium and Playwright for Python, for the browser tests below.
browser_ready() {
    ensure_chromium || return 1
    if ! "$PY" -c "import playwright" 2>/dev/null; then  # the test extra brings it; older environments may not have it
        echo "installing Playwright for Python (pip install playwright) for the browser test"
        "$PY" -m pip install -q --disable-pip-version-check "playwright>=1.45" || return 1
    fi
}

# browser_test: every page of the built book in headless Chromium with the network blocked (tests/browser; run
# build_book first). Playwright drives Debian's Chromium: no `playwright install`, which would download a browser.
browser_test() {
    browser_ready || return 1
    KDTUTOR_BROWSER_TEST=1 KDTUTOR_CHROMIUM="$CHROMIUM" "$PY" -m pytest -q -p no:cacheprovider tests/browser \
        --ignore=tests/browser/test_lab_in_browser.py
}

# lab_test: the chapters as `bash scripts/lab.sh` runs them: a JupyterLab server on 127.0.0.1 with a copy of the
# soft-targets chapter, run in headless Chromium; its widget explorer must react (tests/browser/test_lab_in_browser.py).
lab_test() {
    browser_ready || return 1
    if ! "$PY" -c "import jupyterlab" 2>/dev/null; then
        echo "JupyterLab is missing from $VENV: install the lab extra (pip install -e '.[lab]')"
        return 1
    fi
    KDTUTOR_BROWSER_TEST=1 KDTUTOR_CHROMIUM="$CHROMIUM" "$PY" -m pytest -q -p no:cacheprovider \
        tests/browser/test_lab_in_browser.py
}
