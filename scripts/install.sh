#!/usr/bin/env bash
# Installs everything into ./.venv on a fresh machine: the pinned CPU torch first, then the
# package (compiling the C++ kernel, and the CUDA kernel where it can run) with all extras.
#
# The CUDA kernel is compiled only where a CUDA driver sees a GPU, and only for that GPU's
# architecture (SSD_TOOLKIT_CUDA_ARCHS="80;90" chooses others); without one it is skipped
# (one line says so). SSD_TOOLKIT_CUDA=1 compiles it anyway (for SSD_TOOLKIT_CUDA_ARCHS, else
# the GPU's, else csrc/build_config.json's list; CI does this), SSD_TOOLKIT_CUDA=0 never.
#
# A stamp (.venv/.ssd_toolkit_install_stamp) records the hash of everything the install
# depends on: the Python version, this script, pyproject.toml, setup.py, the constraints,
# the csrc/ sources and the CUDA decision (with its architectures). When .venv matches it and
# the package still imports, the script returns in about a second; otherwise it installs
# again. SSD_TOOLKIT_FORCE_INSTALL=1 always installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.ssd_toolkit_install_stamp

# The compute capabilities of the GPUs the CUDA driver sees ("86", "80;90"), asked of the
# driver itself (libcuda.so.1; no nvidia-smi needed). Exit 1: no driver; 2: no GPU.
gpu_archs() {
  "$PY" - <<'PY'
import ctypes, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError:
    sys.exit(1)
count = ctypes.c_int(0)
if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
    sys.exit(2)
archs = set()
for i in range(count.value):
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if cuda.cuDeviceGet(ctypes.byref(dev), i) == 0 and \
            cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) == 0 and \
            cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) == 0:  # compute capability major, minor
        archs.add(major.value * 10 + minor.value)
if not archs:
    sys.exit(2)
print(";".join(map(str, sorted(archs))))
PY
}

# One line: "build <archs>" (archs "default": csrc/build_config.json's list) or "skip <why>".
cuda_plan() {
  local archs status=0
  if [ "${SSD_TOOLKIT_CUDA:-}" = 0 ]; then
    echo "skip SSD_TOOLKIT_CUDA=0"
    return
  fi
  archs=$(gpu_archs 2>/dev/null) || status=$?
  if [ "${SSD_TOOLKIT_CUDA:-}" = 1 ]; then
    echo "build ${SSD_TOOLKIT_CUDA_ARCHS:-${archs:-default}}"
  elif [ "$status" = 1 ]; then
    echo "skip no CUDA driver here (libcuda.so.1 not found)"
  elif [ "$status" != 0 ]; then
    echo "skip no GPU visible to the CUDA driver"
  else
    echo "build ${SSD_TOOLKIT_CUDA_ARCHS:-$archs}"
  fi
}

install_inputs_hash() {
  {
    "$PY" --version 2>&1
    echo "cuda: $(cuda_plan) nvcc=$(command -v nvcc || true) CUDA_HOME=${CUDA_HOME:-}"
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
plan=$(cuda_plan)
if [ "${plan%% *}" = skip ]; then
  cuda_why=${plan#skip }
  export SSD_TOOLKIT_CUDA=0  # setup.py: no CUDA compile
  echo "install.sh: $cuda_why: not compiling the CUDA kernel (SSD_TOOLKIT_CUDA=1 compiles it anyway)"
else
  cuda_why="no CUDA toolkit found"
  archs=${plan#build }
  [ "$archs" = default ] || export SSD_TOOLKIT_CUDA_ARCHS="$archs"
  if command -v nvcc >/dev/null || [ -n "${CUDA_HOME:-}" ]; then
    echo "install.sh: compiling the CUDA kernel too, for architectures $archs, which adds minutes;" \
         "SSD_TOOLKIT_CUDA_ARCHS chooses others, SSD_TOOLKIT_CUDA=0 skips it"
  fi
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
if [ "${SSD_TOOLKIT_CUDA:-}" != 0 ] && command -v nvcc >/dev/null; then
  pip install -q -c .ci/constraints.txt nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86 ||
    echo "install.sh: cuobjdump/nvdisasm not installed; the SASS gate will skip"
fi
# The JAX extension (csrc/jax) needs jaxlib's FFI headers, which pip's isolated build of
# the package does not have: built here, after JAX is installed (docs/api.md).
python -m ssd_toolkit.engine.jax_build >/dev/null ||
  echo "install.sh: the JAX extension did not build; JAX calls use the fallbacks in docs/api.md"
# torch.ops.ssd_toolkit.estimate from C++ (csrc/torch/), against this torch's headers (docs/kernels.md).
python -m ssd_toolkit.engine.torch_op_build >/dev/null || echo "install.sh: the torch op library did not build"
CUDA_WHY=$cuda_why python - <<'PY'
import os, torch, ssd_toolkit
assert torch.__version__.startswith("2.13.0"), torch.__version__
b = ssd_toolkit.backends()
cpu = "C++ kernel compiled" if b["cpu"] else f"no C++ kernel ({b['reason']}; the NumPy reference runs instead)"
if not b["cuda"]:
    cuda = f"CUDA kernel not compiled ({os.environ['CUDA_WHY']})"
elif b["cuda_device"]:
    cuda = "CUDA kernel compiled, GPU usable"
else:  # e.g. cudaErrorInsufficientDriver on a machine without a GPU driver: expected, not an error
    cuda = "CUDA kernel compiled; no usable GPU here (CPU runs are unaffected)"
jax = "JAX extension built" if b["jax_ffi"] else "no JAX extension"
op = "C++ torch op built" if b["torch_op"] else "no C++ torch op (torch calls use the Python-defined op)"
print(f"install.sh: ssd_toolkit installed in .venv; {cpu}; {cuda}; {jax}; {op} (details: .venv/bin/ssd-toolkit backends)")
PY
compiled=$(python -c "import ssd_toolkit._C" 2>/dev/null && echo yes || echo no)
echo "$want $compiled" > "$STAMP"
