# Shared by scripts/test.sh and scripts/build_book.sh: the virtual environment, the data, stage timing.
VENV=${KDTUTOR_VENV:-.venv}
PY="$VENV/bin/python"
export PYTHONDONTWRITEBYTECODE=1

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

# setup_venv EXTRA: create the venv if needed and install kdtutor (editable) with the given extra.
setup_venv() {
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    local log
    log=$(mktemp)
    if ! "$PY" -m pip install -q --disable-pip-version-check -e ".[$1]" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log"
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    "$PY" -c "import torch, kdtutor; print('kdtutor', kdtutor.__version__, 'with torch', torch.__version__)"
}

# ensure_fashion_mnist: find the data; if missing, install Debian's package where possible, else download.
ensure_fashion_mnist() {
    if "$PY" -m kdtutor data --no-download; then
        return 0
    fi
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        echo "Fashion-MNIST is missing: installing Debian's package dataset-fashion-mnist (apt-get, offline-friendly)"
        $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
            { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; } ||
            echo "apt-get could not install dataset-fashion-mnist"
        if "$PY" -m kdtutor data --no-download; then
            return 0
        fi
    fi
    echo "Trying to download Fashion-MNIST with torchvision"
    "$PY" -m kdtutor data
}

# build_book: Jupyter Book 1.x to HTML, warnings as errors, nitpicky references.
build_book() {
    "$VENV/bin/jupyter-book" build . -W -n --keep-going --quiet
}

# nbval: re-execute every notebook and compare with its stored outputs (strict mode).
run_nbval() {
    "$PY" -m pytest --nbval book --nbval-sanitize-with tests/nbval-sanitize.cfg -p no:cacheprovider -q
}
