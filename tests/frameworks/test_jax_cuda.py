"""The JAX CUDA handler (csrc/jax/ssd_jax_ffi_cuda.cu): it compiles and links wherever nvcc
is (one architecture, to keep it short), and on a GPU passes jax_gpu_checks.py, run in a
process of its own (x64 off, then on) so that a crash there loses nothing else. Nothing here
touches a GPU in the pytest process: no device is listed or allocated at import."""

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("jax")

from ssd_toolkit.engine import jax_build  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SKIPPED = 77  # jax_gpu_checks.py: no JAX GPU or no CUDA handler here


@pytest.mark.skipif(shutil.which("nvcc") is None or os.environ.get("SSD_TOOLKIT_CUDA") == "0",
                    reason="nvcc not on PATH (or SSD_TOOLKIT_CUDA=0)")
def test_cuda_handler_compiles_and_exports_its_symbols(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_ARCHS", "90")
    out = tmp_path / "handler.so"
    cmd = jax_build.cuda_command(jax_build.source_root(), out, shutil.which("nvcc"))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    symbols = subprocess.run(["nm", "-D", str(out)], capture_output=True, text=True).stdout
    assert " T SsdEstimateCuda" in symbols and " T ssd_jax_ffi_abi_version" in symbols


@pytest.mark.gpu
@pytest.mark.skipif(not jax_build.CUDA_LIBRARY.exists(),
                    reason="the JAX CUDA handler is not built (python -m ssd_toolkit.engine.jax_build on a GPU machine)")
@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
def test_cuda_handler_on_the_gpu_in_its_own_process(x64):
    env = dict(os.environ, JAX_ENABLE_X64="1" if x64 else "0", JAX_PLATFORMS="cuda,cpu")
    result = subprocess.run([sys.executable, os.path.join(HERE, "jax_gpu_checks.py")], capture_output=True,
                            text=True, env=env, timeout=540)
    if result.returncode == SKIPPED:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
