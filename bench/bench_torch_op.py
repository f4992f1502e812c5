"""Eager per-call time of the C++ torch op ``torch.ops.ssd_toolkit.estimate`` (csrc/torch/) on the CPU.

    python bench/bench_torch_op.py     # writes bench/results/torch_op_local.json and .md (--name: another name)

Candidates, on the same float32 data, timed interleaved in one process (round by round; medians
and minima of per-call wall times, and the median CPU time of the calling thread), the 1-minute
load average recorded before and after each shape:

- ``op``: ``torch.ops.ssd_toolkit.estimate(c, u, n, None, t, M, False)`` (the C++ op: the
  no-gradient composite, the argument checks, then the CPU kernel of ``_C``);
- ``op_kernel``: ``torch.ops.ssd_toolkit.estimate_kernel.default`` (the kernel op alone, no
  composite: what the no-gradient rule costs is ``op`` minus this);
- ``pybind``: ``_C.estimate_cpu`` with the tensors' addresses and a fresh output tensor (the
  torch fast path's kernel call, without its Python glue);
- ``numpy``: ``ssd_toolkit.estimate`` on NumPy arrays holding the same data.

A second phase registers a Python autograd rule on ``estimate_kernel``
(``torch.library.register_autograd``, as a Python-side no-gradient rule would be) and times
``op_kernel`` again beside the ``pybind`` and ``numpy`` anchors: the per-call cost of a Python
autograd registration. The op library must be loaded before anything defines the
Python op of the same name, so this script imports no torch route of ssd_toolkit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import ssd_toolkit  # noqa: E402
from ssd_toolkit.engine import extension, torch_op_build  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, make_inputs, write_results  # noqa: E402

SHAPES = [(1, 4, 64, 64), (8, 4, 64, 64)]
M, T = 500.0, 100
ROUNDS, CALLS = 21, 200

COLUMNS = [
    ("phase", "phase", "{}"),
    ("shape", "shape", "{}"),
    ("candidate", "candidate", "{}"),
    ("median_us", "median us/call", "{:.2f}"),
    ("min_us", "min us/call", "{:.2f}"),
    ("x_numpy", "median / numpy", "{:.2f}"),
    ("cpu_us", "thread CPU us/call (median)", "{:.2f}"),
    ("cpu_x_numpy", "CPU / numpy", "{:.2f}"),
    ("load", "load (1 min, before/after)", "{}"),
]


def candidates(shape):
    core = extension.load()
    c, u, n = make_inputs(shape, "float32", "torch", seed=0)
    arrays = [x.numpy() for x in (c, u, n)]
    B, N = shape[0], int(np.prod(shape[1:]))
    t64 = np.full(B, float(T))
    op, kernel = torch.ops.ssd_toolkit.estimate, torch.ops.ssd_toolkit.estimate_kernel.default

    def pybind():
        out = torch.empty_like(c)
        core.estimate_cpu(c.data_ptr(), u.data_ptr(), n.data_ptr(), out.data_ptr(), t64, None, B, N, "float32", M)
        return out

    reference = ssd_toolkit.estimate(*arrays, T, M)
    for f in (lambda: op(c, u, n, None, T, M, False)[0], lambda: kernel(c, u, n, None, T, M, False)[0], pybind):
        np.testing.assert_array_equal(f().numpy(), reference)  # the same kernel, the same bits
    return {
        "op": lambda: op(c, u, n, None, T, M, False),
        "op_kernel": lambda: kernel(c, u, n, None, T, M, False),
        "pybind": pybind,
        "numpy": lambda: ssd_toolkit.estimate(*arrays, T, M),
    }


def interleaved(fns):
    """``{name: (wall, cpu)}``: per-call wall seconds and the calling thread's CPU seconds of
    each candidate, ``ROUNDS`` rounds of ``CALLS`` calls, round-robin."""
    times = {name: ([], []) for name in fns}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            for _ in range(20):
                fn()
            start, start_cpu = time.perf_counter(), time.thread_time()
            for _ in range(CALLS):
                fn()
            times[name][1].append((time.thread_time() - start_cpu) / CALLS)
            times[name][0].append((time.perf_counter() - start) / CALLS)
    return times


def rows_of(phase, shape, times, load):
    numpy_wall, numpy_cpu = (statistics.median(t) for t in times["numpy"])
    return [
        {"phase": phase, "shape": list(shape), "candidate": name, "median_us": statistics.median(wall) * 1e6,
         "min_us": min(wall) * 1e6, "x_numpy": statistics.median(wall) / numpy_wall,
         "cpu_us": statistics.median(cpu) * 1e6, "cpu_x_numpy": statistics.median(cpu) / numpy_cpu, "load": load}
        for name, (wall, cpu) in times.items()
    ]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="torch_op_local", help="results file stem in bench/results")
    args = parser.parse_args()
    if not torch_op_build.load():
        raise SystemExit(f"bench_torch_op: the op library is not available: {torch_op_build.reason()}")
    load_start = [round(x, 2) for x in os.getloadavg()]
    rows, phase2 = [], {}
    for shape in SHAPES:
        before = round(os.getloadavg()[0], 2)
        fns = candidates(shape)
        times = interleaved(fns)
        rows += rows_of("C++ no-gradient rule", shape, times, [before, round(os.getloadavg()[0], 2)])
        phase2[tuple(shape)] = {k: fns[k] for k in ("op_kernel", "pybind", "numpy")}

    torch.library.register_autograd(
        "ssd_toolkit::estimate_kernel", lambda ctx, gE, gs: (None,) * 7, setup_context=lambda ctx, i, o: None
    )
    for shape, fns in phase2.items():
        before = round(os.getloadavg()[0], 2)
        times = interleaved(fns)
        renamed = {("op_kernel + Python autograd" if k == "op_kernel" else k): v for k, v in times.items()}
        rows += rows_of("Python autograd rule", shape, renamed, [before, round(os.getloadavg()[0], 2)])

    machine = machine_info()
    machine["loadavg_start"] = load_start
    notes = (
        "One process; torch intra-op threads: " + str(torch.get_num_threads()) + ". Phase 2 registers a Python "
        "autograd rule on estimate_kernel and times it beside the same anchors (pybind, numpy). Each kernel call "
        "allocates its output, as a training step does. Thread CPU: the calling thread's CPU time per call "
        "(time.thread_time), which a loaded machine inflates less than wall time; it leaves out the kernel's "
        "worker threads, so it is the whole cost only where the call runs on one thread ([1, 4, 64, 64])."
    )
    params = {"M": M, "t": T, "rounds": ROUNDS, "calls_per_round": CALLS, "dtype": "float32"}
    print(write_results(args.name, rows, COLUMNS, params, machine, notes))


if __name__ == "__main__":
    main()
