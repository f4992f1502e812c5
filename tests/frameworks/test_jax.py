"""JAX: eager, jax.jit (M static), jax.vmap, jax.grad, x64 off and on, with the XLA FFI
extension (built here if missing, so CI tests the CPU handler) and without it."""

import functools
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

import ssd_toolkit  # noqa: E402
from ssd_toolkit.engine import jax_build  # noqa: E402
from ssd_toolkit.frameworks import jax_arrays  # noqa: E402
from conftest import M, T, reference  # noqa: E402
from tolerances import STATS_RTOL, assert_close_to_reference  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def extension():
    if not jax_build.LIBRARY.exists():
        jax_build.build(quiet=True)
    jax_arrays._ffi.update(tried=False, ok=False, reason=None)
    assert jax_arrays.ffi_available(), jax_arrays.ffi_reason()


@pytest.fixture(params=["ffi", "no-extension"])
def route(request, monkeypatch):
    if request.param == "no-extension":
        monkeypatch.setitem(jax_arrays._ffi, "ok", False)
        monkeypatch.setitem(jax_arrays._ffi, "reason", "disabled by the test")
        monkeypatch.setattr(ssd_toolkit.frameworks.framework_of(jnp.zeros(1)), "_warned_fallback", True)
    return request.param


def _same(a, b, route):
    """Bitwise with the extension (one kernel on every route); without it the traced
    jax.numpy maths (float32 accumulation) differs from the eager kernel by rounding."""
    if route == "ffi":
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _check(E, stats, inputs, t=T, dtype="float32"):
    E_ref, stats_ref = reference(*inputs, t)
    assert isinstance(E, jax.Array) and E.dtype == jnp.dtype(dtype) and E.shape == inputs[0].shape
    assert_close_to_reference(np.asarray(E), E_ref, dtype)
    if stats is not None:
        for name in ("r", "h_norm", "eps_tilde_norm", "scale"):
            np.testing.assert_allclose(np.asarray(stats[name], np.float64), stats_ref[name], rtol=1e-5, atol=1e-6)
        assert np.asarray(stats["mode_seeking"]).tolist() == (np.broadcast_to(t, (4,)) <= M).tolist()


def test_eager(inputs, route):
    c, u, n = (jnp.asarray(x) for x in inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the no-extension notice
        E, stats = ssd_toolkit.estimate(c, u, n, jnp.asarray(T), M, return_stats=True)
    _check(E, stats, inputs)
    assert stats["r"].dtype == jnp.float32  # x64 off: stats in float32


def test_jit_with_static_M(inputs, route):
    c, u, n = (jnp.asarray(x) for x in inputs)
    f = jax.jit(functools.partial(ssd_toolkit.estimate, M=M, return_stats=True))
    E, stats = f(c, u, n, jnp.asarray(T, jnp.float32))
    _check(E, stats, inputs)
    with pytest.raises(TypeError, match="M: under jax.jit expected a static Python number"):
        jax.jit(ssd_toolkit.estimate)(c, u, n, jnp.asarray(T), M)


def test_vmap_keeps_samples_apart(inputs, route):
    """Every leading axis indexes samples: a vmapped call equals a loop of calls."""
    c, u, n = (jnp.asarray(x.reshape(2, 2, 3, 5, 6)) for x in inputs)
    t = jnp.asarray(T.reshape(2, 2))

    def f(c, u, n, t):
        return ssd_toolkit.estimate(c, u, n, t, M)

    vmapped = jax.vmap(f)(c, u, n, t)
    loop = jnp.stack([f(c[i], u[i], n[i], t[i]) for i in range(2)])
    _same(vmapped, loop, route)
    _check(vmapped.reshape(inputs[0].shape), None, inputs)
    nested = jax.jit(jax.vmap(jax.vmap(lambda c, u, n: ssd_toolkit.estimate(c[None], u[None], n[None], 10.0, M)[0])))
    np.testing.assert_allclose(np.asarray(nested(c, u, n)), np.asarray(jax.vmap(f, (0, 0, 0, None))(c, u, n, 10.0)),
                               rtol=1e-6, atol=1e-6)


def test_grad_is_zero_and_warns(inputs, route):
    c, u, n = (jnp.asarray(x) for x in inputs)
    with pytest.warns(UserWarning, match="not differentiable"):
        g = jax.grad(lambda x: (x * ssd_toolkit.estimate(x, u, n, jnp.asarray(T), M)).sum())(c)
    _same(g, ssd_toolkit.estimate(c, u, n, jnp.asarray(T), M), route)


def test_scalar_and_host_timesteps(inputs):
    c, u, n = (jnp.asarray(x) for x in inputs)
    _check(ssd_toolkit.estimate(c, u, n, 150, M), None, inputs, t=np.full(4, 150))
    _check(ssd_toolkit.estimate(c, u, n, T.tolist(), M), None, inputs)
    with pytest.raises(ValueError, match=r"t: expected a scalar or a vector of length B=4, got shape \[3\]"):
        ssd_toolkit.estimate(c, u, n, jnp.asarray(T[:3]), M)
    with pytest.raises(ValueError, match=r"t: expected finite timesteps"):
        ssd_toolkit.estimate(c, u, n, jnp.asarray([1.0, np.nan, 2.0, 3.0]), M)
    with pytest.raises(ValueError, match="backend: 'torch' needs torch tensors, got jax arrays"):
        ssd_toolkit.estimate(c, u, n, 1, M, backend="torch")


def test_half_precision(inputs):
    for dtype in ("float16", "bfloat16"):
        arrays = [jnp.asarray(x).astype(dtype) for x in inputs]
        E = ssd_toolkit.estimate(*arrays, jnp.asarray(T), M)
        _check(E, None, [np.asarray(a.astype(jnp.float32)) for a in arrays], dtype=dtype)


def test_x64_on_gives_float64_stats():
    """In a fresh process with JAX_ENABLE_X64=1: float64 data and stats, int64 timesteps."""
    code = (
        "import jax.numpy as jnp, numpy as np, ssd_toolkit\n"
        "from ssd_toolkit.reference import estimate_reference\n"
        "rng = np.random.default_rng(1); x = [rng.standard_normal((3, 7)) for _ in range(3)]\n"
        "t = np.array([5, 500, 50])\n"
        "E, s = ssd_toolkit.estimate(*map(jnp.asarray, x), jnp.asarray(t), 100.0, return_stats=True)\n"
        "ref, sr = estimate_reference(*x, t, 100.0)\n"
        "assert E.dtype == jnp.float64 and s['scale'].dtype == jnp.float64, (E.dtype, s['scale'].dtype)\n"
        f"np.testing.assert_allclose(np.asarray(E), ref, rtol=1e-10, atol=1e-12)\n"
        f"np.testing.assert_allclose(np.asarray(s['scale']), sr['scale'], rtol={STATS_RTOL['float64']})\n"
    )
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_without_extension_eager_warns_once_and_names_the_build(inputs, monkeypatch):
    monkeypatch.setitem(jax_arrays._ffi, "ok", False)
    monkeypatch.setitem(jax_arrays._ffi, "reason", "disabled by the test")
    backend = ssd_toolkit.frameworks.framework_of(jnp.zeros(1))
    monkeypatch.setattr(backend, "_warned_fallback", False)
    c, u, n = (jnp.asarray(x) for x in inputs)
    with pytest.warns(RuntimeWarning, match=r"JAX extension is not available \(disabled by the test\).*jax_build"):
        ssd_toolkit.estimate(c, u, n, 1, M)
    with pytest.raises(RuntimeError, match="backend: 'compiled' for jax arrays needs the JAX extension's cpu handler"):
        jax.jit(functools.partial(ssd_toolkit.estimate, M=M, backend="compiled"))(c, u, n, 1)
