#!/usr/bin/env bash
# Set up (first time) and run imgq on the embedded defaults: http://127.0.0.1:8000
# Arguments go to `imgq serve`, e.g. scripts/serve.sh --port 8080
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/imgq serve "$@"
