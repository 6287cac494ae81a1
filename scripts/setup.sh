#!/usr/bin/env bash
# Create .venv and install imgq into it. Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "${1:-}" = "--dev" ]; then
  pip install -q -e ".[dev]"
else
  pip install -q -e .
fi
