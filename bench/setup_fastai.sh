#!/usr/bin/env bash
# fastai for bench/time_to_accuracy only: a separate .venv-fastai that sees the project's .venv (same torch,
# torchvision and EfficientNet-Lite0 packages, so both sides run the same builds) and adds fastai on top.
# The app and its tests never import fastai.  Usage: bench/setup_fastai.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
if [ ! -x .venv-fastai/bin/python ]; then
  python3 -m venv .venv-fastai
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$(.venv-fastai/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$own/studio_venv.pth"
.venv-fastai/bin/python -m pip install --quiet --disable-pip-version-check fastai==2.8.12
