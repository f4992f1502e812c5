"""The SASS gate: what nvcc made of the kernels, read from the built module's sm_90 code.

Needs a CUDA build of ssd_toolkit._C (nvcc is enough, no GPU) and cuobjdump + nvdisasm: on
PATH, under $CUDA_HOME/bin or /usr/local/cuda/bin, or from the PyPI packages
nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm (``nvidia/cu13/bin``; 13.2.86 of both, 6 MB,
read nvcc 13.0's cubins: ``pip install nvidia-cuda-cuobjdump==13.2.86
nvidia-cuda-nvdisasm==13.2.86`` makes this gate run in CI); skipped otherwise.

- No contracted multiply-add (csrc/build_config.json: nvcc --fmad=false, as -ffp-contract=off
  on the CPU and in the emulation, so GPU and emulation agree to the bit): write_kernel has no
  DFMA/FFMA at all, partial_kernel exactly the explicit fma() of its four sums.
- The relaxed_arrive variant's cluster arrive has no MEMBAR.ALL.GPU (the release one has).
- 128-bit vector loads in every vector instantiation; local memory (spills) only where it
  was measured when this gate was written (resident fp16/bf16 at 4 packs per thread: 2
  local accesses in fp16 scalar and bf16 scalar, 9 in bf16 vector).
"""

import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name):
    dirs = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    found = shutil.which(name) or next(
        (str(p) for d in dirs if d for p in [Path(d, "bin", name)] if p.is_file()), None
    )
    if found:
        return found
    try:
        import nvidia  # noqa: PLC0415 - the PyPI CUDA tool packages (namespace package)
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        for p in Path(base).glob(f"cu*/bin/{name}"):
            return str(p)
    return None


def _module_path():
    try:
        from ssd_toolkit.engine import extension as _extension  # noqa: PLC0415
        m = _extension.load()
    except Exception:  # noqa: BLE001 - no build: the gate has nothing to read
        return None
    return m.__file__ if getattr(m, "compiled_with_cuda", lambda: False)() else None


@pytest.fixture(scope="module")
def sass(tmp_path_factory):
    cuobjdump, nvdisasm = _tool("cuobjdump"), _tool("nvdisasm")
    if not cuobjdump or not nvdisasm:
        pytest.skip("cuobjdump/nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    module = _module_path()
    if module is None:
        pytest.skip("ssd_toolkit._C was built without CUDA")
    work = tmp_path_factory.mktemp("sass")
    env = {**os.environ, "PATH": f"{Path(nvdisasm).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([cuobjdump, "-xelf", "all", module], cwd=work, env=env, check=True, capture_output=True)
    cubins = sorted(work.glob("*sm_90.cubin"))
    if not cubins:
        pytest.skip("the module holds no sm_90 code (SSD_TOOLKIT_CUDA_ARCHS without 90)")
    text = subprocess.run([cuobjdump, "-sass", str(cubins[0])], env=env, check=True, capture_output=True,
                          text=True).stdout
    functions = {}
    for chunk in re.split(r"\n\s*Function : ", text)[1:]:
        name, body = chunk.split("\n", 1)
        functions[name.strip()] = collections.Counter(re.findall(r"\b([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)\b", body))
    assert functions, "no function in the sm_90 SASS"
    return functions


def _demangled_kind(mangled):
    """(kernel, dtype, vector) of a mangled kernel name, e.g. ('write_kernel', 'f', True)."""
    kernel = next(k for k in ("resident_kernel", "partial_kernel", "finalize_kernel", "write_kernel") if k in mangled)
    dtype = next((d for code, d in (("6__half", "half"), ("13__nv_bfloat16", "bf16"), ("If", "f"), ("Id", "d"))
                  if code in mangled), None)
    return kernel, dtype, "Lb1E" in mangled


def _count(counter, prefix):
    return sum(v for k, v in counter.items() if k == prefix or k.startswith(prefix + "."))


ELEMS = {"half": 8, "bf16": 8, "f": 4, "d": 2}  # per 16-byte pack


def test_no_contracted_multiply_add(sass):
    seen = collections.Counter()
    for name, ops in sass.items():
        kernel, dtype, _ = _demangled_kind(name)
        seen[kernel] += 1
        if kernel == "write_kernel":  # c - r n, scale (.): no fma() in the source
            assert _count(ops, "DFMA") == 0 and _count(ops, "FFMA") == 0, (name, ops)
        if kernel == "partial_kernel":  # 4 explicit fma() per element, 4 packs per pass
            assert _count(ops, "DFMA") == 4 * 4 * ELEMS[dtype], (name, _count(ops, "DFMA"))
    assert seen["write_kernel"] == 8 and seen["partial_kernel"] == 8 and seen["resident_kernel"] == 24, seen


def test_vector_kernels_load_128_bits_and_nothing_new_spills(sass):
    for name, ops in sass.items():
        kernel, dtype, vector = _demangled_kind(name)
        wide = sum(v for k, v in ops.items() if k.startswith("LDG") and k.endswith(".128"))
        if vector and kernel in ("resident_kernel", "partial_kernel", "write_kernel"):
            assert wide > 0, (name, "no 128-bit global load")
        local = _count(ops, "LDL") + _count(ops, "STL")
        known = kernel == "resident_kernel" and dtype in ("half", "bf16") and "Li4E" in name  # 2-9 accesses today
        assert local == 0 or known, (name, "local memory (spills)", local)


def test_the_relaxed_arrive_has_no_memory_barrier(sass):
    """Each resident kernel holds three cluster arrives (cluster.sync, the release "done
    reading" arrive and the relaxed_arrive variant's) and two MEMBAR.ALL.GPU: the relaxed
    one goes without the GPU-wide memory barrier it exists to save."""
    for name, ops in sass.items():
        if _demangled_kind(name)[0] == "resident_kernel":
            assert (_count(ops, "UCGABAR_ARV"), ops["MEMBAR.ALL.GPU"]) == (3, 2), (name, ops)
