"""The JAX CUDA handler on a GPU, in a process of its own (test_jax_cuda.py starts it, once
with x64 off and once on): a crash of the handler loses only this process.

Exit status 0: every check passed; 1: failures (one line each on stderr); 77: no JAX GPU
or no CUDA handler here (the caller skips, with the reason on stdout).

    JAX_PLATFORMS=cuda,cpu python tests/frameworks/jax_gpu_checks.py
"""

import functools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import ssd_toolkit  # noqa: E402
from ssd_toolkit.frameworks import jax_arrays  # noqa: E402
from tolerances import STATS_RTOL, assert_close_to_reference  # noqa: E402

M = 200.0


def _gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


def _dtypes():
    return ["float32", "float16", "bfloat16"] + (["float64"] if jax.config.jax_enable_x64 else [])


def route_checks(gpu):
    """Eager (fast path), jit, jit(vmap), with and without stats, each dtype, on the GPU:
    close to the reference, the same bits on every route, results on the GPU."""
    failures = []
    rng = np.random.default_rng(0)
    t = np.array([100, 300, 50, 900, 200, 201, 0], dtype=np.int32)  # both branches, the boundary
    for dtype in _dtypes():
        for shape in ((7, 4, 9, 9), (7, 4096), (7, 3)):  # the vector path, more packs per thread, tiny
            host = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
            arrays = [jax.device_put(jnp.asarray(x, dtype), gpu) for x in host]
            exact = [np.asarray(a.astype(jnp.float32), np.float64) for a in arrays]
            E_ref, s_ref = ssd_toolkit.estimate(*exact, t, M, return_stats=True, backend="reference")
            tg = jax.device_put(t, gpu)
            where = f"{dtype} {list(shape)}"
            E, stats = ssd_toolkit.estimate(*arrays, tg, M, return_stats=True)
            if next(iter(E.devices())).platform != "gpu":
                failures.append(f"{where}: the result is on {E.devices()}, expected the GPU")
            try:
                wide = E if dtype == "float64" else E.astype(jnp.float32)
                assert_close_to_reference(np.asarray(wide), E_ref.reshape(shape[0], -1), dtype)
                np.testing.assert_allclose(np.asarray(stats["scale"], np.float64), s_ref["scale"], rtol=STATS_RTOL[dtype])
            except AssertionError as exc:
                failures.append(f"{where} eager: {str(exc).splitlines()[0]}")
            if np.asarray(stats["mode_seeking"]).tolist() != s_ref["mode_seeking"].tolist():
                failures.append(f"{where}: mode_seeking {np.asarray(stats['mode_seeking'])}, NumPy {s_ref['mode_seeking']}")
            eager = np.asarray(ssd_toolkit.estimate(*arrays, tg, M))
            if not np.array_equal(eager, np.asarray(E), equal_nan=True):
                failures.append(f"{where}: E without stats differs from E with stats")
            jitted = jax.jit(functools.partial(ssd_toolkit.estimate, M=M))(*arrays, tg)
            pair = [jnp.stack([a, a]) for a in arrays]
            vmapped = jax.jit(jax.vmap(lambda c, u, n: ssd_toolkit.estimate(c, u, n, tg, M)))(*pair)
            for name, got in (("jit", jitted), ("jit(vmap) [0]", vmapped[0]), ("jit(vmap) [1]", vmapped[1])):
                if not np.array_equal(np.asarray(got), eager, equal_nan=True):
                    failures.append(f"{where}: {name} differs from eager (one kernel on every route)")
    return failures


def nan_t_checks(gpu):
    """A non-finite JAX t gives that sample NaN results and stats on the GPU too."""
    rng = np.random.default_rng(1)
    arrays = [jax.device_put(jnp.asarray(rng.standard_normal((4, 300)), jnp.float32), gpu) for _ in range(3)]
    t = jax.device_put(jnp.asarray([100.0, np.nan, 300.0, np.inf], jnp.float32), gpu)
    E, stats = ssd_toolkit.estimate(*arrays, t, M, return_stats=True)
    E = np.asarray(E)
    failures = []
    if not (np.isnan(E[[1, 3]]).all() and np.isfinite(E[[0, 2]]).all()):
        failures.append("non-finite t: expected NaN rows 1 and 3 only")
    scale = np.asarray(stats["scale"])
    if not (np.isnan(scale[[1, 3]]).all() and np.isfinite(scale[[0, 2]]).all()):
        failures.append(f"non-finite t: stats scale {scale}, expected NaN at 1 and 3 only")
    return failures


def main():
    gpu = _gpu()
    if gpu is None:
        print("no JAX GPU device (a CUDA plugin of jax and a GPU are needed)")
        return 77
    if not jax_arrays.ffi_available("gpu"):
        print(f"the JAX CUDA handler is not available ({jax_arrays._ffi.get('cuda_reason') or 'not built'})")
        return 77
    import jax_cases  # noqa: PLC0415 - arrays on the default device: the GPU here

    with jax.default_device(gpu):
        failures = route_checks(gpu) + nan_t_checks(gpu) + jax_cases.exact_failures() + jax_cases.subnormal_failures()
    print("\n".join(failures), file=sys.stderr)
    print(f"{'FAIL' if failures else 'ok'}: JAX CUDA handler on {gpu.device_kind}, x64 {jax.config.jax_enable_x64}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
