"""JAX routes against the NumPy call on the same data (issue 33 item 3: eager <= 1.5x NumPy).

At [8, 4, 64, 64] float32 on the CPU: the NumPy call (the compiled kernel) and, on JAX
arrays holding the same values, the eager call (fast path) with a Python-number t, a
float32 t vector and an int32 t vector, with and without stats, and ``jax.jit`` and
``jax.jit(jax.vmap)``; each JAX row is compared with the NumPy call on the same t (a scalar
t sends every sample down one branch, the vector half of them) and the same stats. Candidates are interleaved: each round times ``--repeats`` calls of
every candidate in turn (JAX results waited for), and the table gives the median over the
rounds, the ratio to the NumPy call (of the medians, and the median of the per-round ratios:
candidates timed next to each other share the load of that moment), and the load average
before and after.

    python bench/bench_jax.py [--rounds 15] [--repeats 100] [--name jax_cpu]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, mixed_timesteps, write_results  # noqa: E402

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import ssd_toolkit  # noqa: E402
from ssd_toolkit.frameworks import jax_arrays  # noqa: E402

SHAPE = (8, 4, 64, 64)
M = 500.0
COLUMNS = [
    ("candidate", "candidate", "{}"),
    ("baseline", "compared with", "{}"),
    ("us", "us per call (median of rounds)", "{:.1f}"),
    ("min_us", "fastest round", "{:.1f}"),
    ("x_numpy", "x that NumPy call", "{:.2f}"),
    ("x_numpy_rounds", "x that NumPy call, median of per-round ratios", "{:.2f}"),
]


def candidates():
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3)]
    t = np.rint(mixed_timesteps(SHAPE[0], M))
    arrays = [jnp.asarray(x) for x in host]
    t32, ti32 = jnp.asarray(t, jnp.float32), jnp.asarray(t, jnp.int32)
    ready = jax.block_until_ready
    est = ssd_toolkit.estimate
    jitted = jax.jit(functools.partial(est, M=M))
    pair = [jnp.stack([x, x]) for x in arrays]
    vmapped = jax.jit(jax.vmap(lambda c, u, n: est(c, u, n, t32, M)))
    # name: (call, the NumPy call it is compared with: same t values, same stats)
    return {
        "NumPy, float64 t vector": (lambda: est(*host, t, M), None),
        "NumPy, Python t": (lambda: est(*host, 300.0, M), None),
        "NumPy, float64 t vector, stats": (lambda: est(*host, t, M, return_stats=True), None),
        "JAX eager, Python t": (lambda: ready(est(*arrays, 300.0, M)), "NumPy, Python t"),
        "JAX eager, float32 t vector": (lambda: ready(est(*arrays, t32, M)), "NumPy, float64 t vector"),
        "JAX eager, int32 t vector": (lambda: ready(est(*arrays, ti32, M)), "NumPy, float64 t vector"),
        "JAX eager, float32 t vector, stats": (lambda: ready(est(*arrays, t32, M, return_stats=True)),
                                               "NumPy, float64 t vector, stats"),
        "jax.jit (M static), float32 t": (lambda: ready(jitted(*arrays, t32)), "NumPy, float64 t vector"),
        "jax.jit(jax.vmap) 2 x batch, per batch": (lambda: ready(vmapped(*pair)), "NumPy, float64 t vector"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median over them)")
    parser.add_argument("--repeats", type=int, default=100, help="calls per candidate per round")
    parser.add_argument("--name", default="jax_cpu", help="results/<name>.json and .md")
    args = parser.parse_args()
    machine = machine_info()
    machine["jax"] = jax.__version__
    calls = candidates()
    per_batch = {name: 2 if "2 x batch" in name else 1 for name in calls}
    for fn, _ in calls.values():  # compile and warm
        for _ in range(20):
            fn()
    times = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, (fn, _) in calls.items():
            start = time.perf_counter()
            for _ in range(args.repeats):
                fn()
            times[name].append((time.perf_counter() - start) / args.repeats / per_batch[name] * 1e6)
    rows = []
    for name, (_, baseline) in calls.items():
        base = times[baseline or name]
        rows.append({"candidate": name, "baseline": baseline or "-", "us": statistics.median(times[name]),
                     "min_us": min(times[name]), "x_numpy": statistics.median(times[name]) / statistics.median(base),
                     "x_numpy_rounds": statistics.median(a / b for a, b in zip(times[name], base))})
    for row in rows:
        print(row, flush=True)
    machine["loadavg_start"] = machine["loadavg_1_5_15"]
    machine["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    eager = max(r["x_numpy_rounds"] for r in rows if r["candidate"].startswith("JAX eager"))
    notes = (f"Route: {'the XLA FFI kernel' if jax_arrays.ffi_available() else 'no JAX extension'}; kernel threads: all "
             f"cores. Slowest eager call / the NumPy call on the same t (median of per-round ratios) = {eager:.2f}x "
             f"({'met' if eager <= 1.5 else 'missed'}: target <= 1.5x). The vmap row divides one call on a doubled "
             "batch by 2.")
    params = {"shape": list(SHAPE), "dtype": "float32", "M": M, "rounds": args.rounds, "repeats": args.repeats,
              "t": "rint(linspace(0, 999, B))"}
    print(write_results(args.name, rows, COLUMNS, params, machine, notes))


if __name__ == "__main__":
    main()
