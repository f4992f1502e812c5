"""The torch route against its targets (issue 30), candidates interleaved in one process.

- eager: one ``ssd_toolkit.estimate`` call on torch CPU tensors at [1, 4, 64, 64] float32
  against the same call on NumPy arrays holding the same data (target <= 1.3x);
- bare compiled: ``torch.compile(fullgraph=True)`` of that call against the eager call (target
  <= 1.8x; any compiled call has a fixed cost of tens of microseconds);
- SDS step: an SDS-like training step at [8, 4, 64, 64] (noising, a stand-in denoiser of a few
  elementwise ops, ``estimate``, ``get_weighting("sds")``, ``sds_loss`` and its backward),
  fullgraph-compiled against eager (target <= 0.8x).

Each round times every candidate for ``--calls`` calls in turn; the table reports the medians
of the rounds and of the per-round ratios, for the process's CPU time (which a loaded machine
inflates least) and for wall time, with the load before and after.

    python bench/bench_torch_native.py [--rounds 15] [--calls 200] [--name torch_native_cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, write_results  # noqa: E402

import ssd_toolkit  # noqa: E402
from ssd_toolkit.frameworks.torch.op import op_status  # noqa: E402

M = 200.0
COLUMNS = [
    ("comparison", "comparison", "{}"),
    ("cpu_candidate_us", "candidate, CPU us", "{:.1f}"),
    ("cpu_baseline_us", "baseline, CPU us", "{:.1f}"),
    ("cpu_ratio", "ratio, CPU time", "{:.2f}"),
    ("wall_ratio", "ratio, wall time", "{:.2f}"),
    ("target", "target", "{}"),
]


def interleaved(candidates, rounds, calls):
    """``{clock: {name: [seconds per call, one per round]}}`` for the process's CPU time (all its
    threads; what a loaded machine does not inflate) and wall time; each round runs every
    candidate in turn."""
    for fn in candidates.values():  # warm-up (compilation included)
        for _ in range(5):
            fn()
    times = {"cpu": {name: [] for name in candidates}, "wall": {name: [] for name in candidates}}
    for _ in range(rounds):
        for name, fn in candidates.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                fn()
            times["cpu"][name].append((time.process_time() - cpu) / calls)
            times["wall"][name].append((time.perf_counter() - wall) / calls)
    return times


def row(times, candidate, baseline, label, target):
    out = {"comparison": label, "target": target}
    for clock in ("cpu", "wall"):
        ratios = [c / b for c, b in zip(times[clock][candidate], times[clock][baseline])]
        out[f"{clock}_candidate_us"] = statistics.median(times[clock][candidate]) * 1e6
        out[f"{clock}_baseline_us"] = statistics.median(times[clock][baseline]) * 1e6
        out[f"{clock}_ratio"] = statistics.median(ratios)
    return out


def sds_step_factory(shape):
    abar = torch.as_tensor(ssd_toolkit.stable_diffusion_schedule().alphas_cumprod, dtype=torch.float32)
    weighting = ssd_toolkit.get_weighting("sds")

    def step(latents, noise, t):
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        eps_cond = 0.9 * noisy + 0.1 * torch.tanh(noisy)  # a stand-in denoiser: a few elementwise ops
        eps_uncond = 0.8 * noisy - 0.05
        g = ssd_toolkit.estimate(eps_cond.detach(), eps_uncond.detach(), noise, t, M)
        w = weighting(t, abar).view(-1, 1, 1, 1)
        return ssd_toolkit.sds_loss(latents, w * g)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="torch_native_local")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)

    small = [rng.standard_normal((1, 4, 64, 64)).astype(np.float32) for _ in range(3)]
    small_t = np.array([150])
    tensors = [torch.from_numpy(x) for x in small]
    t_tensor = torch.from_numpy(small_t)
    compiled_call = torch.compile(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M), fullgraph=True)
    calls = interleaved({
        "numpy": lambda: ssd_toolkit.estimate(*small, small_t, M),
        "torch eager": lambda: ssd_toolkit.estimate(*tensors, t_tensor, M),
        "torch compiled": lambda: compiled_call(*tensors, t_tensor),
    }, args.rounds, args.calls)

    shape = (8, 4, 64, 64)
    step = sds_step_factory(shape)
    compiled_step = torch.compile(step, fullgraph=True)
    latents = torch.zeros(shape, requires_grad=True)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([50, 150, 250, 350, 450, 650, 850, 950])

    def train(fn):
        def once():
            fn(latents, noise, t).backward()
            latents.grad = None
        return once

    steps = interleaved({"eager step": train(step), "compiled step": train(compiled_step)},
                        args.rounds, max(args.calls // 10, 5))
    rows = [
        row(calls, "torch eager", "numpy", "eager torch CPU call vs NumPy call, [1,4,64,64] fp32", "<= 1.3"),
        row(calls, "torch compiled", "torch eager", "bare compiled call vs eager, [1,4,64,64] fp32", "<= 1.8"),
        row(steps, "compiled step", "eager step", "fullgraph-compiled SDS step vs eager, [8,4,64,64] fp32", "<= 0.8"),
    ]
    load_after = os.getloadavg()
    for r in rows:
        print(f"{r['comparison']}: CPU {r['cpu_candidate_us']:.1f} us vs {r['cpu_baseline_us']:.1f} us, ratio "
              f"{r['cpu_ratio']:.2f}; wall ratio {r['wall_ratio']:.2f} (target {r['target']})")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; torch threads {args.threads}")
    machine = machine_info()
    machine["loadavg_start"] = list(load_before)
    params = {"rounds": args.rounds, "calls": args.calls, "torch_threads": args.threads, "M": M,
              "op_registered_from_cpp": op_status()[0], "torch": torch.__version__}
    write_results(args.name, rows, COLUMNS, params, machine,
                  notes="Ratios are medians of per-round ratios (each round runs every candidate in turn); "
                        "CPU time is the process's, all threads.")


if __name__ == "__main__":
    main()
