#!/usr/bin/env bash
# Set up (first time only takes a while) and open the dashboard on http://localhost:8501 with the digits dataset.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh requirements.txt
exec .venv/bin/python -m streamlit run app.py "$@"
