#!/usr/bin/env bash
# Create .venv and install imgq into it, with the AI models' runtime.
# Usage: scripts/setup.sh [--dev]     (IMGQ_SETUP_AI=0 skips the AI runtime: torch and weights)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
if [ "${IMGQ_SETUP_AI:-1}" != 0 ]; then
  # torch first, pinned: see requirements/ai.txt for the CPU and CUDA builds.
  pip install -q -r requirements/ai.txt
  # These three declare dependencies imgq must not take (torchvision, old numpy/pillow,
  # old onnxruntime); imgq uses only their weight files or their pure-Python code.
  pip install -q --no-deps -r requirements/ai-nodeps.txt
fi
if [ "${1:-}" = "--dev" ]; then
  pip install -q -e ".[dev]"
else
  pip install -q -e .
fi
