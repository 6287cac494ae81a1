#!/usr/bin/env bash
# Set up (first time) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# The browser tests (tests/e2e) drive Debian's chromium; install it where we may.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
    || echo "scripts/test.sh: could not install chromium; the e2e tests will say so" >&2
fi
# Types are part of the checks (mypy strict, configured in pyproject.toml).
.venv/bin/python -m mypy imgq
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
