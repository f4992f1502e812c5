"""CPU benchmark: the compiled kernel against this machine's own limit, and against NumPy and torch.

    python bench/bench_cpu.py            # writes bench/results/cpu_local.json and .md (--name cpu: the committed ones)

The limit is measured, not assumed: ``_C.cpu_limit_pass`` runs ``out = eps_cond ^ eps_uncond
^ noise`` (bytewise) over the kernel's very arrays, the kernel's 3 reads + 1 write with next
to no arithmetic, through the same thread pool, the same units and thread count and the
same store policy (csrc/ssd_cpu_limit.cpp). "% of limit" is the limit's time over the
kernel's: the share of the machine's reach the kernel achieves on the same bytes. The two
(and the API calls) are timed interleaved in one process, round by round, and their medians
compared; the 1-minute load average is recorded before and after every row.

Other columns: the public API ``ssd_toolkit.estimate(c, u, n, t_int64, M)`` (what a training
loop calls, the fast path), with stats, the plain vectorised NumPy SSD a user would write
(``plain_numpy_ssd``; the speed target is >= 8x at [8, 4, 64, 64] float32), the raw kernel
after 2 ms idle (worker threads asleep, as between training steps), the float64 NumPy
reference and PyTorch eager (float64 sums, the faster of 1 and all threads). A second table
gives the Python overhead of one NumPy call with the compiled binding replaced by a no-op.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

# torch's OpenMP workers otherwise spin after every op, taking a core from the kernel timed next.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import ssd_toolkit  # noqa: E402
from ssd_toolkit.engine import extension  # noqa: E402
from ssd_toolkit.engine.reference import estimate_reference  # noqa: E402
from ssd_toolkit.frameworks.torch.eager import estimate_torch  # noqa: E402

from common import machine_info, make_inputs, markdown_table, median_time, mixed_timesteps, write_results  # noqa: E402

SHAPES = [(1, 4, 64, 64), (8, 4, 64, 64), (64, 4, 64, 64), (8, 4, 128, 128)]
DTYPES = ["float32", "float16", "bfloat16", "float64"]
M = 500.0
SAMPLE_S = 200e-6  # each timed sample repeats a call for about this long

COLUMNS = [
    ("shape", "shape", "{}"),
    ("dtype", "dtype", "{}"),
    ("load", "load (1 min, before/after)", "{}"),
    ("kernel_us", "kernel us", "{:.1f}"),
    ("limit_us", "3R1W limit us", "{:.1f}"),
    ("pct_limit", "% of limit", "{:.0f}"),
    ("x_fp32_per_element", "time / fp32 time", "{:.2f}"),
    ("kernel_gbs", "kernel GB/s", "{:.1f}"),
    ("limit_gbs", "limit GB/s", "{:.1f}"),
    ("api_int_t_us", "API, int64 t us", "{:.1f}"),
    ("api_stats_us", "API + stats us", "{:.1f}"),
    ("plain_numpy_us", "plain NumPy us", "{:.1f}"),
    ("x_plain_numpy", "x plain NumPy", "{:.1f}"),
    ("kernel_isolated_us", "raw, isolated us", "{:.1f}"),
    ("numpy_ref_us", "NumPy ref us", "{:.0f}"),
    ("torch_us", "torch eager us", "{:.0f}"),
]


def plain_numpy_ssd(c, u, n, t, M):
    """SSD as a user writes it in vectorised NumPy: the inputs' dtype (float32 for float16
    inputs), per-sample sums, no degenerate-sample handling."""
    B = c.shape[0]
    c, u, n = (x.reshape(B, -1).astype(np.float32, copy=False) for x in (c, u, n))
    h = c - u
    r = np.einsum("ij,ij->i", c, n) / np.einsum("ij,ij->i", n, n)
    eps_tilde = c - r[:, None] * n
    scale = np.sqrt(np.einsum("ij,ij->i", h, h) / np.einsum("ij,ij->i", eps_tilde, eps_tilde))
    return np.where((t <= M)[:, None], scale[:, None] * eps_tilde, h).reshape(-1, *c.shape[1:])


def interleaved_medians(calls, rounds):
    """Median seconds per call of each of ``calls`` (name -> fn), timed round by round in turn
    (so load changes hit every candidate alike); a sample repeats a call for ~SAMPLE_S."""
    reps = {}
    for name, fn in calls.items():
        for _ in range(3):
            fn()  # warm: page faults, caches, worker threads
        start = time.perf_counter()
        fn()
        reps[name] = max(1, min(1000, round(SAMPLE_S / max(time.perf_counter() - start, 1e-7))))
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return {name: {"median_s": statistics.median(v), "min_s": min(v), "calls_per_sample": reps[name], "samples_s": v}
            for name, v in samples.items()}


def isolated_median(fn, repeats):
    """Median seconds of ``fn()`` each run after 2 ms idle (the kernel's workers asleep)."""
    times = []
    for _ in range(repeats):
        time.sleep(0.002)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def host_buffer(x):
    """The NumPy view of a torch tensor's memory (bfloat16 as its int16 bit patterns)."""
    return x.view(torch.int16).numpy() if x.dtype == torch.bfloat16 else x.numpy()


def bench_one(shape, dtype, threads, rounds):
    load_before = os.getloadavg()[0]
    B, N = shape[0], int(np.prod(shape[1:]))
    arrays = make_inputs(shape, dtype, seed=0, library="torch")  # torch: bfloat16 too
    c, u, n = (host_buffer(x).reshape(B, N) for x in arrays)
    t = mixed_timesteps(B, M)
    t_int = np.rint(t).astype(np.int64)
    module = extension.load()
    out = np.empty_like(c)
    numpy_inputs = [x.numpy().reshape(shape) for x in arrays] if dtype != "bfloat16" else None
    api_args = (*(numpy_inputs or arrays), t_int if numpy_inputs else torch.from_numpy(t_int), M)

    def kernel():
        module.estimate_cpu(c, u, n, out, t, None, B, N, dtype, M, threads)

    calls = {
        "kernel": kernel,
        "limit": lambda: module.cpu_limit_pass(c, u, n, out, B, N, dtype, threads),
        "api_int_t": lambda: ssd_toolkit.estimate(*api_args),
        "api_stats": lambda: ssd_toolkit.estimate(*api_args, return_stats=True),
    }
    timings = interleaved_medians(calls, rounds)
    # The NumPy and torch baselines apart: their libraries' threads may still spin after a call
    # and would slow whatever runs next on these 2 cores.
    float_rows = [x.float().numpy().reshape(B, N) if dtype == "bfloat16" else x.numpy().reshape(B, N) for x in arrays]
    slow = {"numpy_ref": lambda: estimate_reference(*float_rows, t, M)}
    if numpy_inputs is not None:
        slow["plain_numpy"] = lambda: plain_numpy_ssd(*numpy_inputs, t_int, M)
    for torch_threads in sorted({1, threads}):
        slow[f"torch_{torch_threads}t"] = lambda k=torch_threads: (
            torch.set_num_threads(k), estimate_torch(*(x.reshape(B, N) for x in arrays), torch.from_numpy(t), M))
    timings.update(interleaved_medians(slow, max(3, rounds // 4)))
    torch.set_num_threads(1)
    isolated = isolated_median(kernel, rounds)
    us = {k: v["median_s"] * 1e6 for k, v in timings.items()}
    torch_best = min((k for k in us if k.startswith("torch_")), key=us.get)
    moved = 4 * c.nbytes  # 3 arrays read, 1 written
    return {
        "shape": "x".join(map(str, shape)),
        "dtype": dtype,
        "load": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
        "kernel_us": us["kernel"],
        "limit_us": us["limit"],
        # per round, limit over kernel (adjacent in time, so a burst of load hits both): the median
        "pct_limit": 100 * statistics.median(
            a / b for a, b in zip(timings["limit"]["samples_s"], timings["kernel"]["samples_s"])),
        "kernel_gbs": moved / us["kernel"] / 1e3,
        "limit_gbs": moved / us["limit"] / 1e3,
        "api_int_t_us": us["api_int_t"],
        "api_stats_us": us["api_stats"],
        "plain_numpy_us": us.get("plain_numpy", float("nan")),
        "x_plain_numpy": us.get("plain_numpy", float("nan")) / us["api_int_t"],
        "kernel_isolated_us": isolated * 1e6,
        "numpy_ref_us": us["numpy_ref"],
        "torch_us": us[torch_best],
        "torch_threads": int(torch_best.split("_")[1][:-1]),
        "input_bytes": c.nbytes,
        "timings": timings,
    }


HOST_COLUMNS = [
    ("path", "path", "{}"),
    ("t", "t", "{}"),
    ("stats", "stats", "{}"),
    ("python_calls", "Python calls", "{}"),
    ("c_calls", "C calls", "{}"),
    ("us", "us per call", "{:.2f}"),
]


def count_calls(fn):
    """(Python-level calls, C-function calls) made by one ``fn()``, via ``sys.setprofile``."""
    counts = {"call": 0, "c_call": 0}

    def profile(frame, event, arg):
        if event in counts:
            counts[event] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return counts["call"] - 1, counts["c_call"] - 1  # minus the setprofile(None) bookkeeping


def host_overhead(repeats=2000):
    """Rows of HOST_COLUMNS at [8, 4, 64, 64] float32 NumPy, with the compiled binding a no-op."""
    c, u, n = make_inputs((8, 4, 64, 64), "float32")
    t_int = np.rint(mixed_timesteps(8, M)).astype(np.int64)
    cases = [
        ("NumPy fast path", "int64 [B]", t_int, {}),
        ("NumPy fast path", "int64 [B]", t_int, {"return_stats": True}),
        ("NumPy fast path", "Python int", 300, {}),
        ("general path (NumPy)", "list", t_int.tolist(), {}),
    ]
    saved = extension.cpu_kernel
    extension.cpu_kernel = lambda: (lambda *args: None)
    rows = []
    try:
        for path, t_name, t_value, kw in cases:
            call = lambda: ssd_toolkit.estimate(c, u, n, t_value, M, **kw)  # noqa: E731
            call()
            python_calls, c_calls = count_calls(call)
            timing = median_time(lambda: [call() for _ in range(repeats)], warmup=1, repeats=7)
            rows.append({"path": path, "t": t_name, "stats": "yes" if kw else "no", "python_calls": python_calls,
                         "c_calls": c_calls, "us": timing["min_s"] / repeats * 1e6})
            print(rows[-1], flush=True)
    finally:
        extension.cpu_kernel = saved
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds per shape and dtype (medians)")
    parser.add_argument("--threads", type=int, default=0, help="kernel and torch threads (0: all cores)")
    parser.add_argument("--name", default="cpu_local", help="results/<name>.json and .md (default cpu_local; "
                        "--name cpu replaces the committed results)")
    args = parser.parse_args()
    if not ssd_toolkit.backends()["cpu"]:
        raise SystemExit(f"compiled CPU kernel not built: {ssd_toolkit.backends()['reason']}")
    if not hasattr(extension.load(), "cpu_limit_pass"):
        raise SystemExit("compiled module: expected cpu_limit_pass, got a module without it; rebuild with "
                         "python setup.py build_ext --inplace")
    threads = args.threads if args.threads > 0 else os.cpu_count()
    machine = machine_info()
    machine["loadavg_start"] = machine["loadavg_1_5_15"]
    # One untimed reference run at the largest shape first: glibc then raises its mmap
    # threshold, so NumPy's float64 temporaries stop paying page faults at every size.
    warm = [x.reshape(SHAPES[-1][0], -1) for x in make_inputs(SHAPES[-1], "float32")]
    estimate_reference(*warm, mixed_timesteps(SHAPES[-1][0], M), M)
    del warm
    rows = []
    for shape in SHAPES:
        for dtype in DTYPES:
            row = bench_one(shape, dtype, threads, args.rounds)
            fp32 = row if dtype == "float32" else next(r for r in rows if r["shape"] == row["shape"])
            row["x_fp32_per_element"] = row["kernel_us"] / fp32["kernel_us"]  # float32 runs first
            rows.append(row)
            shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if k != "timings"}
            print(shown, flush=True)
    machine["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    params = {"M": M, "t": "linspace(0, 999, B), B = 1: M / 2 (about half the samples rescaled)",
              "kernel_threads": threads, "rounds": args.rounds, "sample_s": SAMPLE_S,
              "torch_accum": "float64", "inputs": "standard normal, seed 0",
              "simd": os.environ.get("SSD_TOOLKIT_CPU_SIMD", "dispatched")}
    notes = (
        "kernel = ssd_toolkit._C.estimate_cpu on preallocated buffers (no stats); 3R1W limit = "
        "_C.cpu_limit_pass, out = eps_cond ^ eps_uncond ^ noise bytewise on the same arrays, units, threads "
        "and store policy; % of limit = the median over rounds of limit time / kernel time (each round times "
        "both back to back); time / fp32 time = the kernel's time over float32's at the same shape (same "
        "element count). GB/s credit both with 4 x one input's bytes. "
        "Kernel, limit and the API calls are interleaved round by round (medians); plain NumPy, NumPy ref "
        "and torch eager are timed in a second interleaved group. raw, isolated = the kernel after 2 ms idle "
        "(workers asleep). plain NumPy is not timed for bfloat16 (NumPy has none). load = 1-minute load "
        "average before/after the row."
    )
    host_rows = host_overhead()
    notes += (
        "\n\nHost overhead of one NumPy call at 8x4x64x64 float32, the compiled kernel replaced by a no-op "
        "(min of 7 x 2000 calls, Python calls counted with sys.setprofile):\n\n"
        + markdown_table(host_rows, HOST_COLUMNS)
    )
    params["host_overhead"] = host_rows
    print(write_results(args.name, rows, COLUMNS, params, machine, notes))


if __name__ == "__main__":
    main()
