"""Differential fuzz: ssd_toolkit.estimate on JAX arrays (eager, jax.jit, jax.vmap) against the
float64 NumPy reference on the same values, with x64 off and on, each in its own process.

Each example draws a shape, a dtype, a magnitude (down to subnormals, up to near the dtype's
range), special rows (eps_cond == eps_uncond, zero noise, collinear, zeros), a threshold M
and timesteps on or next to it (M itself, its neighbours in t's dtype, +-0.5, random), the
kind of t (Python int/float, JAX int/float of each width, scalar or vector), a route and
whether stats are asked. It checks that mode_seeking equals NumPy's ``float64(t) <= M``, that
E is within the tolerance policy (tests/tolerances.py) of the float64 reference and that the
stats match it. Failures are printed as JSON lines; the exit status is 1 if any.

    python scripts/fuzz_jax.py [--examples 3000] [--seed 0]      # per x64 setting
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (dtype, smallest and largest magnitude drawn): sums of squares stay within float64
MAGNITUDES = {"float16": (1e-7, 1e2), "bfloat16": (1e-40, 1e15), "float32": (1e-44, 1e15),
              "float64": (1e-320, 1e100)}
SHAPES = [(1, 2), (1, 7), (2, 3), (3, 5), (4, 3, 5), (5, 2, 3, 4), (2, 257), (3, 1024)]
STATS = ("r", "h_norm", "eps_tilde_norm", "eps_cond_norm", "noise_norm", "scale")


def _thresholds(rng):
    fixed = [0.0, 0.1, 0.5, 1.0, 200.1, 999.5, 16777216.5, 2147483646.5, 1e-45, 1e-300, -0.1, 3e38, 1e300,
             float(2**53), float(2**53 + 2)]
    return fixed + [float(x) for x in rng.uniform(-10, 1000, 25)] + [float(x) for x in rng.integers(0, 1000, 10)]


def _arrays(rng, np, shape, dtype):
    lo, hi = MAGNITUDES[dtype]
    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    c, u, n = (rng.standard_normal(shape) * scale for _ in range(3))
    B = shape[0]
    for b in range(B):  # special rows
        kind = rng.integers(0, 8)
        if kind == 0:
            u[b] = c[b]  # h = 0
        elif kind == 1:
            n[b] = 0.0
        elif kind == 2:
            n[b] = c[b] * 2.0  # collinear: eps_tilde = 0
        elif kind == 3:
            c[b] = u[b] = n[b] = 0.0
    return c, u, n


def _timesteps(rng, np, jnp, M, B, x64):
    """(t as passed, t as float64 host values JAX holds, description)."""
    kinds = ["py_float", "py_int", "float32", "int32", "float16"] + (["float64", "int64"] if x64 else [])
    kind = kinds[rng.integers(0, len(kinds))]
    vector = B > 1 and rng.random() < 0.6
    count = B if vector else 1
    if kind.startswith("py"):
        base = np.array([M, np.nextafter(M, np.inf), np.nextafter(M, -np.inf), M + 0.5, M - 0.5,
                         rng.uniform(-10, 1100)])
        values = base[rng.integers(0, len(base), count)]
        values = np.rint(values) if kind == "py_int" else values
        limit = 2.0**62 if x64 else 2.0**31 - 1  # (a jit argument: int32 with x64 off)
        values = np.clip(values, -limit, limit)
        py = [int(v) if kind == "py_int" else float(v) for v in values]
        t = py if vector else py[0]
        return t, np.asarray(py, dtype=np.float64), kind
    dtype = jnp.dtype(kind)
    if kind.startswith("float"):
        m = np.asarray(M, np.float64).astype(dtype)
        inf = np.asarray(np.inf, dtype)
        with np.errstate(over="ignore"):
            base = np.array([m, np.nextafter(m, inf) if kind != "float16" else m, np.nextafter(m, -inf) if kind != "float16" else m,
                             np.asarray(M + 0.5, np.float64).astype(dtype), np.asarray(rng.uniform(-10, 1100), np.float64).astype(dtype)],
                            dtype=dtype)
        if kind == "float16":  # numpy's nextafter has no float16 neighbours here: step the bits
            bits = base.view(np.uint16).astype(np.int64)
            base = np.concatenate([base, (bits[:1] + 1).astype(np.uint16).view(np.float16), (bits[:1] - 1).astype(np.uint16).view(np.float16)])
        values = base[rng.integers(0, len(base), count)]
        values = values[np.isfinite(values.astype(np.float64))] if np.isfinite(values.astype(np.float64)).any() else np.zeros(count, dtype)
        values = np.resize(values, count).astype(dtype)
    else:
        info = np.iinfo(kind)
        f = np.clip(np.floor(M), info.min, info.max) if np.isfinite(M) else 0
        base = np.array([f, f + 1, f - 1, rng.integers(-5, 1100)], dtype=np.float64)
        values = np.clip(base[rng.integers(0, len(base), count)], info.min, info.max).astype(kind)
    t = jnp.asarray(values if vector else values[0], dtype=dtype)
    return t, np.asarray(values, dtype=np.float64), kind


def run_examples(count, seed):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    sys.path.insert(0, str(ROOT / "tests"))
    import ssd_toolkit  # noqa: PLC0415
    from ssd_toolkit.engine.reference import estimate_reference  # noqa: PLC0415
    from tolerances import TOLERANCES  # noqa: PLC0415

    def check_E(E, ref, dtype):
        """The tolerance policy (tests/tolerances.py), plus half the dtype's smallest
        subnormal: a result below the normal range is rounded on the subnormal grid."""
        rtol, atol = TOLERANCES[dtype]
        E = np.asarray(E, dtype=np.float64).reshape(ref.shape)
        finite = np.isfinite(ref)
        assert np.array_equal(np.isfinite(E), finite), "E: non-finite pattern differs from the reference"
        rms = np.sqrt(np.mean(np.where(finite, ref, 0) ** 2, axis=1, keepdims=True)) if ref.size else ref
        grid = 0.5 * float(np.finfo(jnp.dtype(dtype)).smallest_subnormal)
        bound = rtol * np.abs(ref) + atol * rms + grid
        err = np.where(finite, np.abs(E - np.where(finite, ref, 0)), 0.0)
        if (err > bound).any():
            b, i = np.unravel_index(int(np.argmax(err - bound)), E.shape)
            raise AssertionError(f"E [{dtype}]: {int((err > bound).sum())} elements out of tolerance; worst at "
                                 f"sample {b} elem {i}: got {E[b, i]!r}, reference {ref[b, i]!r}")

    warnings.simplefilter("ignore")  # one-element samples, overflow in casts of the draws
    x64 = jax.config.jax_enable_x64
    rng = np.random.default_rng(seed + (1000 if x64 else 0))
    thresholds = _thresholds(rng)
    dtypes = ["float32", "float16", "bfloat16"] + (["float64"] if x64 else [])
    failures, done = [], 0
    for example in range(count):
        shape = SHAPES[rng.integers(0, len(SHAPES))]
        dtype = dtypes[rng.integers(0, len(dtypes))]
        M = thresholds[rng.integers(0, len(thresholds))]
        route = ["eager", "jit", "vmap"][rng.integers(0, 3)]
        with_stats = bool(rng.random() < 0.5)
        c, u, n = (jnp.asarray(x, dtype=dtype) for x in _arrays(rng, np, shape, dtype))
        t, t64, t_kind = _timesteps(rng, np, jnp, M, shape[0], x64)
        if route == "jit" and t_kind.startswith("py"):
            t = jnp.asarray(t)  # a jit argument becomes a JAX value: what JAX holds is the reference's t
            t64 = np.asarray(t, dtype=np.float64).reshape(-1)
        record = {"x64": x64, "example": example, "shape": shape, "dtype": dtype, "M": M, "t_kind": t_kind,
                  "t": t64.tolist(), "route": route, "stats": with_stats}

        def call(c, u, n, t):
            return ssd_toolkit.estimate(c, u, n, t, M, return_stats=with_stats)

        try:
            if route == "eager":
                out = call(c, u, n, t)
            elif route == "jit":
                out = jax.jit(call)(c, u, n, t)
            else:
                out = jax.vmap(call, in_axes=(0, 0, 0, None))(c[None], u[None], n[None], t)
                out = jax.tree_util.tree_map(lambda a: a[0], out)
            E, stats = out if with_stats else (out, None)
            B = shape[0]
            rows = [np.asarray(x, dtype=np.float64).reshape(B, -1) for x in (c, u, n)]
            E_ref, s_ref = estimate_reference(*rows, np.broadcast_to(t64, (B,)), M)
            assert E.shape == c.shape and E.dtype == c.dtype, f"E shape/dtype {E.shape} {E.dtype}"
            check_E(E, E_ref, dtype)
            if with_stats:
                got = np.asarray(stats["mode_seeking"]).tolist()
                assert got == s_ref["mode_seeking"].tolist(), f"mode_seeking {got}, NumPy {s_ref['mode_seeking'].tolist()}"
                wide = np.float64 if x64 else np.float32
                # norms: relative to the sample's largest norm (||eps_tilde||^2 = ||c||^2 - (c.n)^2/||n||^2
                # cancels: its rounding is ~1e-16 ||c||^2, i.e. ~1e-8 ||c|| after the square root)
                size = np.maximum.reduce([s_ref["eps_cond_norm"], s_ref["noise_norm"], s_ref["h_norm"]])
                for name in STATS:
                    value = np.asarray(stats[name], dtype=np.float64)
                    ref = s_ref[name].astype(wide).astype(np.float64)  # the reference as the stats dtype holds it
                    rtol = 1e-10 if x64 else 1e-6
                    atol = 4 * np.finfo(wide).smallest_subnormal + (1e-7 * size if name.endswith("norm") else 0.0)
                    ok = np.isclose(value, ref, rtol=rtol, atol=0.0) | (np.abs(value - ref) <= atol) | \
                        (np.isnan(value) & np.isnan(ref))
                    assert ok.all(), f"stats[{name}] {value.tolist()}, reference {ref.tolist()}"
        except Exception as exc:  # noqa: BLE001 - every failure is a record
            record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            failures.append(record)
            print(json.dumps(record), flush=True)
        done += 1
    print(json.dumps({"summary": True, "x64": x64, "examples": done, "failures": len(failures)}), flush=True)
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000, help="examples per x64 setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["0", "1"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        failures = run_examples(args.examples, args.seed)
        sys.exit(1 if failures else 0)
    start, total, failed, status = time.time(), 0, 0, 0
    for x64 in ("0", "1"):
        env = dict(os.environ, JAX_ENABLE_X64=x64, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        result = subprocess.run([sys.executable, __file__, "--child", x64, "--examples", str(args.examples),
                                 "--seed", str(args.seed)], env=env, capture_output=True, text=True)
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        summary = next((line for line in lines if line.get("summary")), None)
        for line in lines:
            if not line.get("summary"):
                print(json.dumps(line))
        if summary is None:
            print(f"x64={x64}: the child process ended without a summary (exit status {result.returncode}):\n"
                  f"{result.stderr[-3000:]}")
            status = 1
            continue
        total += summary["examples"]
        failed += summary["failures"]
        status |= result.returncode
    print(f"fuzz_jax: {total} examples (x64 off and on, eager/jit/vmap), {failed} failures, "
          f"{time.time() - start:.0f} s, load {[round(x, 2) for x in os.getloadavg()]}")
    sys.exit(status)


if __name__ == "__main__":
    main()
