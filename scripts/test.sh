#!/usr/bin/env bash
# README command 2, the test command: sets up what the tests need, then runs them, printing each stage's time:
# unit tests, nbval over every notebook, the book build with warnings as errors, and every page of the built book
# in headless Chromium with the network blocked (Chromium is installed from Debian the first time), and a chapter run
# in JupyterLab (as scripts/lab.sh starts it) whose widget explorer must react in the browser.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k losses  # only unit tests, extra arguments go to pytest (nbval and build skipped)
# Environment: KDTUTOR_VENV (default .venv) is the virtual environment it creates and reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
total=$SECONDS

notebook_setup test,book,lab
stage "unit tests" "$PY" -m pytest -q "$@"
if [ $# -eq 0 ]; then
    stage "nbval (every notebook, strict)" run_nbval
    stage "book assets (math and widgets, offline)" book_assets
    stage "book build (-W -n)" build_book
    stage "book in a browser (offline, every page)" browser_test
    stage "chapters in JupyterLab (live widgets)" lab_test
fi
echo "all stages passed in $((SECONDS - total)) s"
