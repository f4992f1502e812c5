"""JAX: eager, jax.jit (M static), jax.vmap, jax.grad, x64 off and on, with the XLA FFI
extension (built here if missing or older than its sources, so CI tests the CPU handler)
and without it.

Every test here runs on JAX's CPU device, on any machine (on a GPU machine JAX defaults to
the GPU): the CPU handler and the CPU routes are what they check. The CUDA handler is
tested in its own processes by test_jax_cuda.py.
"""

import functools
import os
import pathlib
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

import jax_cases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module", autouse=True)
def extension():
    if jax_build.stale():
        jax_build.build(quiet=True)
    jax_arrays._ffi.update(tried=False, ok=False, reason=None)
    assert jax_arrays.ffi_available(), jax_arrays.ffi_reason()


@pytest.fixture(autouse=True)
def on_cpu():
    """New arrays and computations on JAX's CPU device, whatever the default platform."""
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def _in_fresh_process(code_or_path, x64, timeout=300):
    """Runs a script (a path) or code in a new CPU-only process; asserts it exits 0."""
    env = dict(os.environ, JAX_ENABLE_X64="1" if x64 else "0", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([HERE, os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    args = [code_or_path] if code_or_path.endswith(".py") else ["-c", code_or_path]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


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
        ssd_toolkit.estimate(c, u, n, [1.0, np.nan, 2.0, 3.0], M)  # host t: checked
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
    _in_fresh_process(code, x64=True)


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


# -- issue 34 A: t <= M decided as NumPy decides it ---------------------------------------------
def test_t_is_compared_with_M_exactly_x64_off():
    """t = M = 200.1 or 0.1, float32 and int32 t next to M, subnormal t: mode_seeking and the
    result agree with NumPy on every route (x64 off: M is not rounded to float32)."""
    assert jax_cases.exact_failures() == []


def test_t_is_compared_with_M_exactly_and_subnormals_kept_x64_on():
    _in_fresh_process(os.path.join(HERE, "jax_cases.py"), x64=True)


# -- issue 34 B: the FFI handler keeps subnormals (XLA runs with flush-to-zero) ---------------
def test_subnormal_inputs_keep_their_values():
    assert jax_cases.subnormal_failures() == []


# -- non-finite JAX t: NaN samples on every route (never read on the host) ------------------
def test_non_finite_jax_t_gives_nan_samples(inputs, route):
    c, u, n = (jnp.asarray(x) for x in inputs)
    t = jnp.asarray([100.0, np.nan, 300.0, -np.inf], jnp.float32)
    eager = functools.partial(ssd_toolkit.estimate, M=M, return_stats=True)
    E_ref, s_ref = reference(*inputs, t=np.array([100.0, 0.0, 300.0, 0.0]))
    calls = {"eager": eager, "jit": jax.jit(eager),
             "vmap": lambda *a: jax.tree_util.tree_map(lambda x: x[0], jax.vmap(eager)(*(x[None] for x in a)))}
    for name, call in calls.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the no-extension notice
            E, stats = call(c, u, n, t)
        E = np.asarray(E).reshape(4, -1)
        assert np.isnan(E[[1, 3]]).all() and np.isfinite(E[[0, 2]]).all(), name
        assert_close_to_reference(E[[0, 2]], E_ref[[0, 2]], "float32")
        assert np.asarray(stats["mode_seeking"]).tolist() == [True, False, False, False], name
        for key in ("r", "scale", "h_norm"):
            values = np.asarray(stats[key])
            assert np.isnan(values[[1, 3]]).all() and np.isfinite(values[[0, 2]]).all(), (name, key)


# -- issue 33 item 3: the eager fast path -------------------------------------------------------
def test_eager_fast_path_skips_validation_and_host_reads(inputs, monkeypatch):
    """Plain arrays take the fast path: no general validation, no host read of a JAX t; the
    same bits as the general path (backend='compiled' goes through it)."""
    c, u, n = (jnp.asarray(x) for x in inputs)
    cases = []
    for t in (jnp.asarray(T), jnp.asarray(T, jnp.float32), jnp.asarray(150.0), 150, 250.5):
        cases.append((t, ssd_toolkit.estimate(c, u, n, t, M, return_stats=True, backend="compiled")))

    def refuse(*args, **kwargs):
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(jax_arrays, "prepare", refuse)
    monkeypatch.setattr(jax_arrays, "host_timesteps", refuse)
    for t, (E_general, stats_general) in cases:
        E, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
        np.testing.assert_array_equal(np.asarray(E), np.asarray(E_general))
        for key, value in stats_general.items():
            np.testing.assert_array_equal(np.asarray(stats[key]), np.asarray(value))
        np.testing.assert_array_equal(np.asarray(ssd_toolkit.estimate(c, u, n, t, M)), np.asarray(E_general))


def _ffi_results(jaxpr):
    """The result shapes of every ffi_call in a jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "ffi_call":
            found.append([v.aval.shape for v in eqn.outvars])
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _ffi_results(inner)
    return found


def test_stats_are_computed_only_when_asked(inputs):
    c, u, n = (jnp.asarray(x) for x in inputs)
    without = jax.make_jaxpr(lambda c, u, n: ssd_toolkit.estimate(c, u, n, jnp.asarray(T), M))(c, u, n)
    with_stats = jax.make_jaxpr(lambda c, u, n: ssd_toolkit.estimate(c, u, n, jnp.asarray(T), M, return_stats=True))(c, u, n)
    assert _ffi_results(without.jaxpr) == [[c.shape, (0,)]]
    assert _ffi_results(with_stats.jaxpr) == [[c.shape, (6, 4)]]


# -- issue 32 item 3: the route follows the data's platform, not the default one ---------------
def test_traced_calls_use_the_handler_of_the_platform_they_run_on(inputs, monkeypatch):
    """A traced call on CPU data while JAX's default backend is a GPU (simulated): the CPU
    handler runs (same bits as eager), not the jax.numpy maths chosen for the default."""
    c, u, n = (jnp.asarray(x) for x in inputs)
    eager = ssd_toolkit.estimate(c, u, n, jnp.asarray(T), M)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    jitted = jax.jit(functools.partial(ssd_toolkit.estimate, M=M))(c, u, n, jnp.asarray(T))
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(eager))


def test_a_library_built_from_older_sources_is_refused():
    import ssd_toolkit._C as compiled_module  # noqa: PLC0415 - a library without the version symbol

    with pytest.raises(ValueError, match=r"built from older sources \(operands v1, expected v2\); rebuild it with"):
        jax_arrays._load(pathlib.Path(compiled_module.__file__), "SsdEstimateCpu")


def test_a_backend_first_made_inside_a_trace():
    """The first call of the process inside jax.jit: later traced and eager calls still work
    (the fast path's array type is a concrete array's, not a tracer's)."""
    code = (
        "import jax, jax.numpy as jnp, numpy as np, ssd_toolkit\n"
        "f = jax.jit(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, 100.0))\n"
        "for shape in ((2, 3), (2, 5)):\n"
        "    x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape); t = jnp.asarray([1.0, 500.0])\n"
        "    np.testing.assert_array_equal(np.asarray(f(x, 2 * x, x, t)), np.asarray(ssd_toolkit.estimate(x, 2 * x, x, t, 100.0)))\n"
    )
    _in_fresh_process(code, x64=False)


def test_host_t_errors_and_warnings_on_every_route(inputs):
    """t = 10**400 and t = None: the one-line errors of every library, eagerly, under jit and
    vmap (issue 34 H); a normalised host t against a step-count M warns at the caller."""
    c, u, n = (jnp.asarray(x) for x in inputs)
    calls = {"eager": lambda t: ssd_toolkit.estimate(c, u, n, t, M),
             "jit": lambda t: jax.jit(lambda c, u, n: ssd_toolkit.estimate(c, u, n, t, M))(c, u, n),
             "vmap": lambda t: jax.vmap(lambda c, u, n: ssd_toolkit.estimate(c, u, n, t, M))(c[None], u[None], n[None])}
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"^t: expected finite timesteps, got an integer beyond float64's range"):
            call(10**400)
        with pytest.raises(TypeError, match=r"^t: expected real timesteps \(ints or floats\), got None"):
            call(None)
    with pytest.warns(ssd_toolkit.engine.maths.TimestepConventionWarning, match="every timestep is in") as caught:
        ssd_toolkit.estimate(c, u, n, 0.25, M)
    assert caught[0].filename == __file__
    with pytest.warns(ssd_toolkit.engine.maths.TimestepConventionWarning, match="every timestep is in") as caught:
        ssd_toolkit.estimate(c, u, n, [0.25, 0.5, 0.125, 0.75], M)
    assert caught[0].filename == __file__
