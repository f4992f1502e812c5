#!/usr/bin/env bash
# Installs everything into ./.venv on a fresh machine: the pinned CPU torch first, then the
# package (compiling the C++ kernel, and the CUDA kernel when nvcc is found) with all extras.
#
# A stamp (.venv/.ssd_toolkit_install_stamp) records the hash of everything the install
# depends on: the Python version, this script, pyproject.toml, setup.py, the constraints and
# the csrc/ sources. When .venv matches it and the package still imports, the script returns
# in about a second; otherwise it installs again. SSD_TOOLKIT_FORCE_INSTALL=1 always installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.ssd_toolkit_install_stamp

install_inputs_hash() {
  {
    "$PY" --version 2>&1
    echo "SSD_TOOLKIT_CUDA=${SSD_TOOLKIT_CUDA:-1} ARCHS=${SSD_TOOLKIT_CUDA_ARCHS:-} nvcc=$(command -v nvcc || true)"
    { printf '%s\0' scripts/install.sh pyproject.toml setup.py .ci/constraints.txt
      find csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.hpp' \
        -o -name '*.json' \) -print0; } | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}

# The stamp holds "<hash> <compiled>"; compiled=yes means ssd_toolkit._C imported after the install.
current() {
  local hash compiled
  [ -x .venv/bin/python ] && [ -f "$STAMP" ] || return 1
  read -r hash compiled < "$STAMP" || return 1
  [ "$hash" = "$want" ] || return 1
  if [ "$compiled" = yes ]; then module=ssd_toolkit._C; else module=ssd_toolkit; fi
  .venv/bin/python -c "import $module" 2>/dev/null
}

want=$(install_inputs_hash)
if [ "${SSD_TOOLKIT_FORCE_INSTALL:-0}" != 1 ] && current; then
  echo "install.sh: .venv is current (stamp matches; SSD_TOOLKIT_FORCE_INSTALL=1 reinstalls)"
  exit 0
fi

rm -f "$STAMP"
if [ "${SSD_TOOLKIT_CUDA:-1}" != 0 ] && command -v nvcc >/dev/null; then
  echo "install.sh: nvcc found ($(command -v nvcc)): compiling the CUDA kernel too, which adds minutes;" \
       "SSD_TOOLKIT_CUDA=0 bash scripts/install.sh skips it"
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -c .ci/constraints.txt -e ".[all]"
# controlnet_aux's requirements (torchvision, timm) do not install against this torch; its
# OpenPose drawing module needs only numpy/cv2 and is loaded by file (see docs/avatar.md).
pip install -q -c .ci/constraints.txt --no-deps controlnet_aux==0.0.10
# cuobjdump + nvdisasm (6 MB) for the SASS gate (tests/kernels/test_sass.py) where the CUDA
# kernel is compiled: 13.2.86 reads nvcc 13.0's cubins.
if [ "${SSD_TOOLKIT_CUDA:-1}" != 0 ] && command -v nvcc >/dev/null; then
  pip install -q -c .ci/constraints.txt nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86 ||
    echo "install.sh: cuobjdump/nvdisasm not installed; the SASS gate will skip"
fi
# The JAX extension (csrc/jax) needs jaxlib's FFI headers, which pip's isolated build of
# the package does not have: built here, after JAX is installed (docs/api.md).
python -m ssd_toolkit.engine.jax_build >/dev/null ||
  echo "install.sh: the JAX extension did not build; JAX calls use the fallbacks in docs/api.md"
python - <<'PY'
import os, torch, ssd_toolkit
assert torch.__version__.startswith("2.13.0"), torch.__version__
b = ssd_toolkit.backends()
cpu = "C++ kernel compiled" if b["cpu"] else f"no C++ kernel ({b['reason']}; the NumPy reference runs instead)"
if not b["cuda"]:
    why = "SSD_TOOLKIT_CUDA=0" if os.environ.get("SSD_TOOLKIT_CUDA") == "0" else "no CUDA toolkit found"
    cuda = f"CUDA kernel not compiled ({why})"
elif b["cuda_device"]:
    cuda = "CUDA kernel compiled, GPU usable"
else:  # e.g. cudaErrorInsufficientDriver on a machine without a GPU driver: expected, not an error
    cuda = "CUDA kernel compiled; no usable GPU here (CPU runs are unaffected)"
jax = "JAX extension built" if b["jax_ffi"] else "no JAX extension"
print(f"install.sh: ssd_toolkit installed in .venv; {cpu}; {cuda}; {jax} (details: .venv/bin/ssd-toolkit backends)")
PY
compiled=$(python -c "import ssd_toolkit._C" 2>/dev/null && echo yes || echo no)
echo "$want $compiled" > "$STAMP"
