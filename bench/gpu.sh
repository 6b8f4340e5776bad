#!/usr/bin/env bash
# The GPU benchmark, for a session that has a GPU machine: one command, done within 10 minutes.
# Uses .venv when it was carried along, else the machine's own python (it needs torch, torchvision, numpy and
# scikit-learn, nothing of the app), installing the requirements only where those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ ! -x "$py" ]; then
  py=python3
  "$py" -c "import torch, torchvision, sklearn" 2>/dev/null || "$py" -m pip install --quiet -r requirements.txt
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 timeout 540 "$py" -m bench.gpu "$@"
