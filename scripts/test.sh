#!/usr/bin/env bash
# The test command (README): sets up what the tests need, then runs them, printing each stage's time.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k losses  # extra arguments go to pytest
# Environment: KDTUTOR_VENV (default .venv) is the virtual environment it creates and reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

stage "set up $VENV" setup_venv test

stage "Fashion-MNIST" ensure_fashion_mnist

stage "unit tests" "$PY" -m pytest -q "$@"

echo "all stages passed"
