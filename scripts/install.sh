#!/usr/bin/env bash
# Installs everything into ./.venv on a fresh machine: the pinned CPU torch first, then the
# package (compiling the C++ kernel, and the CUDA kernel when nvcc is found) with all extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -c .ci/constraints.txt -e ".[all]"
# controlnet_aux's requirements (torchvision, timm) do not install against this torch; its
# OpenPose drawing module needs only numpy/cv2 and is loaded by file (see README).
pip install -q -c .ci/constraints.txt --no-deps controlnet_aux==0.0.10
python -c "import torch, ssd_toolkit; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('ssd_toolkit backends:', ssd_toolkit.backends())"
