#!/usr/bin/env bash
# README command 1: set up the environment and build the book to HTML in _build/html/ (open _build/html/index.html).
# The notebooks' stored outputs are used as they are (execute_notebooks: "off"); to regenerate them run
# bash scripts/execute.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
stage "set up $VENV" setup_venv book
stage "build the book" build_book
echo "The book is in _build/html/index.html"
