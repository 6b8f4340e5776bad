#!/usr/bin/env bash
# Create .venv (once), install the given requirements file into it, and the project itself in editable mode.
# Usage: scripts/setup.sh requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
# setuptools comes with the requirements (torch needs it), so the editable install builds without a download.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
# onnxruntime-web (pinned, checked) for the exported web page; the app runs without it.
.venv/bin/python -m core.ship.web vendor || true
