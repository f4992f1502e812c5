"""Framework routes benchmark: the same estimate through each framework's way of calling it.

At [8, 4, 64, 64] float32 on the CPU, in one run: the torch eager fast path against
``torch.compile(fullgraph=True)`` (steady state, the custom op's CPU kernel called
directly; target: within 1.5x of eager), ``torch.func.vmap`` over a leading axis of 2,
and JAX eager, ``jax.jit`` and ``jax.vmap`` (through the XLA FFI extension when built),
each as a median of timed calls with the ratio against the torch eager fast path.

    python bench/bench_frameworks.py [--repeats 200] [--name frameworks_cpu]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, median_time, mixed_timesteps, write_results  # noqa: E402

import ssd_toolkit  # noqa: E402

SHAPE = (8, 4, 64, 64)
M = 500.0
COLUMNS = [
    ("framework", "framework", "{}"),
    ("route", "route", "{}"),
    ("us", "us per call (median)", "{:.1f}"),
    ("x_eager", "x torch eager", "{:.2f}"),
]


def _timed(fn, repeats, block=lambda out: None):
    def call():
        block(fn())

    for _ in range(20):
        call()
    return median_time(lambda: [call() for _ in range(repeats)], warmup=1, repeats=7)["median_s"] / repeats * 1e6


def torch_rows(arrays, t, repeats):
    c, u, n = (torch.from_numpy(x) for x in arrays)
    tt = torch.from_numpy(t)
    rows = [("torch", "eager fast path", _timed(lambda: ssd_toolkit.estimate(c, u, n, tt, M), repeats))]
    compiled = torch.compile(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M), fullgraph=True)
    rows.append(("torch", "torch.compile(fullgraph=True)", _timed(lambda: compiled(c, u, n, tt), repeats)))
    pair = [torch.stack([x, x]) for x in (c, u, n)]
    vmapped = torch.func.vmap(lambda c, u, n: ssd_toolkit.estimate(c, u, n, tt, M))
    rows.append(("torch", "torch.func.vmap (2 x batch, per batch)", _timed(lambda: vmapped(*pair), repeats) / 2))
    return rows


def jax_rows(arrays, t, repeats):
    try:
        import jax  # noqa: PLC0415
    except ImportError:
        return []
    from ssd_toolkit.frameworks import jax_arrays  # noqa: PLC0415

    route = "FFI kernel" if jax_arrays.ffi_available() else f"no extension ({jax_arrays.ffi_reason()})"
    c, u, n = (jax.numpy.asarray(x) for x in arrays)
    tj = jax.numpy.asarray(t.astype(np.float32))
    ready = jax.block_until_ready
    jitted = jax.jit(functools.partial(ssd_toolkit.estimate, M=M))
    pair = [jax.numpy.stack([x, x]) for x in (c, u, n)]
    vmapped = jax.jit(jax.vmap(lambda c, u, n: ssd_toolkit.estimate(c, u, n, tj, M)))
    return [
        ("jax", f"eager, {route}", _timed(lambda: ssd_toolkit.estimate(c, u, n, tj, M), repeats, ready)),
        ("jax", f"jax.jit, {route}", _timed(lambda: jitted(c, u, n, tj), repeats, ready)),
        ("jax", f"jit(vmap) (2 x batch, per batch), {route}", _timed(lambda: vmapped(*pair), repeats, ready) / 2),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="calls per timing (7 timings, median)")
    parser.add_argument("--name", default="frameworks_cpu", help="results/<name>.json and .md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = machine_info()
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3)]
    t = np.rint(mixed_timesteps(SHAPE[0], M))
    raw = torch_rows(arrays, t, args.repeats) + jax_rows(arrays, t, args.repeats)
    eager = raw[0][2]
    rows = [{"framework": f, "route": r, "us": us, "x_eager": us / eager} for f, r, us in raw]
    for row in rows:
        print(row, flush=True)
    machine["loadavg_start"] = machine["loadavg_1_5_15"]
    machine["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    compiled = rows[1]["x_eager"]
    notes = (f"torch.compile steady state / eager fast path = {compiled:.2f}x "
             f"({'met' if compiled <= 1.5 else 'missed'}: target <= 1.5x). Kernel threads: all cores; "
             "torch threads: 1. The vmap rows divide the time of one call on a doubled batch by 2.")
    params = {"shape": list(SHAPE), "dtype": "float32", "M": M, "repeats": args.repeats,
              "t": "rint(linspace(0, 999, B))", "torch": torch.__version__}
    print(write_results(args.name, rows, COLUMNS, params, machine, notes))


if __name__ == "__main__":
    main()
