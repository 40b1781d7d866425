#!/usr/bin/env bash
# Move the lock forward: install kdtutor with every extra into a fresh, temporary venv at the newest versions the
# registry serves (pyproject.toml's bounds, no lock), and rewrite constraints.txt from it (its header kept). Then:
#   bash scripts/execute.sh     # re-execute every notebook with the new versions (records them in execution-times.md)
#   git diff book/              # compare the outputs: every glued number, verdict and hidden check
#   bash scripts/test.sh        # everything, nbval included, against the new stored outputs
# and commit constraints.txt, the notebooks and book/execution-times.md together. Until then the old lock stays in
# force: this script only writes constraints.txt.
#   bash scripts/update_lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
echo "installing kdtutor[test,book,lab] at the newest versions into a temporary venv"
if [ -n "${KDTUTOR_TORCH_INDEX:-}" ]; then  # as scripts/common.sh does: torch from that index first
    "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check --index-url "$KDTUTOR_TORCH_INDEX" \
        torch torchvision
fi
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,book,lab]"
{
    sed -n '/^#/p' constraints.txt
    # without local labels (torch's +cpu or +cu130): the lock must hold on either index
    "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v "^kdtutor" | sed -E 's/\+[A-Za-z0-9.]+$//' 
} >"$tmp/constraints.txt"
mv "$tmp/constraints.txt" constraints.txt
git --no-pager diff --stat constraints.txt || true
echo "constraints.txt rewritten: now run bash scripts/execute.sh, compare (git diff book/), and commit together"
