"""``ssd-toolkit avatar-batch JOBS --out DIR``: many avatars, one model load, one network call per step.

JOBS is a text file of prompts (one per line) or a JSON/YAML list of prompts or of
per-avatar settings (any ``avatar`` setting, plus ``name``). Flags set every job's
defaults; a job's own settings win. Each job trains into DIR/<name> and writes exactly the
files of ``ssd-toolkit avatar``; at most --max-concurrent avatars train together, stacked
into one ControlNet + UNet call per step, the rest wait in a queue. Rerunning the command
skips finished jobs and resumes the others from their checkpoints.

Under torchrun (``torchrun --nproc_per_node=N -m ssd_toolkit.cli avatar-batch ...``) the
jobs are shared out over the ranks, each on cuda:LOCAL_RANK; rank 0 writes DIR/summary.json.
Exit codes: 0 every job done or skipped, 1 a job could not start, 3 a job stopped on
non-finite values, 2 a user error (one line), 130 interrupted, 143 terminated (SIGTERM).
"""

from __future__ import annotations

import sys

from ssd_toolkit.cli_args import as_command_error, integer, plain_text, require
from ssd_toolkit.integrations.guidance.prompts import one_line_prompt_warnings

from .. import cli as avatar_cli

DEFAULT_MAX_CONCURRENT = 4
EXIT_FAILED = 1
FLAGS = avatar_cli.FLAGS | {"jobs": "JOBS", "out": "--out"}


def register(subparsers):
    parser = subparsers.add_parser(
        "avatar-batch",
        help="train many avatars on one model load (stacked network calls; torchrun shards them over GPUs)",
        description=plain_text(__doc__),
    )
    parser.add_argument("jobs", metavar="JOBS", help="text file of prompts, or JSON/YAML list of per-avatar settings")
    parser.add_argument("--out", required=True, help="batch directory: one DIR/<job> per avatar, DIR/summary.json")
    parser.add_argument("--max-concurrent", type=integer(1), default=DEFAULT_MAX_CONCURRENT,
                        help=f"avatars trained together per process (default: {DEFAULT_MAX_CONCURRENT})")
    avatar_cli.add_arguments(parser, exclude=("out", "resume"))
    parser.set_defaults(func=run_command)


def _one_line(exc):
    return as_command_error(exc, FLAGS)


def _prepare_jobs(args):
    """Read and resolve every job (all ranks alike, before any process group)."""
    from .jobs import read_jobs, resolve_jobs  # noqa: PLC0415
    from ..outdir import check_output_location  # noqa: PLC0415

    out = check_output_location(args.out)
    jobs = read_jobs(args.jobs)
    base = avatar_cli.settings_from_args(args)
    tiny_dir = out / "tiny_assets"
    tiny = {"sd_model": str(tiny_dir / "models"), "controlnet": str(tiny_dir / "models" / "controlnet"),
            "body": str(tiny_dir / "body")}  # fmt: skip
    return out, resolve_jobs(jobs, base, args.config, out, tiny), tiny


def _build_tiny_assets(out, jobs, tiny, ranks):
    """Rank 0 builds the --tiny networks and body once into DIR/tiny_assets; the others wait."""
    from . import ranks as dist  # noqa: PLC0415
    from ..config import AvatarConfig  # noqa: PLC0415
    from ..run import prepare_tiny_assets  # noqa: PLC0415

    needed = any(getattr(job.cfg, key) == tiny[key] for job in jobs for key in tiny)
    if ranks.rank == 0 and needed:
        out.mkdir(parents=True, exist_ok=True)
        prepare_tiny_assets(AvatarConfig(tiny=True, sd_model="", controlnet="", body=""), out)
    dist.barrier(ranks)


def _check_job_inputs(jobs):
    from ..run import check_inputs  # noqa: PLC0415

    for job in jobs:
        try:
            check_inputs(job.cfg, job.resume)
        except (ValueError, FileNotFoundError) as exc:
            raise _one_line(type(exc)(f"{str(exc).splitlines()[0]} (job {job.name!r})")) from exc


def run_command(args):
    """``_run_command`` with Ctrl-C and SIGTERM as one line and an exit code (130, 143)."""
    with avatar_cli.stop_on_sigterm():
        try:
            checked = checked_jobs(args)  # before any heavy import: a mistake is refused at once
            from ..quiet import quiet_third_party  # noqa: PLC0415

            with quiet_third_party(args.verbose), one_line_prompt_warnings("ssd-toolkit avatar-batch"):
                return _run_command(args, *checked)  # prompt truncation above: one stderr line
        except KeyboardInterrupt as exc:
            return avatar_cli.interrupted("ssd-toolkit avatar-batch", exc)


def checked_jobs(args):
    """``(ranks, out, jobs, tiny)``: the ranks, the output location, the jobs and their settings
    and the optional dependencies checked, and an ignored CFG scale warned about, importing
    nothing heavy (no torch, diffusers or transformers)."""
    from . import ranks as dist  # noqa: PLC0415

    require(*avatar_cli.NEEDS)
    try:
        ranks = dist.ranks_from_env()
        out, jobs, tiny = _prepare_jobs(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        if isinstance(exc, ModuleNotFoundError):
            raise
        raise _one_line(exc) from exc
    warned = set()
    for job in jobs if ranks.rank == 0 else ():  # a CFG scale the user gave: the job's own, else the flag
        own = "guidance_scale" in job.settings
        option = f"job {job.name!r}: guidance_scale" if own else "--guidance-scale"
        if (own or "guidance_scale" in vars(args)) and (option, job.cfg.estimator) not in warned:
            warned.add((option, job.cfg.estimator))  # the flag: one line per estimator, not per job
            avatar_cli.warn_if_scale_ignored("ssd-toolkit avatar-batch", job.cfg.estimator, job.cfg.guidance_scale, option)
    return ranks, out, jobs, tiny


def _run_command(args, ranks, out, jobs, tiny):
    """Load the networks once, train this rank's share of the checked jobs, write the summary."""
    from . import ranks as dist  # noqa: PLC0415

    progress = not args.no_progress
    if not progress:
        avatar_cli.quiet_hub_progress_bars()
    from ..run import pick_device  # noqa: PLC0415

    try:
        device, amp = pick_device(jobs[0].cfg)
        dist.init(ranks, device.type == "cuda")
        _build_tiny_assets(out, jobs, tiny, ranks)
        _check_job_inputs(jobs)
    except (ValueError, ImportError) as exc:
        if isinstance(exc, ModuleNotFoundError):
            raise
        dist.finish(ranks)
        raise _one_line(exc) from exc
    except OSError as exc:
        dist.finish(ranks)
        if exc.errno in avatar_cli.DISK_ERRNOS:
            raise avatar_cli.disk_error(exc) from exc
        raise
    try:
        results = _train_shard(jobs, ranks, device, amp, args.max_concurrent, progress)
    except OSError as exc:
        if exc.errno in avatar_cli.DISK_ERRNOS:
            raise avatar_cli.disk_error(exc) from exc
        raise
    gathered = dist.gather(ranks, results)
    dist.finish(ranks)
    if gathered is None:
        return _exit_code(results)
    path = dist.write_summary(out, args.jobs, gathered, [j.name for j in jobs], ranks, args.max_concurrent)
    counts = sorted(dist.status_counts(gathered).items())
    print(f"avatar-batch: {', '.join(f'{n} {s}' for s, n in counts)}; summary in {path}")
    return _exit_code(gathered)


def _train_shard(jobs, ranks, device, amp, max_concurrent, progress):
    from .runner import train_jobs  # noqa: PLC0415
    from ssd_toolkit.integrations.guidance.models import load_models  # noqa: PLC0415

    mine = ranks.shard(jobs)
    prefix = f"[rank {ranks.rank}] " if ranks.distributed else ""

    def log(message):
        print(prefix + message, file=sys.stderr, flush=True)

    todo = [job for job in mine if not job.finished]
    models = None
    if todo:
        cfg = todo[0].cfg
        models = load_models(cfg.sd_model, cfg.controlnet or None, device=device, dtype="float16" if amp else "float32")
    return train_jobs(mine, models, max_concurrent, progress, log, ranks.rank)


def _exit_code(results):
    from .runner import FAILED, STOPPED  # noqa: PLC0415

    statuses = {r.status for r in results}
    if FAILED in statuses:
        return EXIT_FAILED
    if STOPPED in statuses:
        return avatar_cli.EXIT_NON_FINITE
    return 0

