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
# A run starts hundreds of Python processes (servers, their workers, the CLI): let them share
# imgq's compiled bytecode (__pycache__, ignored by git) even where the environment turns that off.
unset PYTHONDONTWRITEBYTECODE
# Types are part of the checks (mypy strict, configured in pyproject.toml). mypy runs beside
# the tests (much of a test's time is spent waiting on the servers it started); its verdict is
# printed after theirs and fails the run like a failed test.
mypy_log=$(mktemp)
trap 'rm -f "$mypy_log"' EXIT
.venv/bin/python -m mypy imgq >"$mypy_log" 2>&1 &
mypy_pid=$!
status=0
# One test process: tried in two (pytest-xdist, whole files each), the run was about a fifth
# shorter, but tests that time a fleet's batch against a kill or a second client's job, and
# the AI tile batcher's shared batches, failed when the other process took the cores.
.venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
echo "mypy imgq:"
cat "$mypy_log"
if [ "$mypy_status" != 0 ]; then
  [ "$status" = 0 ] && status=$mypy_status
fi
exit "$status"
