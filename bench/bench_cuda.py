"""Fused CUDA kernel vs PyTorch eager vs torch.compile of the same estimator (needs a GPU).

From the repository root, with the package built with nvcc:

    python bench/bench_cuda.py                 # every shape, fp32 + fp16 -> bench/results/cuda_<gpu>.{json,md}
    python bench/bench_cuda.py --short         # the GPU check's version: fewer repeats, one compile
    python bench/bench_cuda.py --dry-run       # no GPU: the rows, input rotation and working sets
    python bench/bench_cuda.py --plans         # the launch plan of every shape, dtype, alignment and path
    python bench/bench_cuda.py --device cpu --shapes 2,64 --no-compile   # this script's logic on the CPU kernel (CI)

Per shape and dtype (timesteps spread over both branches, M = 500), in one run:
  * check: the fused result against eager PyTorch in float64 (``_torch_impl.estimate_torch``
    on float64 copies of the inputs) with the tolerance table of tests/tolerances.py. A
    row outside it is marked FAIL and the script exits 1 after writing everything.
  * fused_us: ``ssd_toolkit.estimate(...)`` on CUDA tensors, the whole Python call.
  * kernel_us: the launch alone: a CUDA graph holding one ``estimate`` per input set, replayed.
  * eager_us / compile_us: ``estimate_torch`` eagerly and under ``torch.compile`` (Inductor,
    default mode, static shapes, one fresh compile per shape and dtype), timed like fused_us.
  * copy_us: a device-to-device copy moving the kernel's minimum traffic (3 reads + 1
    write of one input: a copy of 2 inputs' bytes), rotated and graph-timed like the kernel;
    copy_fraction = copy_us / kernel_us. peak_fraction compares with a 1 GiB copy.
Every time is the median of ``--repeats`` event-timed loops. Inputs rotate over enough sets
to hold at least twice the L2 cache together at every shape (no cap on the number of
sets), and the rotation continues across loops: between two uses of a set, every other
set is touched, so no timing is an L2 replay.
Forced launch paths (``--forced-paths``, default no_cluster and split) add rows at
``--forced-shape`` (default [64,4,128,128]); their ratios use the same run's eager,
compile and copy times of that shape. Launch-plan variants (``--variants``, default
threads256, relaxed_arrive and both; csrc/cuda/ssd_launch_plan.h) add rows at
``--variant-shapes`` (default [8,4,64,64] and [64,4,128,128]) in float32, so one GPU run
measures them beside today's plan (column ``variant``).
The first rows are ``threads256`` and today's plan at [64,4,128,128] float32 (the predicted
best plan; ``FIRST``). Results are written after every row (``"complete": false`` in the
JSON until the last), and the torch.compile baselines, the slowest part, are measured after
all other rows. ``--device cpu`` needs no CUDA binding (a CPU-only build runs it).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import mixed_timesteps  # noqa: E402 - bench/ on the path first

SHAPES = ("1,4,64,64", "8,4,64,64", "16,4,128,128", "64,4,128,128", "4,3,512,512")
DTYPES = ("float16", "bfloat16", "float32", "float64")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
M = 500.0
L2_FACTOR = 2  # every timed loop's working set is at least L2_FACTOR x the L2 size
TARGETS = {"eager_x_at_8x4x64x64_fp32": 5.0, "compile_x_at_8x4x64x64_fp32": 1.5,
           "copy_fraction_at_64x4x128x128_fp32": 0.75}
SHORT = {"calls": 20, "repeats": 5, "warmup": 3, "compile_shapes": ["8,4,64,64"], "compile_dtypes": ["float32"]}
VARIANTS = ("threads256", "relaxed_arrive", "threads256,relaxed_arrive")  # ssd_launch_plan.h
# Timed first (a run cut short still has them): threads256 at [64,4,128,128] float32, the
# predicted best plan (today's: 1 block per SM at 104 registers, 4 waves, no overlap of loads
# with the reduction; issue 32), and today's plan beside it.
FIRST = (("64,4,128,128", "float32", "auto", "threads256"), ("64,4,128,128", "float32", "auto", "default"))


def parse_shape(text):
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated shape B,... of positive sizes, got {text!r}")
    return text


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", type=parse_shape, default=list(SHAPES), help="shapes B,... (comma-separated)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=DTYPES)
    p.add_argument("--calls", type=int, default=50, help="calls per timed loop")
    p.add_argument("--repeats", type=int, default=7, help="timed loops (the median is reported)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the peak device-to-device copy")
    p.add_argument("--compile-shapes", nargs="*", type=parse_shape, default=None,
                   help="shapes with a torch.compile baseline (default: all; none with no values)")
    p.add_argument("--compile-dtypes", nargs="*", choices=DTYPES, default=None, help="dtypes with one (default: all)")
    p.add_argument("--no-compile", action="store_true", help="no torch.compile baseline at all")
    p.add_argument("--forced-paths", nargs="*", choices=["no_cluster", "split"], default=["no_cluster", "split"])
    p.add_argument("--forced-shape", type=parse_shape, default="64,4,128,128")
    p.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS),
                   help="launch-plan variants timed beside the default plan (none with no values)")
    p.add_argument("--variant-shapes", nargs="*", type=parse_shape, default=["8,4,64,64", "64,4,128,128"])
    p.add_argument("--variant-dtypes", nargs="*", choices=DTYPES, default=["float32"])
    p.add_argument("--short", action="store_true",
                   help=f"the GPU check's version: {SHORT['calls']} calls x {SHORT['repeats']} repeats, "
                        "torch.compile only at 8,4,64,64 float32")
    p.add_argument("--l2-mib", type=float, default=None, help="L2 size for the rotation (default: the device's)")
    p.add_argument("--dry-run", action="store_true", help="no GPU: print the rows and the input rotation, then exit")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: a smoke run of this script's logic on the CPU kernel (wall-clock, no graphs, no "
                        "launch paths); its numbers are not a benchmark")
    p.add_argument("--plans", action="store_true", help="print the launch plans of the shapes (all dtypes, both "
                   "alignments, every path) on this device, then exit")
    p.add_argument("--name", default=None, help="results file stem (default cuda_<gpu name>)")
    p.add_argument("--out-dir", default=None, help="where the results files go (default bench/results)")
    p.add_argument("--no-write", action="store_true", help="print only; write no results files")
    args = p.parse_args(argv)
    if args.short:
        for key, value in SHORT.items():
            if key in ("compile_shapes", "compile_dtypes"):
                if getattr(args, key) is None:
                    setattr(args, key, value)
            elif getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    for key in ("calls", "repeats", "warmup", "copy_mib"):
        if getattr(args, key) < (0 if key == "warmup" else 1):
            p.error(f"--{key.replace('_', '-')}: expected a positive integer, got {getattr(args, key)}")
    args.compile_shapes = [] if args.no_compile else (args.shapes if args.compile_shapes is None else args.compile_shapes)
    args.compile_dtypes = args.dtypes if args.compile_dtypes is None else args.compile_dtypes
    return args


def plan_rows(args):
    """``(shape text, dtype, path, variant)`` of every row: first the predicted best plan and
    today's beside it (``FIRST``, where selected), then the auto paths, the forced paths and
    the other launch-plan variants."""
    rows = [(s, d, "auto", "default") for s in args.shapes for d in args.dtypes]
    rows += [(args.forced_shape, d, path, "default") for path in args.forced_paths for d in args.dtypes]
    rows += [(s, d, "auto", v) for v in args.variants for s in args.variant_shapes for d in args.variant_dtypes]
    lead = [row for row in FIRST if row in rows]
    return lead + [row for row in rows if row not in lead]


def rotation(shape, dtype, l2_bytes):
    """``(input sets, bytes of one set)``: a set is 3 inputs + 1 output; enough sets that
    they hold at least L2_FACTOR x the L2 size together (never fewer than 2)."""
    set_bytes = 4 * math.prod(shape) * ITEMSIZE[dtype]
    return max(2, math.ceil(L2_FACTOR * l2_bytes / set_bytes)), set_bytes


def dry_run(args):
    l2 = (args.l2_mib or 50.0) * 2**20
    print(f"bench_cuda dry run: L2 {l2 / 2**20:.0f} MiB, {args.calls} calls x {args.repeats} repeats "
          f"(warm-up {args.warmup}); torch.compile at {args.compile_shapes or 'no shape'} "
          f"for {args.compile_dtypes if args.compile_shapes else '-'}")
    print(f"{'shape':>16} {'dtype':>9} {'path':>10} {'variant':>26} {'sets':>6} {'rotation MiB':>13} {'compile':>8}")
    for shape_text, dtype, path, variant in plan_rows(args):
        shape = tuple(int(s) for s in shape_text.split(","))
        n_sets, set_bytes = rotation(shape, dtype, l2)
        compiled = path == "auto" and shape_text in args.compile_shapes and dtype in args.compile_dtypes
        print(f"{shape_text:>16} {dtype:>9} {path:>10} {variant:>26} {n_sets:>6} {n_sets * set_bytes / 2**20:>13.1f} "
              f"{'last' if compiled else '-':>8}")
    return 0


def print_plans(module, shapes):
    """The launch plan ``cuda_launch_plan`` gives for each shape x dtype x alignment x path."""
    print(f"{'shape':>16} {'dtype':>9} {'path':>10}  aligned / misaligned")
    try:
        for shape_text in shapes:
            N = math.prod(int(s) for s in shape_text.split(",")[1:])
            for dtype in DTYPES:
                for path in ("auto", "no_cluster", "split"):
                    module.cuda_set_path(path)
                    plans = [module.cuda_launch_plan(N, dtype, aligned) for aligned in (True, False)]
                    print(f"{shape_text:>16} {dtype:>9} {path:>10}  {plans[0]} / {plans[1]}")
                module.cuda_set_path("auto")
                for variant in VARIANTS if hasattr(module, "cuda_set_variant") else ():
                    module.cuda_set_variant(variant)
                    print(f"{shape_text:>16} {dtype:>9} {variant:>10}  {module.cuda_launch_plan(N, dtype, True)}")
                    module.cuda_set_variant("default")
    finally:
        module.cuda_set_path("auto")


def event_time_us(torch, fn, calls, repeats, warmup, device="cuda"):
    """Median over ``repeats`` loops of (event time of ``calls`` back-to-back ``fn()``) / calls
    (wall-clock on the CPU)."""
    for _ in range(warmup):
        fn()
    if device == "cpu":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - start) * 1e6 / calls)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3 / calls)
    return statistics.median(times)


def rotating(fn, n_sets):
    """``fn(i)`` as a no-argument call whose ``i`` keeps cycling over the sets across loops."""
    counter = itertools.count()
    return lambda: fn(next(counter) % n_sets)


def graph_time_us(torch, launch, n_sets, repeats, device="cuda"):
    """Per-launch time of a CUDA graph holding ``launch(i)`` for every set i, replayed (on the
    CPU: the launches back to back)."""
    if device == "cpu":
        return event_time_us(torch, rotating(launch, n_sets), n_sets, repeats, 1, device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture: per-device facts get cached
        for i in range(n_sets):
            launch(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n_sets):
            launch(i)
    us = event_time_us(torch, graph.replay, max(1, 200 // n_sets), repeats, 2) / n_sets
    del graph
    return us


def peak_copy_gbps(torch, mib, repeats, device="cuda"):
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    us = event_time_us(torch, lambda: dst.copy_(src), 10, repeats, 3, device)
    return 2 * src.numel() / (us * 1e-6) / 1e9


def check_against_eager(torch, estimate_torch, fused_out, inputs2d, t_dev, dtype):
    """``"ok"`` or ``"FAIL: <reason>"``: the fused result against eager float64 PyTorch with
    the tolerance table of tests/tolerances.py."""
    from tolerances import assert_close_to_reference  # noqa: PLC0415

    ref = estimate_torch(*(x.double() for x in inputs2d), t_dev, M)[0]
    try:
        assert_close_to_reference(fused_out.reshape(ref.shape), ref.cpu().numpy(), dtype, what="fused vs eager float64")
    except AssertionError as exc:
        return f"FAIL: {exc}"
    return "ok"


class Bench:
    """One run's device, module and caches (eager/compile/copy per shape and dtype)."""

    def __init__(self, torch, args):
        import ssd_toolkit  # noqa: PLC0415
        from ssd_toolkit.engine import extension as _extension  # noqa: PLC0415
        from ssd_toolkit.frameworks.torch.eager import estimate_torch  # noqa: PLC0415

        self.torch, self.args, self.ssd, self.estimate_torch = torch, args, ssd_toolkit, estimate_torch
        self.module = _extension.load()
        for name in ("cuda_set_path", "cuda_launch_plan") if args.device == "cuda" else ():  # cpu: no CUDA binding
            if not hasattr(self.module, name):
                raise SystemExit(f"bench_cuda: ssd_toolkit._C has no {name}() (did the CUDA binding's names change? "
                                 f"see csrc/cuda/bindings_cuda.cpp)")
        self.baselines = {}
        self.errors = []
        self.device = args.device

    def set_path(self, path):
        if self.device == "cuda":
            self.module.cuda_set_path(path)

    def set_variant(self, variant):
        """Selects a launch-plan variant; False when this build has none (row skipped)."""
        if self.device != "cuda":
            return variant == "default"
        if not hasattr(self.module, "cuda_set_variant"):
            return variant == "default"
        self.module.cuda_set_variant(variant)
        return True

    def plan(self, N, dtype):
        return self.module.cuda_launch_plan(N, dtype, True) if self.device == "cuda" else "cpu kernel"

    def guarded(self, what, fn, *args):
        """``fn(*args)``, or NaN with the error noted: one failed measurement must not lose the run."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported in the results' notes
            self.errors.append(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            print(f"bench_cuda: {self.errors[-1]}", file=sys.stderr, flush=True)
            return float("nan")

    def row(self, shape_text, dtype, path, l2_bytes, copy_peak, variant="default"):
        torch, args = self.torch, self.args
        shape = tuple(int(s) for s in shape_text.split(","))
        B, N = shape[0], math.prod(shape[1:])
        n_sets, set_bytes = rotation(shape, dtype, l2_bytes)
        tdtype = getattr(torch, dtype)
        dev = self.device
        gen = torch.Generator(device=dev).manual_seed(0)
        pool = torch.randn((n_sets, 3, B, N), generator=gen, device=dev).to(tdtype)
        sets2d = [tuple(pool[i, k] for k in range(3)) for i in range(n_sets)]
        sets = [tuple(x.view(shape) for x in s) for s in sets2d]
        t_dev = torch.tensor(mixed_timesteps(B, M), dtype=torch.float64, device=dev)
        self.set_path(path)
        self.set_variant(variant)
        try:
            fused = lambda i: self.ssd.estimate(*sets[i], t_dev, M)  # noqa: E731
            E0 = fused(0)
            E_eager0 = self.estimate_torch(*sets2d[0], t_dev, M)[0]
            row = {"shape": "x".join(map(str, shape)), "dtype": dtype, "path": path, "variant": variant, "N": N,
                   "plan": self.plan(N, dtype), "input_sets": n_sets,
                   "working_set_mib": round(n_sets * set_bytes / 2**20, 1),
                   "check": check_against_eager(torch, self.estimate_torch, E0, sets2d[0], t_dev, dtype),
                   "rel_err_vs_eager": ((E0.reshape(B, N).double() - E_eager0.double()).norm()
                                        / E_eager0.double().norm().clamp_min(1e-30)).item()}
            row["fused_us"] = event_time_us(torch, rotating(fused, n_sets), args.calls, args.repeats, args.warmup, dev)
            row["kernel_us"] = self.guarded("CUDA graph of estimate", graph_time_us, torch, fused, n_sets, args.repeats,
                                            dev)
        finally:
            self.set_path("auto")
            self.set_variant("default")
        key = (shape_text, dtype)
        if key not in self.baselines:
            self.baselines[key] = self.measure_baselines(sets2d, t_dev, set_bytes)
        row.update(self.baselines[key])
        row["compile_us"] = float("nan")  # measured last (compile_baselines)
        row["eager_x"] = row["eager_us"] / row["fused_us"]
        row["compile_x"] = float("nan")
        row["kernel_gbps"] = set_bytes / (row["kernel_us"] * 1e-6) / 1e9
        row["copy_fraction"] = row["copy_us"] / row["kernel_us"]
        row["peak_fraction"] = row["kernel_gbps"] / copy_peak
        return row

    def measure_baselines(self, sets2d, t_dev, set_bytes):
        torch, args, n_sets = self.torch, self.args, len(sets2d)
        eager = lambda i: self.estimate_torch(*sets2d[i], t_dev, M)  # noqa: E731
        out = {"eager_us": event_time_us(torch, rotating(eager, n_sets), args.calls, args.repeats, args.warmup,
                                         self.device)}
        # The kernel's minimum traffic (3 reads + 1 write of one input) as one copy: read
        # and write 2 inputs' bytes, rotated over as many buffers as the kernel's sets.
        half = set_bytes // 2
        src = torch.empty((n_sets, half), dtype=torch.uint8, device=self.device)
        dst = torch.empty_like(src)
        out["copy_us"] = graph_time_us(torch, lambda i: dst[i].copy_(src[i]), n_sets, args.repeats, self.device)
        return out

    def compile_baseline(self, shape_text, dtype, l2_bytes):
        """torch.compile of the eager estimator at one shape and dtype (static shapes, a fresh
        compile), timed like fused_us; NaN with the error noted when it fails."""
        torch, args, dev = self.torch, self.args, self.device
        shape = tuple(int(s) for s in shape_text.split(","))
        B, N = shape[0], math.prod(shape[1:])
        n_sets, _ = rotation(shape, dtype, l2_bytes)
        gen = torch.Generator(device=dev).manual_seed(0)
        pool = torch.randn((n_sets, 3, B, N), generator=gen, device=dev).to(getattr(torch, dtype))
        sets2d = [tuple(pool[i, k] for k in range(3)) for i in range(n_sets)]
        t_dev = torch.tensor(mixed_timesteps(B, M), dtype=torch.float64, device=dev)
        torch._dynamo.reset()  # static shapes, one graph per shape and dtype
        compiled = torch.compile(self.estimate_torch, dynamic=False)
        comp = lambda i: compiled(*sets2d[i], t_dev, M)  # noqa: E731
        return self.guarded(f"torch.compile at {shape_text} {dtype}", event_time_us, torch, rotating(comp, n_sets),
                            args.calls, args.repeats, max(args.warmup, 2), dev)


def verdicts(rows):
    lines = []
    for row in rows:
        if row["path"] != "auto" or row.get("variant", "default") != "default":
            continue
        if row["shape"] == "8x4x64x64":
            lines.append(f"[8,4,64,64] {row['dtype']}: {row['eager_x']:.1f}x eager (target >= 5 for float32), "
                         f"{row['compile_x']:.2f}x torch.compile (target >= 1.5 for float32)")
        if row["shape"] == "64x4x128x128" and row["dtype"] == "float32":
            lines.append(f"[64,4,128,128] float32: {100 * row['copy_fraction']:.0f}% of the same-traffic copy, "
                         f"{100 * row['peak_fraction']:.0f}% of the 1 GiB copy (target >= 75%)")
    default = {(r["shape"], r["dtype"]): r for r in rows if r["path"] == "auto" and r.get("variant") == "default"}
    for row in rows:
        base = default.get((row["shape"], row["dtype"]))
        if row.get("variant", "default") != "default" and base:
            lines.append(f"variant {row['variant']} at [{row['shape'].replace('x', ',')}] {row['dtype']}: kernel "
                         f"{row['kernel_us']:.1f} us vs {base['kernel_us']:.1f} us default "
                         f"({base['kernel_us'] / row['kernel_us']:.2f}x), {100 * row['copy_fraction']:.0f}% of copy")
    return lines


COLUMNS = [("shape", "shape", "{}"), ("dtype", "dtype", "{}"), ("path", "path", "{}"), ("variant", "variant", "{}"),
           ("check", "check", "{:.4}"),
           ("fused_us", "fused us", "{:.1f}"), ("kernel_us", "kernel us", "{:.1f}"),
           ("kernel_gbps", "kernel GB/s", "{:.0f}"), ("copy_fraction", "of copy", "{:.0%}"),
           ("eager_us", "eager us", "{:.1f}"), ("eager_x", "vs eager", "{:.1f}x"), ("compile_us", "compile us", "{:.1f}"),
           ("compile_x", "vs compile", "{:.2f}x"), ("input_sets", "sets", "{}"), ("plan", "launch", "{}")]


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    import torch  # noqa: PLC0415

    sys.path.insert(0, str(HERE.parent / "tests"))  # tolerances.py
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_cuda: needs a CUDA device (torch.cuda.is_available() is False; --device cpu runs a smoke test)",
              file=sys.stderr)
        return 2
    from ssd_toolkit.engine import extension as _extension  # noqa: PLC0415

    from common import gpu_info, gpu_slug, machine_info, markdown_table, write_results  # noqa: PLC0415

    if args.device == "cuda" and not _extension.has_cuda_kernel():
        print(f"bench_cuda: ssd_toolkit._C has no CUDA kernel ({_extension.backends()})", file=sys.stderr)
        return 2
    bench = Bench(torch, args)
    if args.plans:
        print_plans(bench.module, list(dict.fromkeys([*args.shapes, args.forced_shape])))
        return 0
    machine = machine_info()
    machine["loadavg_start"] = machine["loadavg_1_5_15"]
    if args.device == "cuda":
        machine.update(gpu_info(torch))
    else:
        machine.update(gpu="cpu (smoke run, not a benchmark)", compute_capability="-", sms=0, l2_mib=args.l2_mib or 1,
                       driver="-", torch_cuda="-")
    l2_bytes = (args.l2_mib or max(machine["l2_mib"], 1)) * 2**20
    copy_peak = peak_copy_gbps(torch, args.copy_mib, args.repeats, args.device)
    print(f"{machine['gpu']} (cc {machine['compute_capability']}, {machine['sms']} SMs, L2 {machine['l2_mib']} MiB), "
          f"driver {machine['driver']}, torch {torch.__version__} (CUDA {machine['torch_cuda']}); "
          f"{args.copy_mib} MiB device-to-device copy {copy_peak:.0f} GB/s", flush=True)
    rows = []
    todo = plan_rows(args)
    params = {"M": M, "calls": args.calls, "repeats": args.repeats, "warmup": args.warmup, "copy_mib": args.copy_mib,
              "short": args.short, "timesteps": "linspace(0, 999, B)", "compile_shapes": args.compile_shapes,
              "compile_dtypes": args.compile_dtypes, "rotation": f">= {L2_FACTOR} x L2 per loop", "targets": TARGETS,
              "variants": args.variants, "copy_peak_gbps": copy_peak}
    name = args.name or (f"cuda_{gpu_slug(machine['gpu'])}" if args.device == "cuda" else "cuda_smoke_on_cpu")

    def notes_and_write(complete):
        """The notes, and the results files as they stand (after every row: a run cut short
        keeps what it measured)."""
        failures = [r for r in rows if r["check"] != "ok"]
        notes = (f"Device-to-device copy of {args.copy_mib} MiB: {copy_peak:.0f} GB/s (read + write). Times in "
                 "microseconds, medians. 'of copy': a copy moving the kernel's minimum traffic, rotated like the "
                 "kernel, over the kernel's time.\n\n" + "\n".join(f"- {v}" for v in verdicts(rows)))
        if not complete:
            notes += f"\n\nPARTIAL: {len(rows)} of {len(todo)} rows; torch.compile baselines not yet measured."
        if bench.errors:
            notes += "\n\nMeasurements that failed (NaN in the table):\n" + "\n".join(f"- {e}" for e in bench.errors)
        if failures:
            notes += "\n\nCHECK FAILURES (fused vs eager float64, tolerance table tests/tolerances.py):\n" + "\n".join(
                f"- {r['shape']} {r['dtype']} {r['path']} {r['variant']}: {r['check']}" for r in failures)
        if args.no_write:
            return markdown_table(rows, COLUMNS) + "\n\n" + notes
        machine.update(machine_info())
        return write_results(name, rows, COLUMNS, {**params, "complete": complete}, machine, notes,
                             out_dir=args.out_dir)

    for shape_text, dtype, path, variant in todo:
        if not bench.set_variant(variant):
            print(f"bench_cuda: this build has no launch-plan variants; skipping {variant}", file=sys.stderr)
            continue
        bench.set_variant("default")
        row = bench.row(shape_text, dtype, path, l2_bytes, copy_peak, variant)
        rows.append(row)
        print(f"{row['shape']:>14} {dtype:>8} {path:>10} {variant:>14}  fused {row['fused_us']:8.1f} us  kernel "
              f"{row['kernel_us']:8.1f} us ({row['kernel_gbps']:6.0f} GB/s, {100 * row['copy_fraction']:5.1f}% of copy)  "
              f"eager {row['eager_us']:8.1f} us ({row['eager_x']:5.1f}x)  [{row['plan']}; {row['input_sets']} sets; "
              f"{row['check']}]", flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
        notes_and_write(complete=False)
    for shape_text in args.compile_shapes:  # the slow baselines last
        for dtype in args.compile_dtypes:
            if not any(r["shape"] == shape_text.replace(",", "x") and r["dtype"] == dtype for r in rows):
                continue
            compile_us = bench.compile_baseline(shape_text, dtype, l2_bytes)
            for r in rows:
                if r["shape"] == shape_text.replace(",", "x") and r["dtype"] == dtype:
                    r["compile_us"], r["compile_x"] = compile_us, compile_us / r["fused_us"]
            print(f"torch.compile at [{shape_text}] {dtype}: {compile_us:.1f} us", flush=True)
            notes_and_write(complete=False)
    failures = [r for r in rows if r["check"] != "ok"]
    text = notes_and_write(complete=True)
    if not args.no_write:
        print(f"\nwrote {Path(args.out_dir or HERE / 'results') / name}.json and .md")
    print("\n" + text)
    if failures:
        print(f"bench_cuda: {len(failures)} row(s) outside the tolerance table (see CHECK FAILURES)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
