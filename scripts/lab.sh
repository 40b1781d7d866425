#!/usr/bin/env bash
# Run the chapters locally: set up the environment like the other two commands (.venv/ with kdtutor and the book and
# lab extras, Fashion-MNIST), then start JupyterLab in book/ with the project's kernel (the venv's python3), where the
# widgets are live. Stop it with Ctrl-C in this terminal (twice, or once and answer y), or File > Shut Down.
#   bash scripts/lab.sh                           # opens JupyterLab in your browser
#   bash scripts/lab.sh --no-browser --port 8890  # extra arguments go to `jupyter lab`
# Environment: KDTUTOR_VENV (default .venv) is the virtual environment it creates and reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

# ensure_kernel: the python3 kernel Jupyter finds must run this environment's Python (where kdtutor is installed);
# if it runs another one, install this environment's own kernel spec into it (ipykernel install --sys-prefix).
kernel_python() {
    "$VENV/bin/jupyter" kernelspec list --json | "$PY" -c '
import json, subprocess, sys
spec = json.load(sys.stdin)["kernelspecs"].get("python3")
argv0 = spec and spec["spec"]["argv"][0]
if argv0 in ("python", "python3", "python%d.%d" % sys.version_info[:2]):  # Jupyter runs its own Python for these
    argv0 = sys.executable
try:
    print(subprocess.run([argv0, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                         timeout=60).stdout.strip() if argv0 else "")
except OSError:
    print("")'
}
ensure_kernel() {
    local want
    want=$("$PY" -c "import sys; print(sys.prefix)")
    if [ "$(kernel_python)" = "$want" ]; then
        return 0
    fi
    echo "the python3 kernel does not run $want: installing this environment's kernel (ipykernel install --sys-prefix)"
    "$PY" -m ipykernel install --sys-prefix >/dev/null
    if [ "$(kernel_python)" != "$want" ]; then
        echo "python3 still runs another Python: see $VENV/bin/jupyter kernelspec list"
        return 1
    fi
}

# Kernel specs of this environment come before the user's (~/.local/share/jupyter), as Jupyter does in a venv it owns.
export JUPYTER_PREFER_ENV_PATH=1
notebook_setup book,lab
stage "kernel (python3 from $VENV)" ensure_kernel
# A reader's notebooks are not the book build: glue echoes its values and training shows progress bars.
unset KDTUTOR_BOOK
as_root=()
if [ "$(id -u)" = 0 ]; then  # Jupyter refuses root unless told; root is usual in containers
    echo "running as root: starting JupyterLab with --allow-root"
    as_root=(--allow-root)
fi
echo "=== JupyterLab in book/ (Ctrl-C twice to stop)"
exec "$VENV/bin/jupyter" lab --ServerApp.root_dir="$PWD/book" ${as_root[@]+"${as_root[@]}"} "$@"
