"""Shared benchmark helpers: inputs, timing, copy bandwidth, machine info, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "tests"))
from ssd_inputs import make_inputs  # noqa: E402,F401 - the input builder shared with the tests


def mixed_timesteps(B, M=500.0):
    """B timesteps spread over [0, 999]: about half of them at or below M."""
    return np.linspace(0.0, 999.0, B) if B > 1 else np.array([M / 2])


def median_time(fn, warmup=2, repeats=7, sync=None):
    """Median and minimum seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    Args:
        fn: the call to time.
        warmup: untimed runs first.
        repeats: timed runs.
        sync: called after each run before stopping the clock (e.g. a device synchronise).

    Returns:
        ``{"median_s", "min_s", "repeats"}``.
    """
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def copy_bandwidth(nbytes, repeats=9, threads=1):
    """GB/s of a copy between two ``nbytes`` buffers, counting 2 x nbytes moved (one read
    and one write of the buffer) per copy: ``numpy.copyto`` (one thread) for
    ``threads=1``, else torch's ``Tensor.copy_`` on ``threads`` intra-op threads (a
    persistent pool, so small buffers are not charged a thread start)."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    if threads == 1:
        timing = median_time(lambda: np.copyto(dst, src), warmup=2, repeats=repeats)
    else:
        import torch  # noqa: PLC0415 - only the multi-threaded baseline needs it

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        tsrc, tdst = torch.from_numpy(src), torch.from_numpy(dst)
        try:
            timing = median_time(lambda: tdst.copy_(tsrc), warmup=2, repeats=repeats)
        finally:
            torch.set_num_threads(previous)
    return 2 * nbytes / timing["median_s"] / 1e9


def machine_info():
    """CPU model, core count, load average, library versions, git commit."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": model,
        "cores": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "git_commit": git_commit(),
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        import torch  # noqa: PLC0415

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def gpu_info(torch):
    """Name, compute capability, SMs, L2, memory, driver and CUDA version of device 0."""
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.split("\n")[0].strip() or "unknown"
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


def torch_device(parser, name, torch):
    """``(device, dtype)`` for a ``--device`` value: fp16 on CUDA, fp32 elsewhere; a bad
    name or an absent GPU is a one-line ``parser.error``."""
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device: expected a torch device such as cuda or cpu, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False; use --device cpu")
    return device, (torch.float16 if device.type == "cuda" else torch.float32)


def git_commit():
    """Short commit of the checkout (``+dirty-csrc`` when csrc/ differs from it). A copy of
    the tree without .git (the GPU machine's) reports ``$SSD_GIT_COMMIT`` instead."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "csrc"], cwd=ROOT).returncode != 0
            return out.stdout.strip() + ("+dirty-csrc" if dirty else "")
    except OSError:
        pass
    return os.environ.get("SSD_GIT_COMMIT") or "unknown"


def gpu_slug(name):
    """File-name form of a device name: "NVIDIA H100 80GB HBM3" -> "nvidia_h100_80gb_hbm3"."""
    return "_".join("".join(ch if ch.isalnum() else " " for ch in name.lower()).split()) or "unknown"


def markdown_table(rows, columns):
    """A markdown table of ``rows`` (dicts) with ``columns`` as ``(key, header, format)``."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[k]) for k, _, fmt in columns) + " |")
    return "\n".join(lines)


def write_results(name, rows, columns, params, machine, notes="", out_dir=None):
    """Writes ``<out_dir>/<name>.json`` (everything) and ``<out_dir>/<name>.md`` (the table);
    ``out_dir`` defaults to bench/results.

    Returns:
        The markdown text.
    """
    out_dir = Path(out_dir) if out_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(
        json.dumps({"machine": machine, "params": params, "rows": rows, "notes": notes}, indent=2) + "\n"
    )
    header = (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, load average (1/5/15 min) "
        f"{machine.get('loadavg_start', '?')} at the start, {machine['loadavg_1_5_15']} at the end; "
        f"commit {machine['git_commit']}; {machine['utc']} UTC.\n"
    )
    if "gpu" in machine:
        header += f"GPU: {machine['gpu']}, driver {machine.get('driver', '?')}, CUDA {machine.get('torch_cuda', '?')}.\n"
    header += f"Parameters: {json.dumps(params)}\n"
    text = header + "\n" + markdown_table(rows, columns) + "\n" + (f"\n{notes}\n" if notes else "")
    (out_dir / f"{name}.md").write_text(text)
    return text
