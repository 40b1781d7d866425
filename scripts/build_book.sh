#!/usr/bin/env bash
# README command 1: set up the environment and build the book to HTML in _build/html/ (open _build/html/index.html).
# The notebooks' stored outputs are used as they are (execute_notebooks: "off"); to regenerate them run
# bash scripts/execute.sh first. MathJax and the widget manager are fetched once from npm into _build/.assets and
# served from the built site, so the book reads offline; where they cannot be fetched it builds with CDN links.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
stage "set up $VENV" setup_venv book
stage "book assets (math and widgets, offline)" book_assets
stage "build the book" build_book
echo "The book is in _build/html/index.html"
