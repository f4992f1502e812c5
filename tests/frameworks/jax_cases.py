"""Edge cases of the JAX routes, checked against NumPy in this process (x64 as JAX has it):
test_jax.py runs them in-process (x64 off) and in a fresh process with JAX_ENABLE_X64=1
(``python tests/frameworks/jax_cases.py``, exit status 1 with the failures on stderr).

- ``exact_failures``: ``t <= M`` decided as NumPy decides it, on the boundary, for each
  route (eager, jit, vmap) and each kind of t (issue 34 A);
- ``subnormal_failures``: tiny and subnormal inputs keep their values through the FFI
  handler (XLA runs with flush-to-zero; issue 34 B).
"""

import functools
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import ssd_toolkit
from ssd_toolkit.engine.maths import TimestepConventionWarning

B = 3


def routes(M):
    """estimate with stats as each JAX route runs it: eager, jax.jit (M static), jax.vmap."""
    eager = functools.partial(ssd_toolkit.estimate, M=M, return_stats=True)

    def vmapped(c, u, n, t):
        out = jax.vmap(eager, in_axes=(0, 0, 0, None))(c[None], u[None], n[None], t)
        return jax.tree_util.tree_map(lambda a: a[0], out)

    return {"eager": eager, "jit": jax.jit(eager), "vmap": vmapped}


def exact_cases():
    """(t as JAX holds it, M): each on or next to the boundary, where rounding M to t's
    dtype, or reading a subnormal t as zero, flips the branch."""
    f32 = np.float32
    cases = [
        (f32(200.1), 200.1),  # float32(200.1) > 200.1: h
        (f32(200.1), float(f32(200.1))),  # equal: mode-seeking
        (f32(0.1), 0.1),  # float32(0.1) > 0.1: h
        (f32(0.1), float(np.nextafter(float(f32(0.1)), 0.0))),  # M one float64 below t: h
        (f32(1e-45), 0.0),  # a subnormal t above M = 0: h
        (f32(-1e-45), -0.0),  # below: mode-seeking
        (f32(3e38), 1e300),  # M beyond float32's range: mode-seeking
        (f32(-3e38), -1e300),  # h
        (np.int32(16777217), 16777216.5),  # 2**24 + 1 > M (float32 would round t to 2**24): h
        (np.int32(16777216), 16777216.5),  # mode-seeking
        (np.int32(2**31 - 1), 2147483646.5),  # h
        (np.float16(0.1), 0.1),  # float16(0.1) < 0.1: mode-seeking
        (np.float16(65504), 65503.99),  # h
    ]
    if jax.config.jax_enable_x64:
        cases += [
            (np.float64(0.1), 0.1),  # mode-seeking
            (np.float64(5e-324), 0.0),  # the smallest subnormal above 0: h
            (np.int64(2**53 + 1), float(2**53)),  # float64(t) == 2**53 (NumPy's rounding): mode-seeking
            (np.int64(2**53 + 3), float(2**53 + 2)),  # float64(t) == 2**53 + 4: h
        ]
    return cases


def _reference(x, t, M):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TimestepConventionWarning)  # negative t here on purpose
        return ssd_toolkit.estimate(*x, np.full(B, t), M, return_stats=True, backend="reference")


def exact_failures():
    """One line per case and route whose mode_seeking or E differs from NumPy's."""
    rng = np.random.default_rng(3)
    x = [rng.standard_normal((B, 7)).astype(np.float32) for _ in range(3)]
    arrays = [jnp.asarray(a) for a in x]
    failures = []
    for t, M in exact_cases():
        E_ref, s_ref = _reference(x, t, M)
        calls = routes(M)
        vector, scalar = jnp.full((B,), t, dtype=t.dtype), jnp.asarray(t)
        for name, kind, tj in (("eager", "vector", vector), ("eager", "scalar", scalar), ("jit", "vector", vector),
                               ("vmap", "scalar", scalar)):  # (each jit and vmap call compiles: a few)
            E, stats = calls[name](*arrays, tj)
            got = np.asarray(stats["mode_seeking"]).tolist()
            if got != s_ref["mode_seeking"].tolist():
                failures.append(f"t={t!r} ({t.dtype}, {kind}) M={M!r} {name}: mode_seeking {got}, NumPy {s_ref['mode_seeking'].tolist()}")
            elif not np.allclose(np.asarray(E, np.float64), E_ref, rtol=1e-5, atol=1e-6):
                failures.append(f"t={t!r} ({t.dtype}, {kind}) M={M!r} {name}: E differs from NumPy's")
    for t, M in ((200.1, 200.1), (0.1, 0.1), (16777217, 16777216.5)):  # host t: eager and vmap keep it exact
        E_ref, s_ref = _reference(x, t, M)
        for name in ("eager", "vmap"):
            E, stats = routes(M)[name](*arrays, t)
            got = np.asarray(stats["mode_seeking"]).tolist()
            if got != s_ref["mode_seeking"].tolist() or not np.allclose(np.asarray(E, np.float64), E_ref, rtol=1e-5, atol=1e-6):
                failures.append(f"t={t!r} (Python) M={M!r} {name}: mode_seeking {got}, NumPy {s_ref['mode_seeking'].tolist()}")
    return failures


def subnormal_failures():
    """One line per input whose result or stats differ from NumPy's (subnormals kept)."""
    rng = np.random.default_rng(4)
    dtypes = ["float32"] + (["float64"] if jax.config.jax_enable_x64 else [])
    scales = {"float32": (1e-19, 1e-38, 1e-41), "float64": (1e-150, 1e-160, 1e-310)}
    t = np.array([10, 500, 10])  # mode-seeking, h, mode-seeking
    failures = []
    for dtype in dtypes:
        for scale in scales[dtype]:
            x = [(rng.standard_normal((B, 64)) * scale).astype(dtype) for _ in range(3)]
            E_ref, s_ref = ssd_toolkit.estimate(*x, t, 100.0, return_stats=True, backend="reference")
            for name, estimate in routes(100.0).items():
                E, stats = estimate(*(jnp.asarray(a) for a in x), jnp.asarray(t))
                E = np.asarray(E, np.float64)
                # the compiled kernel rounds once at the end; subnormal results carry fewer bits
                tiny = np.finfo(dtype).tiny
                if not np.allclose(E, E_ref, rtol=1e-5, atol=4 * np.finfo(dtype).smallest_subnormal) or \
                        (np.abs(E_ref) > tiny).any() and not (E != 0).any():
                    failures.append(f"{dtype} scale {scale:g} {name}: E {E.ravel()[:3]}, NumPy {E_ref.ravel()[:3]}")
                if not np.allclose(np.asarray(stats["scale"], np.float64), s_ref["scale"], rtol=1e-5):
                    failures.append(f"{dtype} scale {scale:g} {name}: stats scale {np.asarray(stats['scale'])}, "
                                    f"NumPy {s_ref['scale']}")
    return failures


if __name__ == "__main__":
    found = exact_failures() + subnormal_failures()
    print("\n".join(found), file=sys.stderr)
    sys.exit(1 if found else 0)
