#!/usr/bin/env bash
# Regenerate the notebooks' stored outputs: set up the environment, then execute them in place.
#   bash scripts/execute.sh                              # every notebook in _toc.yml
#   bash scripts/execute.sh book/getting-started.ipynb   # just these
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
notebook_setup book,test
stage "execute notebooks" "$PY" scripts/execute_notebooks.py "$@"
