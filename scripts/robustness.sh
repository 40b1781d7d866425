#!/usr/bin/env bash
# Re-execute notebooks under other machines' numerics and say which claims hold (scripts/robustness.py): set up the
# environment like the test command, then run the harness. Arguments go to the script.
#   bash scripts/robustness.sh book/kd-transfer.ipynb              # every variant, one notebook
#   bash scripts/robustness.sh --page                               # the whole book, recorded on the page
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
notebook_setup book,test
stage "robustness" "$PY" scripts/robustness.py "$@"
