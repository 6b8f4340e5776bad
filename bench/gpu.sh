#!/usr/bin/env bash
# The GPU benchmark, for a session that has a GPU machine: one command, done within 10 minutes.
# Uses .venv when it was carried along, else the machine's own python with torch and the requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ ! -x "$py" ]; then
  py=python3
  "$py" -m pip install --quiet -r requirements.txt 2>/dev/null || true
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 540 "$py" -m bench.gpu "$@"
