"""CPU benchmark: compiled kernel vs plain NumPy, the NumPy reference and PyTorch eager.

    python bench/bench_cpu.py            # writes bench/results/cpu_local.json and .md (--name cpu: the committed ones)

The speed target is against a plain vectorised NumPy SSD (``plain_numpy_ssd``: float32
ops, per-sample sums, what a user would write) with int64 ``t`` as samplers return it,
timed in the same run: ``ssd_toolkit.estimate(c, u, n, t_int64, M)`` must be >= 8x faster
at [8, 4, 64, 64] float32 (aim 15x). A second table gives the host overhead of one call
(Python calls counted with ``sys.setprofile``, time per call) with the compiled binding
replaced by a no-op: NumPy and torch CPU fast paths, the general path, and the torch CUDA
path (its glue run on CPU tensors with the CUDA binding, device and stream queries stubbed).

Times (medians after warm-up) for the public API ``ssd_toolkit.estimate(...,
backend="compiled")`` on NumPy arrays, the raw kernel call (pointers only), the NumPy
reference ``estimate_reference`` and ``_torch_impl.estimate_torch`` on the same data.
Achieved bandwidth counts 4 x one input's bytes per call (3 inputs read + 1 output
written). It is compared with the machine's copy bandwidth measured in the same run on a
buffer of 2 x one input's bytes, counting 2 x its bytes (read + write), so the copy moves the
same 4 x input bytes through the same working-set size as the kernel: the faster of
``numpy.copyto`` (one thread) and torch's ``copy_`` on all cores (the kernel may use all
cores too, so a one-thread copy alone would understate the machine). PyTorch eager is
timed with 1 thread and with all threads; the faster is the baseline (two torch threads
on a loaded 2-core machine can be far slower than one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

import numpy as np
import torch

import ssd_toolkit
from ssd_toolkit.frameworks.torch.eager import estimate_torch
from ssd_toolkit.reference import STAT_NAMES, estimate_reference

from common import (
    copy_bandwidth,
    machine_info,
    make_inputs,
    markdown_table,
    median_time,
    mixed_timesteps,
    write_results,
)

SHAPES = [(1, 4, 64, 64), (8, 4, 64, 64), (16, 4, 128, 128), (64, 4, 128, 128)]
DTYPES = ["float32", "float16"]
M = 500.0

COLUMNS = [
    ("shape", "shape", "{}"),
    ("dtype", "dtype", "{}"),
    ("api_int_t_ms", "API, int64 t ms", "{:.3f}"),
    ("plain_numpy_ms", "plain NumPy ms", "{:.3f}"),
    ("x_plain_numpy", "x plain NumPy", "{:.1f}"),
    ("api_stats_ms", "API + stats ms", "{:.3f}"),
    ("kernel_ms", "kernel API ms", "{:.3f}"),
    ("kernel_raw_ms", "kernel raw ms", "{:.3f}"),
    ("kernel_isolated_ms", "raw, isolated ms", "{:.3f}"),
    ("numpy_ms", "NumPy ref ms", "{:.3f}"),
    ("torch_ms", "torch eager ms", "{:.3f}"),
    ("torch_threads", "torch threads", "{}"),
    ("x_numpy", "x NumPy", "{:.1f}"),
    ("x_torch", "x torch", "{:.1f}"),
    ("kernel_gbs", "kernel GB/s (4x bytes)", "{:.1f}"),
    ("copyto_gbs", "copyto GB/s (1 thread)", "{:.1f}"),
    ("copy_gbs", "copy GB/s (best)", "{:.1f}"),
    ("pct_copy", "% of copy", "{:.0f}"),
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


def bench_one(shape, dtype, threads, repeats):
    B = shape[0]
    N = int(np.prod(shape[1:]))
    c, u, n = make_inputs(shape, dtype, seed=0, library="numpy")
    t = mixed_timesteps(B, M)
    rows2d = [x.reshape(B, N) for x in (c, u, n)]
    tc, tu, tn = (torch.from_numpy(x) for x in rows2d)
    tt = torch.from_numpy(t)
    module = ssd_toolkit.engine.extension.load()
    out = np.empty_like(rows2d[0])
    stats = np.empty((len(STAT_NAMES), B))

    def raw():
        module.estimate_cpu(*(x.ctypes.data for x in rows2d), out.ctypes.data, t.ctypes.data, stats.ctypes.data,
                            B, N, dtype, M, threads)

    def raw_isolated():  # 2 ms idle first (untimed): the workers are asleep, as between training steps
        time.sleep(0.002)
        start = time.perf_counter()
        raw()
        isolated.append(time.perf_counter() - start)

    isolated = []
    t_int = np.rint(t).astype(np.int64)
    for _ in range(50):  # untimed: the first timing of a shape otherwise pays its page faults and cold caches
        ssd_toolkit.estimate(c, u, n, t_int, M)
        plain_numpy_ssd(c, u, n, t_int, M)
    timings = {
        "api_int_t": median_time(lambda: ssd_toolkit.estimate(c, u, n, t_int, M), repeats=repeats),
        "plain_numpy": median_time(lambda: plain_numpy_ssd(c, u, n, t_int, M), repeats=repeats),
        "api_stats": median_time(lambda: ssd_toolkit.estimate(c, u, n, t_int, M, return_stats=True), repeats=repeats),
        "kernel": median_time(lambda: ssd_toolkit.estimate(c, u, n, t, M, backend="compiled"), repeats=repeats),
        "kernel_raw": median_time(raw, repeats=repeats),
        "numpy": median_time(lambda: estimate_reference(*rows2d, t, M), repeats=max(3, repeats // 3)),
    }
    median_time(raw_isolated, warmup=0, repeats=repeats)
    timings["kernel_raw_isolated"] = {"median_s": statistics.median(isolated), "min_s": min(isolated),
                                      "repeats": repeats}
    for torch_threads in sorted({1, threads}):
        torch.set_num_threads(torch_threads)
        timings[f"torch_{torch_threads}t"] = median_time(
            lambda: estimate_torch(tc, tu, tn, tt, M), repeats=max(3, repeats // 3)
        )
    torch_best = min((k for k in timings if k.startswith("torch_")), key=lambda k: timings[k]["median_s"])
    timings["torch"] = timings[torch_best]
    ms = {k: v["median_s"] * 1e3 for k, v in timings.items()}
    nbytes = c.nbytes
    copy_1t_gbs = copy_bandwidth(2 * nbytes)
    copy_gbs = max(copy_1t_gbs, copy_bandwidth(2 * nbytes, threads=os.cpu_count() or 1))
    kernel_gbs = 4 * nbytes / (ms["kernel"] / 1e3) / 1e9
    return {
        "shape": "x".join(map(str, shape)),
        "dtype": dtype,
        "api_int_t_ms": ms["api_int_t"],
        "plain_numpy_ms": ms["plain_numpy"],
        "x_plain_numpy": ms["plain_numpy"] / ms["api_int_t"],
        "api_stats_ms": ms["api_stats"],
        "kernel_ms": ms["kernel"],
        "kernel_raw_ms": ms["kernel_raw"],
        "kernel_isolated_ms": ms["kernel_raw_isolated"],
        "numpy_ms": ms["numpy"],
        "torch_ms": ms["torch"],
        "x_numpy": ms["numpy"] / ms["kernel"],
        "x_torch": ms["torch"] / ms["kernel"],
        "kernel_gbs": kernel_gbs,
        "copyto_gbs": copy_1t_gbs,
        "copy_gbs": copy_gbs,
        "pct_copy": 100 * kernel_gbs / copy_gbs,
        "torch_threads": int(torch_best.split("_")[1][:-1]),
        "input_bytes": nbytes,
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


class _Stubbed:
    """Replaces the compiled binding (and, for the CUDA path, the device and stream queries)
    with no-ops for the duration of a ``with`` block."""

    def __init__(self, cuda):
        from ssd_toolkit.engine import extension as _extension, frameworks  # noqa: PLC0415

        self.cuda, self.ext = cuda, _extension
        self.torch_backend = frameworks.framework_of(torch.zeros(1))
        self.stub = types.SimpleNamespace(
            estimate_cpu=lambda *a: None, estimate_cuda=lambda *a: None, compiled_with_cuda=lambda: True
        )

    def __enter__(self):
        self.saved = (self.ext.load, self.ext.cpu_kernel, self.ext.has_cuda_kernel,
                      torch.cuda.current_device, getattr(torch._C, "_cuda_getCurrentRawStream", None))
        self.ext.load = lambda: self.stub
        self.ext.cpu_kernel = lambda: self.stub.estimate_cpu
        if self.cuda:  # CPU tensors take the CUDA route: glue, allocation, argument packing
            os.environ["SSD_TOOLKIT_CUDA_SELFTEST"] = "0"  # the stub computes nothing to test
            self.ext.has_cuda_kernel = lambda: True
            backend = self.torch_backend
            backend._fast_cpu = lambda *args: backend._fast_cuda(*args[:-1])  # the CPU tensors' route -> CUDA's
            torch.cuda.current_device = lambda: None  # a CPU tensor's device index
            torch._C._cuda_getCurrentRawStream = lambda index: 0
        return self

    def __exit__(self, *exc):
        self.ext.load, self.ext.cpu_kernel, self.ext.has_cuda_kernel, torch.cuda.current_device, raw = self.saved
        self.torch_backend.__dict__.pop("_fast_cpu", None)
        os.environ.pop("SSD_TOOLKIT_CUDA_SELFTEST", None)
        if self.cuda and raw is None:
            delattr(torch._C, "_cuda_getCurrentRawStream")
        elif self.cuda:
            torch._C._cuda_getCurrentRawStream = raw


def host_overhead(repeats=2000):
    """Rows of HOST_COLUMNS at [8, 4, 64, 64] float32 with the binding stubbed."""
    c, u, n = make_inputs((8, 4, 64, 64), "float32")
    tc, tu, tn = (torch.from_numpy(x) for x in (c, u, n))
    t_int = np.rint(mixed_timesteps(8, M)).astype(np.int64)
    cases = [
        ("NumPy fast path", False, (c, u, n), "int64 [B]", t_int, {}),
        ("NumPy fast path", False, (c, u, n), "int64 [B]", t_int, {"return_stats": True}),
        ("NumPy fast path", False, (c, u, n), "Python int", 300, {}),
        ("torch CPU fast path", False, (tc, tu, tn), "torch int64 [B]", torch.from_numpy(t_int), {}),
        ("torch CPU fast path", False, (tc, tu, tn), "torch int64 [B]", torch.from_numpy(t_int),
         {"return_stats": True}),
        ("general path (NumPy)", False, (c, u, n), "list", t_int.tolist(), {}),
        ("torch CUDA path (stubbed)", True, (tc, tu, tn), "Python int", 300, {}),
        ("torch CUDA path (stubbed)", True, (tc, tu, tn), "int64 [B] (host)", t_int, {}),
        ("torch CUDA path (stubbed)", True, (tc, tu, tn), "Python int", 300, {"return_stats": True}),
    ]
    rows = []
    for path, cuda, arrays, t_name, t_value, kw in cases:
        with _Stubbed(cuda):
            call = lambda: ssd_toolkit.estimate(*arrays, t_value, M, **kw)  # noqa: E731
            call()
            python_calls, c_calls = count_calls(call)
            timing = median_time(lambda: [call() for _ in range(repeats)], warmup=1, repeats=7)
        rows.append({"path": path, "t": t_name, "stats": "yes" if kw else "no", "python_calls": python_calls,
                     "c_calls": c_calls, "us": timing["min_s"] / repeats * 1e6})
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per kernel measurement")
    parser.add_argument("--threads", type=int, default=0, help="kernel and torch threads (0: all cores)")
    parser.add_argument("--name", default="cpu_local",
                        help="results/<name>.json and .md (default cpu_local; --name cpu replaces the committed results)")
    args = parser.parse_args()
    if not ssd_toolkit.backends()["cpu"]:
        raise SystemExit(f"compiled CPU kernel not built: {ssd_toolkit.backends()['reason']}")
    threads = args.threads if args.threads > 0 else os.cpu_count()
    machine = machine_info()
    # One untimed reference run at the largest shape first: glibc then raises its mmap
    # threshold, so NumPy's float64 temporaries stop paying page faults at every size (the
    # baselines are timed warm, in whatever order the shapes come).
    warm = [x.reshape(SHAPES[-1][0], -1) for x in make_inputs(SHAPES[-1], "float32")]
    estimate_reference(*warm, mixed_timesteps(SHAPES[-1][0], M), M)
    del warm
    rows = []
    for dtype in DTYPES:
        for shape in SHAPES:
            row = bench_one(shape, dtype, threads, args.repeats)
            rows.append(row)
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "timings"}
            print(shown, flush=True)
    machine["loadavg_start"] = machine["loadavg_1_5_15"]
    machine["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    params = {"M": M, "t": "linspace(0, 999, B) (about half the samples rescaled)", "kernel_threads": threads,
              "repeats": args.repeats, "torch_accum": "float64", "inputs": "standard normal, seed 0"}
    notes = ("kernel API = ssd_toolkit.estimate(backend='compiled') on NumPy arrays (validation, output and "
             "stats allocation included); kernel raw = ssd_toolkit._C.estimate_cpu on preallocated buffers, "
             "back to back; raw, isolated = the same call after 2 ms idle, when the kernel's worker threads "
             "sleep (as between training steps; waking them costs tens of microseconds on this VM). "
             "x NumPy / x torch use the API time. GB/s: 4 x input bytes per kernel call; the copies move a "
             "2 x input-bytes buffer, 2 x its bytes per copy (the same 4 x input bytes); % of copy is "
             "against the faster of numpy.copyto (1 thread) and torch copy_ (all cores). The kernel "
             "really reads two inputs twice (pass 2 re-reads a sample right after pass 1, from cache "
             "when the sample fits) but is credited with 4x only.")
    torch.set_num_threads(1)
    host_rows = host_overhead()
    notes += (
        "\n\nHost overhead of one call at 8x4x64x64 float32, binding stubbed (no kernel work; min of 7 "
        "x 2000 calls, Python calls counted with sys.setprofile; the CUDA rows run the CUDA glue on CPU "
        "tensors with the device and stream queries stubbed, so they omit the real allocator, the "
        "stream query and, for a host t vector, the host-to-device copy):\n\n" + markdown_table(host_rows, HOST_COLUMNS)
    )
    params["host_overhead"] = host_rows
    print(write_results(args.name, rows, COLUMNS, params, machine, notes))


if __name__ == "__main__":
    main()
