#!/usr/bin/env bash
# Set up and run the whole test suite: the linter, then the engine, every page (AppTest) and the real-browser tests in
# Debian's Chromium. Arguments go to pytest: ./test.sh -m "not slow" is the day-to-day tier (under 3 minutes).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser test (needs root or sudo)…"
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check .
# Two workers, a test file each at a time (pytest-xdist): a lone pytest kept the two cores two-thirds busy (browser
# tests wait on servers, subprocesses start alone). -n 0: one process.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
