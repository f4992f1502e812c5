"""Standalone driver for compute-sanitizer: every CUDA kernel variant and edge case, 54 calls.

Run under each tool by scripts/cuda_sanitize.sh (filtered to our kernels, with
PYTORCH_NO_CUDA_MEMORY_CACHING=1 so every tensor is its own allocation and an access one
element past an array is outside it). Each case builds its inputs on the host, copies them
to the device (no other kernel runs), calls ``ssd_toolkit.estimate(..., backend="compiled")``
(an error, not a fallback, when the kernel is missing) under a forced launch path, and
compares E (and the stats) with the float64 NumPy reference and the tolerance table of
tests/tolerances.py. The first-use self-test is off (``SSD_TOOLKIT_CUDA_SELFTEST=0`` unless
``strict`` is set): every launch is checked here, and none may fall back to eager PyTorch,
which would pass its checks on eager results. Misaligned cases view an allocation one element past its start, so
the last element of the view is the last of the allocation.

    python scripts/sanitize_driver.py --list        # the cases (no GPU, no torch)
    python scripts/sanitize_driver.py               # run them all (needs a GPU)
    python scripts/sanitize_driver.py --only f32-   # cases whose name contains "f32-"
    python scripts/sanitize_driver.py --canary      # one deliberate out-of-bounds launch
    python scripts/sanitize_driver.py --device cpu  # the same cases on the CPU kernel (CI self-test)

``--canary`` proves that the sanitizer's kernel filter matches our kernels: it launches
the kernel through the raw binding on arrays 4 x shorter than the N it is given, so
memcheck must report invalid global reads (and the process fails).

Exit status: 0 every case matched, 1 a mismatch or an error, 2 bad usage / no GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
M = 500.0


@dataclass(frozen=True)
class Case:
    """One call: ``[B, N]`` inputs of ``dtype`` under launch ``path``.

    offset: 1 views the arrays one element into their allocation (no 16-byte access).
    t: "mixed" (host vector, both branches), "device" (CUDA vector, both branches),
       "low" / "high" (host scalar at or under M / over M), "at_m" (vector, t == M exactly).
    values: "normal", "nonfinite" (inf and NaN in two samples), "collinear" (c = 2 n),
       "zero_noise" (n = 0).
    what: the kernel variant or edge case it is there for (on an H100).
    """

    name: str
    dtype: str
    B: int
    N: int
    path: str = "auto"
    offset: int = 0
    t: str = "mixed"
    stats: bool = True
    values: str = "normal"
    what: str = ""


CASES = [
    # float32 (4 per 16-byte pack). `what` names the launch an H100 gets (cuda_launch_plan).
    Case("f32-n1", "float32", 1, 1, what="smallest sample, scalar access"),
    Case("f32-b7n3", "float32", 7, 3, t="low", what="N under one pack"),
    Case("f32-n97-mis", "float32", 5, 97, offset=1, what="odd N, misaligned"),
    Case("f32-c1", "float32", 3, 2048, t="device", what="resident cluster 1, 1 pack/thread"),
    Case("f32-c8", "float32", 2, 16384, t="device", what="resident cluster 8, 1 pack/thread"),
    Case("f32-c8-v2", "float32", 2, 32768, what="resident cluster 8, 2 packs/thread"),
    Case("f32-c8-v4", "float32", 2, 65536, stats=False, what="resident cluster 8, 4 packs/thread"),
    Case("f32-c16", "float32", 1, 131072, what="resident cluster 16 (non-portable) or split"),
    Case("f32-c8-mis", "float32", 2, 16383, offset=1, what="scalar access with clusters"),
    Case("f32-c8-v4-mis", "float32", 2, 65535, offset=1, what="scalar access, 4 packs/thread, clusters"),
    Case("f32-nc-v2", "float32", 3, 4096, path="no_cluster", what="no cluster, 2 packs/thread"),
    Case("f32-nc-v2-mis", "float32", 3, 4095, path="no_cluster", offset=1, what="no cluster, 2 packs/thread, scalar"),
    Case("f32-nc-v4", "float32", 3, 8192, path="no_cluster", t="device", what="no cluster, 4 packs/thread"),
    Case("f32-nc-split", "float32", 2, 16384, path="no_cluster", what="no cluster falls back to split"),
    Case("f32-split-1", "float32", 3, 1025, path="split", what="split, one chunk"),
    Case("f32-split-uneven", "float32", 3, 10000, path="split", what="split, 2 chunks, longer last chunk"),
    Case("f32-split-mis", "float32", 3, 10001, path="split", offset=1, what="split, scalar, uneven chunks"),
    Case("f32-split-16", "float32", 2, 16, path="split", t="device", what="split at the 64-byte minimum"),
    Case("f32-split-15", "float32", 2, 15, path="split", what="under 64 bytes: split refused, resident"),
    Case("f32-batch64", "float32", 64, 1024, t="device", what="many samples"),
    # Edge cases (clusters of 2 and 4 on an H100).
    Case("f32-nonfinite", "float32", 4, 3000, stats=False, values="nonfinite", what="inf/NaN stay in their sample"),
    Case("f32-nonfinite-split", "float32", 4, 9000, path="split", stats=False, values="nonfinite",
         what="inf/NaN through the split path"),
    Case("f32-collinear", "float32", 2, 5000, values="collinear", what="degenerate eps_tilde: E = 0 (cluster 4)"),
    Case("f32-zero-noise", "float32", 2, 4096, values="zero_noise", what="||noise|| = 0: r = 0 (cluster 2)"),
    Case("f32-t-at-M", "float32", 4, 4096, t="at_m", what="t == M is mode-seeking (cluster 2)"),
    Case("f32-all-h-split", "float32", 3, 10000, path="split", t="high", what="t > M: write reads eps_uncond"),
    Case("empty-batch", "float32", 0, 5, what="B = 0: no launch"),
    Case("empty-sample", "float32", 3, 0, what="N = 0"),
    # float16 / bfloat16 (8 per pack).
    Case("f16-c1", "float16", 3, 4096, what="fp16 resident cluster 1"),
    Case("f16-c8-v2", "float16", 2, 65536, what="fp16 cluster 8, 2 packs/thread"),
    Case("f16-c8-v2-mis", "float16", 2, 65535, offset=1, what="fp16 cluster 8, 2 packs/thread, scalar"),
    Case("f16-c8-v4", "float16", 2, 131072, t="device", what="fp16 cluster 8, 4 packs/thread"),
    Case("f16-c8-v4-mis", "float16", 1, 131071, offset=1, stats=False, what="fp16 cluster 8, 4 packs/thread, scalar"),
    Case("f16-mis", "float16", 3, 1001, offset=1, what="fp16 scalar"),
    Case("f16-split-uneven", "float16", 2, 20000, path="split", what="fp16 split, uneven chunks"),
    Case("f16-split-mis", "float16", 2, 20001, path="split", offset=1, what="fp16 split, scalar"),
    Case("f16-nonfinite-nc", "float16", 4, 3000, path="no_cluster", stats=False, values="nonfinite",
         what="fp16 inf/NaN, no cluster"),
    Case("bf16-c4", "bfloat16", 2, 16384, what="bf16 resident cluster 4"),
    Case("bf16-mis", "bfloat16", 2, 16383, offset=1, t="device", what="bf16 scalar with clusters"),
    Case("bf16-nc-v2", "bfloat16", 2, 8192, path="no_cluster", what="bf16 2 packs/thread"),
    Case("bf16-nc-v2-mis", "bfloat16", 2, 8191, path="no_cluster", offset=1, what="bf16 2 packs/thread, scalar"),
    Case("bf16-nc-v4", "bfloat16", 2, 16384, path="no_cluster", stats=False, what="bf16 4 packs/thread"),
    Case("bf16-nc-v4-mis", "bfloat16", 2, 16383, path="no_cluster", offset=1, what="bf16 4 packs/thread, scalar"),
    Case("bf16-split", "bfloat16", 2, 20000, path="split", what="bf16 split"),
    Case("bf16-split-mis", "bfloat16", 2, 20001, path="split", offset=1, t="device", what="bf16 split, scalar"),
    # float64 (2 per pack).
    Case("f64-c8", "float64", 2, 8192, what="fp64 resident cluster 8"),
    Case("f64-c8-v4", "float64", 2, 32768, stats=False, what="fp64 resident cluster 8, 4 packs/thread"),
    Case("f64-mis", "float64", 3, 1023, offset=1, what="fp64 scalar"),
    Case("f64-nc-v2", "float64", 2, 2048, path="no_cluster", what="fp64 2 packs/thread"),
    Case("f64-nc-v2-mis", "float64", 2, 2047, path="no_cluster", offset=1, what="fp64 2 packs/thread, scalar"),
    Case("f64-nc", "float64", 2, 4096, path="no_cluster", what="fp64 no cluster, 4 packs/thread"),
    Case("f64-nc-v4-mis", "float64", 2, 4095, path="no_cluster", offset=1, what="fp64 4 packs/thread, scalar"),
    Case("f64-split-uneven", "float64", 2, 5000, path="split", t="device", what="fp64 split, uneven chunks"),
    Case("f64-split-mis", "float64", 2, 5001, path="split", offset=1, what="fp64 split, scalar"),
]


def select(cases, only):
    chosen = [c for c in cases if not only or any(o in c.name for o in only)]
    if not chosen:
        raise SystemExit(f"sanitize_driver: --only {' '.join(only)}: no case name contains it; see --list")
    return chosen


def list_cases(cases):
    print(f"{len(cases)} cases:")
    for c in cases:
        print(f"  {c.name:<22} {c.dtype:<9} [{c.B}, {c.N}] path={c.path:<10} offset={c.offset} t={c.t:<6} "
              f"stats={'yes' if c.stats else 'no':<3} values={c.values:<10} {c.what}")


# ------------------------------------------------------------------------------- running
def host_inputs(case, rng):
    """float64 host ``(c, u, n, t)`` for the case (values rounded to the dtype later)."""
    import numpy as np  # noqa: PLC0415
    from ssd_inputs import make_inputs  # noqa: PLC0415 - tests/ssd_inputs.py, the shared builder

    B, N = case.B, case.N
    c, u, n = make_inputs((B, N), "float64", seed=rng)
    if case.values == "nonfinite" and B >= 3 and N >= 6:
        c[1, N // 2] = np.inf
        u[2, 5] = np.nan
    elif case.values == "collinear":
        c = 2.0 * n
    elif case.values == "zero_noise":
        n[:] = 0.0
    t = np.empty(B)
    t[::2], t[1::2] = 100.0, 900.0
    if case.t == "low":
        t = 100.0
    elif case.t == "high":
        t = 900.0
    elif case.t == "at_m":
        t[:] = M
    return c, u, n, t


def to_device(torch, x, dtype, offset, device):
    """A tensor of ``x`` in ``dtype`` on ``device``, ``offset`` elements into its own allocation."""
    flat = torch.from_numpy(x.reshape(-1)).to(getattr(torch, dtype))  # cast on the host
    if offset:
        flat = torch.cat([torch.zeros(offset, dtype=flat.dtype), flat])
    dev = flat.to(device)
    return dev[offset:].view(x.shape)


def launch(torch, ssd_toolkit, module, case, dev, t_arg):
    """``(result, plan)`` of the case's call under its forced path (on the CPU: no path)."""
    if module is None:
        return ssd_toolkit.estimate(*dev, t_arg, M, return_stats=case.stats, backend="compiled"), "cpu"
    module.cuda_set_path(case.path)
    try:
        plan = module.cuda_launch_plan(case.N, case.dtype, case.offset == 0) if case.B else "no launch"
        result = ssd_toolkit.estimate(*dev, t_arg, M, return_stats=case.stats, backend="compiled")
        torch.cuda.synchronize()
    finally:
        module.cuda_set_path("auto")
    return result, plan


def run_case(torch, ssd_toolkit, module, case, rng, device="cuda"):
    """Returns ``(ok, message, plan)``; ``module`` None runs on the CPU."""
    import numpy as np  # noqa: PLC0415
    from tolerances import STATS_RTOL, assert_close_to_reference  # noqa: PLC0415

    from ssd_toolkit.reference import STAT_NAMES, estimate_reference  # noqa: PLC0415

    c, u, n, t = host_inputs(case, rng)
    dev = [to_device(torch, x, case.dtype, case.offset, device) for x in (c, u, n)]
    rounded = [x.cpu().double().numpy() for x in dev]  # the values the kernel sees
    t_arg = torch.from_numpy(np.asarray(t, dtype=np.float64)).to(device) if case.t == "device" else t
    result, plan = launch(torch, ssd_toolkit, module, case, dev, t_arg)
    E, stats = result if case.stats else (result, None)
    E_ref, stats_ref = estimate_reference(*rounded, np.broadcast_to(np.asarray(t, dtype=np.float64), (case.B,)), M)
    if tuple(E.shape) != (case.B, case.N) or E.dtype != dev[0].dtype or E.device != dev[0].device:
        return False, (f"E is {tuple(E.shape)} {E.dtype} on {E.device}, expected ({case.B}, {case.N}) "
                       f"{dev[0].dtype} on {dev[0].device}"), plan
    if case.B == 0:
        return True, "", plan
    if case.N:
        try:
            assert_close_to_reference(E, E_ref, case.dtype)
        except AssertionError as exc:
            return False, str(exc), plan
    if stats is not None:
        rtol = STATS_RTOL[case.dtype]
        for name in STAT_NAMES:
            got, ref = stats[name].cpu().numpy(), stats_ref[name]
            atol = rtol * stats_ref["eps_cond_norm"] if name == "eps_tilde_norm" else 0.0
            if not np.all(np.abs(got - ref) <= rtol * np.abs(ref) + atol):
                return False, f"stats {name}: got {got}, reference {ref}", plan
    return True, "", plan


def canary(torch, module):
    """One launch reading and writing 4 x past its arrays (memcheck must report it)."""
    arrays = [torch.zeros(1024, dtype=torch.float32, device="cuda") for _ in range(4)]
    stream = torch.cuda.current_stream().cuda_stream
    try:
        module.estimate_cuda(*(a.data_ptr() for a in arrays), 0, 100.0, 0, 1, 4096, "float32", M, stream)
    except TypeError as exc:
        print(f"sanitize_driver --canary: the raw binding's arguments changed ({exc}); canary not run", file=sys.stderr)
        return 2
    torch.cuda.synchronize()
    print("sanitize_driver --canary: the out-of-bounds launch returned (memcheck should have reported it)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the cases and exit (no GPU needed)")
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT", help="cases whose name contains TEXT")
    parser.add_argument("--canary", action="store_true", help="one deliberate out-of-bounds launch")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the same cases through the CPU backend (tests this driver without a GPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if os.environ.get("SSD_TOOLKIT_CUDA_SELFTEST") != "strict":
        os.environ["SSD_TOOLKIT_CUDA_SELFTEST"] = "0"  # no launch may fall back to eager ops
    cases = select(CASES, args.only)
    if args.list:
        list_cases(cases)
        return 0
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    sys.path.insert(0, str(ROOT / "tests"))  # tolerances.py, ssd_inputs.py
    import ssd_toolkit  # noqa: PLC0415
    from ssd_toolkit.engine import extension as _extension  # noqa: PLC0415

    if args.device == "cpu":
        torch.set_num_threads(1)
        module = None
    elif not torch.cuda.is_available() or not _extension.has_cuda_kernel():
        print(f"sanitize_driver: needs a CUDA device and a CUDA build (cuda available: {torch.cuda.is_available()}, "
              f"backends: {_extension.backends()})", file=sys.stderr)
        return 2
    else:
        module = _extension.load()
    missing = [f for f in ("cuda_set_path", "cuda_launch_plan") if module is not None and not hasattr(module, f)]
    if missing:
        print(f"sanitize_driver: ssd_toolkit._C lacks {', '.join(missing)} (did the CUDA binding change? see "
              "csrc/cuda/bindings_cuda.cpp)", file=sys.stderr)
        return 2
    if args.canary:
        if module is None:
            parser.error("--canary: needs --device cuda")
        return canary(torch, module)
    rng = np.random.default_rng(args.seed)
    warnings.filterwarnings("ignore", message=".*one element per sample")  # f32-n1 on purpose
    failures, plans = [], {}
    start = time.perf_counter()
    for case in cases:
        t0 = time.perf_counter()
        try:
            ok, message, plan = run_case(torch, ssd_toolkit, module, case, rng, args.device)
        except Exception as exc:  # noqa: BLE001 - report every case, then fail
            ok, message, plan = False, f"{type(exc).__name__}: {exc}", "?"
        plans.setdefault(" ".join(w for w in plan.split() if not w.startswith("threads=")), []).append(case.name)
        print(f"{'ok  ' if ok else 'FAIL'} {case.name:<22} {case.dtype:<9} [{case.B}, {case.N}] {case.path:<10} "
              f"{plan:<48} {time.perf_counter() - t0:6.2f} s{'  ' + message if message else ''}", flush=True)
        if not ok:
            failures.append(case.name)
            if "CUDA" in message or "cuda" in message:  # a sticky device error fails every later call
                print("sanitize_driver: stopping after a CUDA error", flush=True)
                break
    print(f"launch plans covered ({len(plans)}):")
    for plan, names in sorted(plans.items()):
        print(f"  {plan:<52} {', '.join(names)}")
    print(f"sanitize_driver: {len(cases)} cases, {len(cases) - len(failures)} ok, {len(failures)} failed"
          f"{' (' + ', '.join(failures) + ')' if failures else ''}; {time.perf_counter() - start:.1f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
