"""Fused CUDA kernel vs PyTorch eager vs torch.compile of the same estimator (needs a GPU).

One command (from the repository root, with the package built with nvcc):

    python bench/bench_cuda.py                # all shapes, fp32 + fp16, writes bench/results/cuda_<gpu>.{json,md}

What is measured, per shape and dtype (timesteps spread over both branches, M = 500):
  * fused_us: ``ssd_toolkit.estimate(...)`` on torch CUDA tensors, the whole Python call,
    back to back; CUDA events around ``--calls`` calls, median of ``--repeats`` such loops.
  * kernel_us: the fused launch alone (CUDA graph of one launch per input set, replayed),
    i.e. without Python overhead; bandwidth counts 4N elements (3 reads + 1 write).
  * eager_us / compile_us: ``_torch_impl.estimate_torch`` (float64 sums, like the kernel)
    eagerly and under ``torch.compile`` (Inductor, default mode), timed like fused_us.
  * copy: a device-to-device copy of ``--copy-mib`` MiB in the same run (bytes read +
    written); kernel bandwidth is reported as a fraction of it.
Inputs rotate over enough sets to exceed twice the L2 cache, so no timing is an L2 replay.
The fused result is checked against the eager one before timing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = ("1,4,64,64", "8,4,64,64", "16,4,128,128", "64,4,128,128", "4,3,512,512")
M = 500.0
TARGETS = {"eager_x_at_8x4x64x64": 5.0, "compile_x_at_8x4x64x64": 1.5, "copy_fraction_at_64x4x128x128_fp32": 0.75}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), help="comma-separated shapes [B,...]")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=["float16", "bfloat16", "float32", "float64"])
    p.add_argument("--calls", type=int, default=50, help="calls per timed loop")
    p.add_argument("--repeats", type=int, default=7, help="timed loops (the median is reported)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the reference device-to-device copy")
    p.add_argument("--path", default="auto", choices=["auto", "no_cluster", "split"], help="kernel launch path")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--name", default=None, help="results file stem (default cuda_<gpu name>)")
    p.add_argument("--no-write", action="store_true", help="print only; write no results files")
    return p.parse_args(argv)


def gpu_info(torch):
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.split("\n")[0].strip()
    except OSError:
        driver = "unknown (no nvidia-smi)"
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "l2_mib": round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "driver": driver,
        "torch_cuda": torch.version.cuda,
    }


def event_time_us(torch, fn, calls, repeats, warmup):
    """Median over ``repeats`` of (event time of ``calls`` back-to-back fn(i)) / calls."""
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(calls):
            fn(i)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3 / calls)
    return statistics.median(times)


def graph_time_us(torch, launch, n_sets, repeats):
    """Per-launch time of a CUDA graph holding one launch per input set."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(n_sets):
            launch(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n_sets):
            launch(i)
    return event_time_us(torch, lambda _: graph.replay(), 10, repeats, 3) / n_sets


def copy_gbps(torch, mib, repeats):
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    us = event_time_us(torch, lambda _: dst.copy_(src), 10, repeats, 3)
    return 2 * src.numel() / (us * 1e-6) / 1e9


def main(argv=None):
    args = parse_args(argv)
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        print("bench_cuda: needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    import ssd_toolkit  # noqa: PLC0415
    from ssd_toolkit import _extension  # noqa: PLC0415
    from ssd_toolkit._torch_impl import estimate_torch  # noqa: PLC0415

    from common import machine_info, make_inputs, mixed_timesteps, write_results  # noqa: PLC0415

    module = _extension.load()
    if not _extension.has_cuda_kernel():
        print(f"bench_cuda: ssd_toolkit._C has no CUDA kernel ({_extension.backends()})", file=sys.stderr)
        return 2
    module.cuda_set_path(args.path)
    machine = machine_info()
    machine.update(gpu_info(torch))
    l2_bytes = max(machine["l2_mib"], 1) * 2**20
    copy = copy_gbps(torch, args.copy_mib, args.repeats)
    print(f"{machine['gpu']} (cc {machine['compute_capability']}, {machine['sms']} SMs, L2 {machine['l2_mib']} MiB), "
          f"driver {machine['driver']}, torch {torch.__version__} (CUDA {machine['torch_cuda']}); "
          f"device-to-device copy {copy:.0f} GB/s", flush=True)
    compiled_fn = None if args.no_compile else torch.compile(estimate_torch)
    rows = []
    for shape_text in args.shapes:
        shape = tuple(int(s) for s in shape_text.split(","))
        B, N = shape[0], math.prod(shape[1:])
        for dtype in args.dtypes:
            esize = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
            set_bytes = 4 * B * N * esize
            n_sets = max(1, min(64, math.ceil(2 * l2_bytes / set_bytes)))
            sets = [make_inputs(shape, dtype, seed=s, library="torch", device="cuda") for s in range(n_sets)]
            t_host = mixed_timesteps(B, M)
            t_dev = torch.tensor(t_host, dtype=torch.float64, device="cuda")
            rows2d = [[x.reshape(B, N) for x in s] for s in sets]
            fused = lambda i: ssd_toolkit.estimate(*sets[i % n_sets], t_dev, M)  # noqa: E731
            eager = lambda i: estimate_torch(*rows2d[i % n_sets], t_dev, M)  # noqa: E731
            E_fused = fused(0).reshape(B, N).double()
            E_eager = eager(0)[0].double()
            err = ((E_fused - E_eager).norm() / E_eager.norm().clamp_min(1e-30)).item()
            outs = [torch.empty(B, N, dtype=getattr(torch, dtype), device="cuda") for _ in range(n_sets)]
            stream = lambda: torch.cuda.current_stream().cuda_stream  # noqa: E731

            def launch(i):
                c, u, n = rows2d[i]
                module.estimate_cuda(c.data_ptr(), u.data_ptr(), n.data_ptr(), outs[i].data_ptr(), t_dev.data_ptr(),
                                     0.0, 0, B, N, dtype, M, stream())

            row = {"shape": "x".join(map(str, shape)), "dtype": dtype, "N": N, "input_sets": n_sets,
                   "plan": module.cuda_launch_plan(N, dtype, True), "rel_err_vs_eager": err}
            row["fused_us"] = event_time_us(torch, fused, args.calls, args.repeats, args.warmup)
            row["kernel_us"] = graph_time_us(torch, launch, n_sets, args.repeats)
            row["eager_us"] = event_time_us(torch, eager, args.calls, args.repeats, args.warmup)
            if compiled_fn is not None:
                comp = lambda i: compiled_fn(*rows2d[i % n_sets], t_dev, M)  # noqa: E731
                row["compile_us"] = event_time_us(torch, comp, args.calls, args.repeats, args.warmup)
            else:
                row["compile_us"] = float("nan")
            row["eager_x"] = row["eager_us"] / row["fused_us"]
            row["compile_x"] = row["compile_us"] / row["fused_us"]
            row["kernel_gbps"] = set_bytes / (row["kernel_us"] * 1e-6) / 1e9
            row["copy_fraction"] = row["kernel_gbps"] / copy
            rows.append(row)
            print(f"{row['shape']:>14} {dtype:>8}  fused {row['fused_us']:8.1f} us  kernel {row['kernel_us']:8.1f} us "
                  f"({row['kernel_gbps']:6.0f} GB/s, {100 * row['copy_fraction']:5.1f}% of copy)  eager {row['eager_us']:8.1f} us "
                  f"({row['eager_x']:5.1f}x)  compile {row['compile_us']:8.1f} us ({row['compile_x']:4.2f}x)  "
                  f"[{row['plan']}; rel err {err:.1e}]", flush=True)
            del sets, rows2d, outs
    module.cuda_set_path("auto")

    verdicts = []
    for row in rows:
        if row["shape"] == "8x4x64x64":
            verdicts.append(f"[8,4,64,64] {row['dtype']}: {row['eager_x']:.1f}x eager (target >= 5), "
                            f"{row['compile_x']:.2f}x torch.compile (target >= 1.5)")
        if row["shape"] == "64x4x128x128" and row["dtype"] == "float32":
            verdicts.append(f"[64,4,128,128] float32: {100 * row['copy_fraction']:.0f}% of copy bandwidth (target >= 75%)")
    notes = (f"GPU: {machine['gpu']} (cc {machine['compute_capability']}, {machine['sms']} SMs), driver "
             f"{machine['driver']}, torch {machine.get('torch')} CUDA {machine['torch_cuda']}. Device-to-device copy: "
             f"{copy:.0f} GB/s (read + write). Times in microseconds.\n\n" + "\n".join(f"- {v}" for v in verdicts))
    params = {"M": M, "calls": args.calls, "repeats": args.repeats, "warmup": args.warmup, "copy_mib": args.copy_mib,
              "path": args.path, "timesteps": "linspace(0, 999, B)", "compile": not args.no_compile,
              "targets": TARGETS, "copy_gbps": copy}
    columns = [("shape", "shape", "{}"), ("dtype", "dtype", "{}"), ("fused_us", "fused us", "{:.1f}"),
               ("kernel_us", "kernel us", "{:.1f}"), ("kernel_gbps", "kernel GB/s", "{:.0f}"),
               ("copy_fraction", "of copy", "{:.0%}"), ("eager_us", "eager us", "{:.1f}"),
               ("eager_x", "vs eager", "{:.1f}x"), ("compile_us", "compile us", "{:.1f}"),
               ("compile_x", "vs compile", "{:.2f}x"), ("plan", "launch", "{}")]
    if not args.no_write:
        name = args.name or "cuda_" + "".join(ch if ch.isalnum() else "_" for ch in machine["gpu"].lower()).strip("_")
        text = write_results(name, rows, columns, params, machine, notes)
        print(f"\nwrote bench/results/{name}.json and .md")
    else:
        from common import markdown_table  # noqa: PLC0415

        text = markdown_table(rows, columns) + "\n\n" + notes
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
