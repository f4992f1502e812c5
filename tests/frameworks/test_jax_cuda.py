"""The JAX CUDA handler (csrc/jax/ssd_jax_ffi_cuda.cu): it compiles and links wherever nvcc
is (one architecture, to keep it short), and on a GPU equals the CPU handler."""

import os
import shutil
import subprocess

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from ssd_toolkit.engine import jax_build  # noqa: E402
from ssd_toolkit.frameworks import jax_arrays  # noqa: E402
from conftest import M, T, reference  # noqa: E402
from tolerances import assert_close_to_reference  # noqa: E402


@pytest.mark.skipif(shutil.which("nvcc") is None or os.environ.get("SSD_TOOLKIT_CUDA") == "0",
                    reason="nvcc not on PATH (or SSD_TOOLKIT_CUDA=0)")
def test_cuda_handler_compiles_and_exports_its_symbol(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_ARCHS", "90")
    out = tmp_path / "handler.so"
    cmd = jax_build.cuda_command(jax_build.source_root(), out, shutil.which("nvcc"))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    symbols = subprocess.run(["nm", "-D", str(out)], capture_output=True, text=True).stdout
    assert " T SsdEstimateCuda" in symbols


def _gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu() is None or not jax_build.CUDA_LIBRARY.exists(),
                    reason="needs a JAX GPU and the CUDA handler (python -m ssd_toolkit.engine.jax_build)")
def test_gpu_arrays_take_the_cuda_kernel_and_match_the_reference(inputs):
    import ssd_toolkit  # noqa: PLC0415

    assert jax_arrays.ffi_available("gpu"), jax_arrays.ffi_reason()
    gpu = _gpu()
    arrays = [jax.device_put(x, gpu) for x in inputs]
    t = jax.device_put(T, gpu)
    E, stats = ssd_toolkit.estimate(*arrays, t, M, return_stats=True)
    assert next(iter(E.devices())).platform == "gpu"
    E_ref, stats_ref = reference(*inputs)
    assert_close_to_reference(np.asarray(E), E_ref, "float32")
    np.testing.assert_allclose(np.asarray(stats["scale"], np.float64), stats_ref["scale"], rtol=1e-5)
    jitted = jax.jit(jax.vmap(lambda c, u, n: ssd_toolkit.estimate(c, u, n, 10.0, M)))
    pair = [jax.numpy.stack([a, a]) for a in arrays]
    np.testing.assert_array_equal(np.asarray(jitted(*pair)[1]), np.asarray(ssd_toolkit.estimate(*arrays, 10.0, M)))
