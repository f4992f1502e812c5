"""Stacked avatars against sequential ones: avatar-steps per second and peak memory, K = 1, 2, 4, 8.

For each K, K avatar trainers (their own prompt, seed, field and random streams, batch 1
camera each, on ONE set of networks) are stepped two ways:

- stacked: ``avatar.batch.runner.stacked_step`` - every avatar renders, then ONE ControlNet + UNet call
  on the K avatars' stacked inputs, then each avatar's estimator, backward and Adam step
  (what ``ssd-toolkit avatar-batch`` runs);
- sequential: ``Trainer.step_once`` of each avatar in turn (K separate network calls; what
  K ``avatar`` runs of one process each would do, without their K model loads).

avatar-steps/s = K / (seconds per round of K steps); speedup = stacked / sequential.
The two modes' rounds alternate (same process, same networks, same avatars' settings), so
a change of machine load hits both alike. Peak memory: CUDA ``max_memory_allocated`` over
each mode's rounds; on the CPU each (K, mode) runs again in a process of its own
for its RSS high-water mark during the rounds and the rise over the RSS before them.

Sizes: ``--size tiny`` (the ``--tiny`` random networks and avatar settings; CPU numbers in
bench/results/avatar_batch_cpu.*) and ``--size sd15`` (random SD 1.5-size networks from
bench_avatar.py, 64x64 latents, 64 samples per ray: the GPU measurement; the issue's goal on an
H100 is K = 8 stacked at >= 4x the throughput of 8 sequential)::

    python bench/bench_avatar_batch.py --size tiny --device cpu --threads 1
    python bench/bench_avatar_batch.py --size sd15            # cuda, fp16
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import gpu_info, gpu_slug, machine_info, torch_device, write_results

MODES = ("sequential", "stacked")
PROMPTS = ("a wooden robot", "a knight in armor", "a clown", "an astronaut", "a samurai", "a chef", "a dancer",
           "a firefighter")  # fmt: skip


def build_models(size, device, dtype, root: Path):
    """The shared networks: the --tiny pipeline, or random SD 1.5-size ones."""
    if size == "sd15":
        from bench_avatar import build_sd15_guidance  # noqa: PLC0415

        return build_sd15_guidance(device, dtype)[0].models
    from ssd_toolkit.integrations.avatar.quiet import quiet_third_party  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.models import load_models  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.tiny import build_tiny_pipeline  # noqa: PLC0415

    with quiet_third_party():  # no per-network "kept in float32: []" warnings, no saving/loading bars
        path = build_tiny_pipeline(root / "models", seed=0)
        return load_models(str(path), str(path / "controlnet"), device=device,
                           dtype="float16" if dtype == torch.float16 else "float32")


def build_trainers(models, k, size, device, amp, body_dir):
    """K avatars on ``models``: own prompt, seed, field, optimizer and guidance streams."""
    from ssd_toolkit.integrations.avatar import config  # noqa: PLC0415
    from ssd_toolkit.integrations.avatar.run import load_body, load_guidance_for  # noqa: PLC0415
    from ssd_toolkit.integrations.avatar.train import Trainer  # noqa: PLC0415

    trainers = []
    for i in range(k):
        extra = {key: value for key, value in config.TINY_DEFAULTS.items()
                 if key in ("latent_size", "samples_per_ray", "field_resolutions", "field_features", "field_hidden", "lr")
                 } if size == "tiny" else {}  # fmt: skip
        cfg = config.AvatarConfig(prompt=PROMPTS[i % len(PROMPTS)], body=str(body_dir), seed=i, batch=1, steps=30000,
                                  **extra)
        guidance = load_guidance_for(cfg, device, amp, models)  # as avatar-batch builds it (SSD, M = 200)
        trainers.append(Trainer(cfg, guidance, load_body(cfg), device, amp))
    return trainers


def _round(trainers, mode):
    """One round of K avatar steps, stacked or one avatar after the other."""
    from ssd_toolkit.integrations.avatar.batch.runner import stacked_step  # noqa: PLC0415

    if mode == "stacked":
        bad = [o for o in stacked_step(trainers) if isinstance(o, Exception)]
        if bad:
            raise bad[0]
    else:
        for trainer in trainers:
            trainer.step_once()


def measure_pair(models, k, args, device, dtype, body_dir):
    """Both modes of one K, their rounds interleaved (load drift hits both alike): two rows
    with seconds per round of K avatar steps (median), avatar-steps/s and, on CUDA, the peak
    memory of each mode's rounds."""
    amp = dtype == torch.float16
    sets = {mode: build_trainers(models, k, args.size, device, amp, body_dir) for mode in MODES}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = {mode: [] for mode in MODES}
    peaks = dict.fromkeys(MODES, 0)
    for i in range(args.warmup + args.repeats):
        for mode in MODES:
            if device.type == "cuda":
                sync()
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            _round(sets[mode], mode)
            sync()
            if i >= args.warmup:
                times[mode].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[mode] = max(peaks[mode], torch.cuda.max_memory_allocated(device))
    rows = []
    for mode in MODES:
        median = statistics.median(times[mode])
        row = {"K": k, "mode": mode, "round_ms": 1e3 * median, "round_min_ms": 1e3 * min(times[mode]),
               "avatar_steps_per_s": k / median}
        if device.type == "cuda":
            row["peak_mib"] = peaks[mode] / 2**20
        rows.append(row)
    return rows


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def peak_rss_of(models, k, mode, args, device, dtype, body_dir):
    """CPU child: peak RSS during ``warmup + 3`` rounds of one mode (MiB) and its rise over
    the RSS before them (the K avatars' working memory; torch and the networks are in both).

    Linux's high-water mark is reset before the rounds (``5`` into ``/proc/self/clear_refs``),
    so the setup's own peak (library imports, network build) does not hide theirs.
    """
    trainers = build_trainers(models, k, args.size, device, dtype == torch.float16, body_dir)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    for _ in range(args.warmup + 3):
        _round(trainers, mode)
    peak = _status_kib("VmHWM")
    return {"peak_mib": peak / 1024, "rise_mib": (peak - before) / 1024}


def _one(args, device, dtype):
    """``--one K MODE``: build everything in this process, print the row as JSON."""
    from ssd_toolkit.integrations.avatar.body.synthetic import write_synthetic_smpl  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_smpl(root / "body")
        models = build_models(args.size, device, dtype, root)
        print(json.dumps(peak_rss_of(models, int(args.one[0]), args.one[1], args, device, dtype, root / "body")))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--K", type=int, nargs="+", default=[1, 2, 4, 8], dest="ks")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per measurement (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--name", default=None, help="results file stem (default avatar_batch_<device>[_sd15])")
    parser.add_argument("--out-dir", default=None, help="where the results files go (default bench/results)")
    parser.add_argument("--one", nargs=2, metavar=("K", "MODE"), help=argparse.SUPPRESS)  # a CPU child process
    args = parser.parse_args(argv)
    if min(args.ks) < 1 or args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error(f"--K, --repeats, --warmup, --threads: expected K, repeats, threads >= 1 and warmup >= 0, got "
                     f"{args.ks}, {args.repeats}, {args.warmup}, {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch_device(parser, args.device, torch)
    if args.one:
        return _one(args, device, dtype)
    machine = machine_info()
    machine["loadavg_start"] = machine["loadavg_1_5_15"]
    if device.type == "cuda":
        machine.update(gpu_info(torch))
    started = time.perf_counter()
    rows = _rows(args, device, dtype)
    by_key = {(r["K"], r["mode"]): r for r in rows}
    for r in rows:
        r["speedup_vs_sequential"] = r["avatar_steps_per_s"] / by_key[(r["K"], "sequential")]["avatar_steps_per_s"]
    machine.update(machine_info())
    machine["loadavg_start"] = machine.get("loadavg_start")
    columns = [("K", "K", "{}"), ("mode", "mode", "{}"), ("round_ms", "ms per round of K steps", "{:.1f}"),
               ("avatar_steps_per_s", "avatar-steps/s", "{:.2f}"), ("speedup_vs_sequential", "x sequential", "{:.2f}"),
               ("peak_mib", "peak MiB", "{:.0f}")]  # fmt: skip
    if device.type == "cpu":
        columns.append(("rise_mib", "rise over pre-step RSS MiB", "{:.1f}"))
    params = {"size": args.size, "device": str(device), "dtype": str(dtype), "K": args.ks, "repeats": args.repeats,
              "warmup": args.warmup, "torch_threads": args.threads or torch.get_num_threads(),
              "cameras_per_avatar": 1, "wall_s": round(time.perf_counter() - started, 1)}
    notes = ("Same networks for both modes, rounds alternating; sequential = each avatar's Trainer.step_once in "
             "turn, stacked = avatar.batch.runner.stacked_step (one ControlNet + UNet call). Peak memory: "
             + ("each (K, mode) in its own process, the RSS high-water mark over its rounds (reset before them via "
                "/proc/self/clear_refs; includes torch and the networks) and its rise over the RSS before them."
                if device.type == "cpu"
                else "torch.cuda.max_memory_allocated during each mode's rounds."))
    suffix = "" if args.size == "tiny" else f"_{args.size}"
    default = f"avatar_batch_{gpu_slug(machine['gpu'])}{suffix}" if device.type == "cuda" else f"avatar_batch_cpu{suffix}"
    print(write_results(args.name or default, rows, columns, params, machine, notes, out_dir=args.out_dir))
    return 0


def _rows(args, device, dtype):
    from ssd_toolkit.integrations.avatar.body.synthetic import write_synthetic_smpl  # noqa: PLC0415

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_smpl(root / "body")
        models = build_models(args.size, device, dtype, root)
        for k in args.ks:
            rows += measure_pair(models, k, args, device, dtype, root / "body")
            print(rows[-2:], file=sys.stderr)
    if device.type == "cpu":  # max RSS only grows: each (K, mode) in a process of its own
        base = [sys.executable, str(Path(__file__).resolve()), "--size", args.size, "--device", "cpu", "--warmup",
                str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else [])
        for row in rows:
            proc = subprocess.run([*base, "--one", str(row["K"]), row["mode"]], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"bench_avatar_batch: K={row['K']} {row['mode']} failed:\n{proc.stderr[-2000:]}")
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


if __name__ == "__main__":
    sys.exit(main())
