"""Every route to the CUDA kernel on one GPU: parity with the CPU emulation, and timings.

Routes (each the same kernels, so each must give the emulation's bits, 0 ulp: docs/kernels.md
"Bits", the policy `test_gpu_agrees_with_the_cpu_emulation` applies to the torch route):
  * torch     ``ssd_toolkit.estimate`` on torch CUDA tensors (through the C++ op where its library
              is built, else the Python op: the status says which);
  * torch_op  ``torch.ops.ssd_toolkit.estimate`` of the C++ op library (csrc/torch/), when built;
  * python_glue  the Python op's CUDA glue (frameworks/torch/cuda.py ``launch_torch``, its
              first-use self-test included), called directly: the route where the library is not built;
  * jax       ``ssd_toolkit.estimate`` on JAX GPU arrays (the JAX CUDA handler, csrc/jax/);
  * cupy      ``ssd_toolkit.estimate`` on CuPy arrays (__cuda_array_interface__).
Each result is also checked against the float64 reference with tests/tolerances.py. A route
whose build or package is missing is reported as such; one that should be there on the GPU
image (the torch op when its builder is in the tree, the JAX handler when JAX sees a GPU)
and is not, fails.

    python bench/bench_routes.py [--json FILE] [--markdown FILE]   # on a GPU (scripts/gpu_check.sh step 5)
    python bench/bench_routes.py --dry-run                         # anywhere: routes, shapes, packages

Timings: the whole Python call, ``--calls`` back to back then one device synchronise, median
of ``--repeats``, at [8,4,64,64] (launch-bound) and [64,4,128,128] (bandwidth) float32.
Prints one ``routes: ...`` summary line last. Exit 1 when a route fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

M = 500.0
ROUTES = ("torch", "torch_op", "python_glue", "jax", "cupy")
PARITY_SHAPES = ((5, 97), (8, 4 * 64 * 64), (2, 3 * 512 * 512))  # scalar; vector + clusters; split
PARITY_DTYPES = ("float16", "bfloat16", "float32", "float64")
TIMING_SHAPES = ((8, 4, 64, 64), (64, 4, 128, 128))
BITS = {"float16": "int16", "bfloat16": "int16", "float32": "int32", "float64": "int64"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    p.add_argument("--calls", type=int, default=20, help="calls per timed loop")
    p.add_argument("--repeats", type=int, default=5, help="timed loops (the median is reported)")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--markdown", default=None, help="write the tables here")
    p.add_argument("--dry-run", action="store_true", help="no GPU: list the routes, shapes and packages, then exit")
    args = p.parse_args(argv)
    for key in ("calls", "repeats"):
        if getattr(args, key) < 1:
            p.error(f"--{key}: expected a positive integer, got {getattr(args, key)}")
    return args


# ------------------------------------------------------------------------------ routes
class Route:
    """One way to the kernel: ``prepare(host tensors, t)`` -> a no-argument call returning
    the result, ``to_host(result)`` -> a CPU torch tensor, ``block(result)`` waits for it."""

    name = ""
    dtypes = PARITY_DTYPES

    def __init__(self, torch):
        import ssd_toolkit  # noqa: PLC0415

        self.torch, self.ssd = torch, ssd_toolkit

    def available(self):
        """``(usable, reason, required)``: required routes that are not usable fail the run."""
        raise NotImplementedError


class TorchRoute(Route):
    name = "torch"

    def available(self):
        from ssd_toolkit.frameworks.torch import op  # noqa: PLC0415

        self.label = "through the C++ op" if op.op_status()[0] else "through the Python op"
        return self.torch.cuda.is_available(), "torch sees no CUDA device", True

    def prepare(self, host, t):
        dev = [x.cuda() for x in host]
        return lambda: self.ssd.estimate(*dev, t, M)

    def to_host(self, result):
        return result.cpu()

    def block(self, result):
        self.torch.cuda.synchronize()


class TorchOpRoute(TorchRoute):
    name = "torch_op"

    def available(self):
        builder = ROOT / "ssd_toolkit" / "engine" / "torch_op_build.py"
        if not builder.exists():
            return False, "no C++ torch op in this tree", False
        from ssd_toolkit.engine import torch_op_build  # noqa: PLC0415

        return torch_op_build.load(), torch_op_build.reason(), True

    def prepare(self, host, t):
        B = host[0].shape[0]
        dev = [x.cuda().reshape(B, -1) for x in host]
        t_dev = self.torch.as_tensor(t, dtype=self.torch.float64).cuda()
        op = self.torch.ops.ssd_toolkit.estimate
        return lambda: op(*dev, t_dev, 0.0, M, False)[0]


class PythonGlueRoute(TorchRoute):
    name = "python_glue"

    def available(self):
        return self.torch.cuda.is_available(), "torch sees no CUDA device", True

    def prepare(self, host, t):
        from ssd_toolkit.frameworks.torch.cuda import launch_torch  # noqa: PLC0415

        B = host[0].shape[0]
        N = math.prod(host[0].shape[1:])
        dev = [x.cuda().contiguous() for x in host]
        t_dev = self.torch.as_tensor(t, dtype=self.torch.float64).cuda()

        def call():
            out = self.torch.empty_like(dev[0])
            launch_torch(*dev, out, t_dev, 0.0, M, None, B, N)
            return out

        return call


class JaxRoute(Route):
    name = "jax"
    dtypes = ("float16", "float32", "float64")

    def available(self):
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("jax") is None:
            return False, "jax is not installed", False
        import jax  # noqa: PLC0415

        jax.config.update("jax_enable_x64", True)
        try:
            self.jax, self.gpu = jax, jax.devices("gpu")[0]
        except RuntimeError:
            return False, "JAX sees no GPU", False
        from ssd_toolkit.frameworks import jax_arrays  # noqa: PLC0415

        ok = jax_arrays.ffi_available("gpu")
        return ok, None if ok else (jax_arrays._ffi.get("cuda_reason") or jax_arrays.ffi_reason() or
                                    "the CUDA handler is not built"), True

    def prepare(self, host, t):
        dev = [self.jax.device_put(x.numpy(), self.gpu) for x in host]
        return lambda: self.ssd.estimate(*dev, t, M)

    def to_host(self, result):
        import numpy as np  # noqa: PLC0415

        return self.torch.from_numpy(np.asarray(result))

    def block(self, result):
        result.block_until_ready()


class CupyRoute(Route):
    name = "cupy"
    dtypes = ("float16", "float32", "float64")

    def available(self):
        try:
            import cupy  # noqa: PLC0415
        except ImportError:
            return False, "cupy is not installed", False
        self.cupy = cupy
        return True, None, True

    def prepare(self, host, t):
        dev = [self.cupy.asarray(x.numpy()) for x in host]
        return lambda: self.ssd.estimate(*dev, t, M)

    def to_host(self, result):
        return self.torch.from_numpy(self.cupy.asnumpy(result))

    def block(self, result):
        self.cupy.cuda.Device().synchronize()


ROUTE_CLASSES = {"torch": TorchRoute, "torch_op": TorchOpRoute, "python_glue": PythonGlueRoute, "jax": JaxRoute,
                 "cupy": CupyRoute}


# ------------------------------------------------------------------------------ checks
def emulated_device(torch):
    """The running GPU as the emulation's pretend device (as test_gpu_agrees_with_the_cpu_emulation)."""
    props = torch.cuda.get_device_properties(0)
    arch = 10 * props.major + props.minor
    return {"major": props.major, "sms": props.multi_processor_count, "binary_version": arch,
            "ptx_version": arch if props.major < 9 else 90, "max_cluster": 16 if props.major >= 9 else 1}


def host_inputs(torch, shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64).to(getattr(torch, dtype)) for _ in range(3)]


def expected(torch, emu, device, shape, dtype, t):
    """``(host inputs, the emulation's output, the float64 reference)`` of one case."""
    import numpy as np  # noqa: PLC0415
    from ssd_toolkit.reference import estimate_reference  # noqa: PLC0415

    B, N = shape
    host = host_inputs(torch, shape, dtype, seed=B * N)
    out = torch.empty((B, N), dtype=host[0].dtype)
    t64 = np.ascontiguousarray(t, dtype=np.float64)
    emu.estimate(*(x.data_ptr() for x in host), out.data_ptr(), t64.ctypes.data, 0.0, 0, B, N, dtype, M, "auto", 0,
                 device)
    return host, out, estimate_reference(*(x.double().numpy() for x in host), t64, M)[0]


def parity(torch, emu, device, route, case, t, dtype):
    """One route against the emulation's bits and the float64 reference: a row."""
    from tolerances import assert_close_to_reference  # noqa: PLC0415

    host, out, ref = case
    B, N = out.shape
    got = route.to_host(route.prepare(host, t)()).reshape(B, N)
    bits = getattr(torch, BITS[dtype])
    ulps = (got.view(bits).long() - out.view(bits).long()).abs()
    row = {"route": route.name, "dtype": dtype, "shape": f"{B}x{N}", "plan": emu.plan(N, dtype, True, "auto", 0, device),
           "ulp_max": int(ulps.max()), "ulp_differing": int((ulps > 0).sum())}
    try:
        assert_close_to_reference(got.double().numpy(), ref, dtype, what=f"{route.name} vs reference")
        row["reference"] = "ok"
    except AssertionError as exc:
        row["reference"] = f"FAIL: {str(exc).splitlines()[0]}"
    row["ok"] = row["ulp_max"] == 0 and row["reference"] == "ok"
    return row


def timing(route, host, t, calls, repeats):
    """Median microseconds per call (``calls`` back to back, one synchronise)."""
    fn = route.prepare(host, t)
    for _ in range(3):
        route.block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            result = fn()
        route.block(result)
        times.append((time.perf_counter() - start) * 1e6 / calls)
    return statistics.median(times)


def markdown(status, rows, timings):
    lines = ["| route | status |", "|---|---|"] + [f"| {r} | {s} |" for r, s in status.items()]
    lines += ["", "| route | dtype | shape | plan (emulation) | max ulp vs emulation | elements differing | vs reference |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['route']} | {r['dtype']} | {r['shape']} | {r['plan']} | {r['ulp_max']} | {r['ulp_differing']} | "
              f"{r['reference']} |" for r in rows]
    if timings:
        shapes = sorted({x["shape"] for x in timings}, key=lambda s: math.prod(map(int, s.split("x"))))
        lines += ["", "| route | " + " | ".join(f"us/call at [{s.replace('x', ',')}] float32" for s in shapes) + " |",
                  "|---|" + "---|" * len(shapes)]
        for route in dict.fromkeys(x["route"] for x in timings):
            cells = [next((f"{x['us']:.1f}" for x in timings if x["route"] == route and x["shape"] == s), "-")
                     for s in shapes]
            lines.append(f"| {route} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dry_run(args):
    import importlib.util  # noqa: PLC0415

    print(f"bench_routes dry run: routes {', '.join(args.routes)}")
    for name in args.routes:
        cls = ROUTE_CLASSES[name]
        print(f"  {name:<9} dtypes {', '.join(cls.dtypes)}")
    print(f"  parity shapes {[f'{B}x{N}' for B, N in PARITY_SHAPES]}; timings at "
          f"{['x'.join(map(str, s)) for s in TIMING_SHAPES]} float32, {args.calls} calls x {args.repeats}")
    for package in ("torch", "jax", "cupy"):
        print(f"  {package}: {'installed' if importlib.util.find_spec(package) else 'not installed'}")
    builder = ROOT / "ssd_toolkit" / "engine" / "torch_op_build.py"
    print(f"  torch_op: {'builder in the tree' if builder.exists() else 'no builder in this tree'}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        print("bench_routes: needs a CUDA device (torch.cuda.is_available() is False; --dry-run runs anywhere)",
              file=sys.stderr)
        return 2
    import cuda_emulation_build  # noqa: PLC0415 - tests/ helper

    from common import mixed_timesteps  # noqa: PLC0415

    emu = cuda_emulation_build.load()
    device = emulated_device(torch)
    status, rows, timings, failed, cases = {}, [], [], [], {}
    for name in args.routes:
        route = ROUTE_CLASSES[name](torch)
        try:
            usable, reason, required = route.available()
        except Exception as exc:  # noqa: BLE001 - reported, the other routes still run
            usable, reason, required = False, f"{type(exc).__name__}: {exc}", True
        if not usable:
            status[name] = f"{'FAIL' if required else 'not run'}: {reason}"
            print(f"bench_routes: {name}: {status[name]}", flush=True)
            if required:
                failed.append(name)
            continue
        try:
            for (B, N), dtype in ((s, d) for s in PARITY_SHAPES for d in route.dtypes):
                t = mixed_timesteps(B, M)
                if ((B, N), dtype) not in cases:  # the emulation once per case, for every route
                    cases[(B, N), dtype] = expected(torch, emu, device, (B, N), dtype, t)
                row = parity(torch, emu, device, route, cases[(B, N), dtype], t, dtype)
                rows.append(row)
                print(f"{name:>9} {dtype:>9} {row['shape']:>10}  {row['ulp_max']} ulp ({row['ulp_differing']} "
                      f"differ)  reference {row['reference']}  [{row['plan']}]", flush=True)
            for shape in TIMING_SHAPES:
                host = host_inputs(torch, shape, "float32", seed=1)
                us = timing(route, host, mixed_timesteps(shape[0], M), args.calls, args.repeats)
                timings.append({"route": name, "shape": "x".join(map(str, shape)), "dtype": "float32", "us": us})
                print(f"{name:>9} float32 {'x'.join(map(str, shape)):>14}  {us:8.1f} us/call", flush=True)
        except Exception as exc:  # noqa: BLE001 - one route's crash must not lose the others
            status[name] = f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            failed.append(name)
            print(f"bench_routes: {name}: {status[name]}", flush=True)
            continue
        mine = [r for r in rows if r["route"] == name]
        bad = [r for r in mine if not r["ok"]]
        status[name] = (f"FAIL: {len(bad)} of {len(mine)} cases off the emulation or the reference" if bad else
                        f"0 ulp in all {len(mine)} cases") + (f" ({route.label})" if getattr(route, "label", "") else "")
        if bad:
            failed.append(name)
    text = markdown(status, rows, timings)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(0), "emulated_device": device,
                                               "torch": torch.__version__, "loadavg": os.getloadavg(),
                                               "status": status, "parity": rows, "timings": timings}, indent=1))
    print("\n" + text)
    fp32 = "; ".join(f"{x['route']} {x['us']:.1f}" for x in timings if x["shape"] == "64x4x128x128")
    print("routes: " + "; ".join(f"{r} {s}" for r, s in status.items()) + (f"; us/call at [64,4,128,128] fp32: {fp32}"
                                                                          if fp32 else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
