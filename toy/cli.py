"""``ssd-toolkit toy ...``: the paper's mixture-of-Gaussians experiments.

Arguments are checked when parsed (counts >= 1, finite positive rates, known names) and the
output folder and optional dependencies before anything runs; heavy imports (matplotlib,
scikit-learn, the experiment modules) happen inside the run functions, so
``ssd-toolkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

from ssd_toolkit.cli_args import check_output_dir, comma_list, expected, integer, number, require

EXPERIMENTS = ("trajectories", "drift", "sweep", "statistics", "digits")
# optional modules each experiment imports (all come with the "toy" extra)
NEEDS = {"trajectories": ("matplotlib",), "drift": ("matplotlib",), "sweep": ("matplotlib",), "statistics": ("matplotlib",),
         "digits": ("matplotlib", "sklearn")}  # fmt: skip
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as the avatar commands
# What an avatar run keeps in its --out (docs/avatar.md); the toy never writes these names. Any
# of the first three marks an avatar run (its lock file stays after the run); a config.json
# alone does not (other tools write one too), but is named when it is there.
AVATAR_RUN_FILES = (".lock", "log.jsonl", "checkpoints", "config.json")
# --out names that look like one output file, not the folder of NAME.{png,json,md}
FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".json", ".md")


def check_out(path, flag="--out"):
    """``path`` can hold the toy's outputs: a writable folder (or creatable), not named like a
    figure or data file, and not holding an avatar run. Creates nothing.

    Raises:
        CommandError: one line naming ``flag``, what was expected and what was found.
    """
    check_output_dir(path, flag)
    if not os.path.isdir(path) and os.path.splitext(str(path).rstrip("/"))[1].lower() in FILE_SUFFIXES:
        raise expected(flag, "a folder (each command writes NAME.png, NAME.json and NAME.md into it)",
                       f"{str(path)!r}, a file name")  # fmt: skip
    found = [name for name in AVATAR_RUN_FILES if os.path.lexists(os.path.join(path, name))]
    if set(found) - {"config.json"}:
        raise expected(flag, "a folder that holds no avatar run",
                       f"{str(path)!r}, which holds {', '.join(found)}; choose another {flag}")  # fmt: skip
    return path


def distinct(parse):
    """argparse type: ``parse``'s list, refused when a value repeats (a repeated M or lr would
    be a duplicate column or row, not a second measurement)."""

    def check(text):
        values = parse(text)
        repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if repeated is not None:
            raise argparse.ArgumentTypeError(f"expected distinct values, got {repeated:g} more than once in {text!r}")
        return values

    check.__name__ = parse.__name__
    return check


def _single_blas_thread(func):
    """Run ``func`` with one BLAS thread: the toys' matrices are small, and OpenBLAS threads
    spinning on a shared 2-core machine made a digits step 25-195 ms instead of 5-8 ms."""

    @functools.wraps(func)
    def wrapper(args):
        try:
            from threadpoolctl import threadpool_limits  # noqa: PLC0415 - scikit-learn's dependency
        except ImportError:
            return func(args)
        with threadpool_limits(limits=1, user_api="blas"):
            return func(args)

    return wrapper


def _command(name, func):
    """The command behind ``toy NAME``: checks ``--out`` (and ``--docs``) and the optional
    dependencies before anything runs, one BLAS thread, and Ctrl-C as one line, exit 130."""

    @functools.wraps(func)
    def run(args):
        check_out(args.out)
        if getattr(args, "docs", None):
            check_out(args.docs, "--docs")
        require(*sorted({m for n in (EXPERIMENTS if name == "all" else (name,)) for m in NEEDS[n]}))
        try:
            return _single_blas_thread(func)(args)
        except KeyboardInterrupt:
            print(f"ssd-toolkit toy {name}: interrupted; what {args.out}/ holds may be incomplete", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run


def _done(stem, start, out, detail=""):
    """The one line an experiment prints: its wall time (figure included) and its outputs."""
    detail = f" ({detail})" if detail else ""
    print(f"{stem.split('_')[0]}: {time.perf_counter() - start:.1f} s{detail} -> {out}/{stem}.{{png,json,md}}")


def _trajectories(args):
    from . import trajectories  # noqa: PLC0415

    if args.denoiser == "learned":
        require("torch")
    start = time.perf_counter()
    s = trajectories.run(args.out, args.seed, args.seeds, args.steps, args.lr, args.M, args.weighting,
                         denoiser=args.denoiser, progress=True)  # fmt: skip
    stem = "trajectories" if args.denoiser == "exact" else "trajectories_learned"
    parts = f"the Eq. 3 runs {s['seconds_both_runs']:.1f} s"
    if isinstance(s["denoiser"], dict):
        learned = s["denoiser"]
        parts += ", the denoiser " + ("from the cache" if learned["cached"] else f"trained in {learned['train_seconds']:.0f} s")
    _done(stem, start, args.out, parts)


def _drift(args):
    from . import drift  # noqa: PLC0415

    start = time.perf_counter()
    drift.run(args.out, args.seed, args.M, args.noises)
    _done("drift", start, args.out)


def _sweep(args):
    from . import sweep  # noqa: PLC0415

    start = time.perf_counter()
    sweep.run(args.out, args.seed, args.Ms, args.lrs, args.steps, args.seeds)
    _done("sweep", start, args.out)


def _statistics(args):
    from . import score_statistics  # noqa: PLC0415

    start = time.perf_counter()
    score_statistics.run(args.out, args.seed, args.dim, args.noises, args.num_t)
    _done("statistics", start, args.out)


LONG_RUN_SECONDS = 120  # a digits run expected to take longer says so first


def check_digits_size(per_class, steps):
    """Refuse a ``toy digits`` run whose working set would pass ``digits.MEMORY_LIMIT`` (one line
    naming --per-class), and return a one-line notice when it is expected to run longer than
    ``LONG_RUN_SECONDS`` (None otherwise)."""
    from .digits import MEMORY_LIMIT, cost  # noqa: PLC0415 - NumPy only

    size, seconds = cost(per_class, steps)
    if size > MEMORY_LIMIT:
        most = int(MEMORY_LIMIT // cost(1, steps)[0])
        raise expected("--per-class", f"at most {most} (each image per class needs about {cost(1, steps)[0] / 2**20:.0f} MiB "
                       f"of working memory; the limit is {MEMORY_LIMIT / 2**30:g} GiB)",
                       f"{per_class}, about {size / 2**30:.1f} GiB")  # fmt: skip
    if seconds > LONG_RUN_SECONDS:
        return (f"ssd-toolkit toy digits: expect about {seconds / 60:.0f} min (--per-class {per_class} x --steps {steps}, "
                f"{size / 2**20:.0f} MiB); a progress bar shows on a terminal")  # fmt: skip
    return None


def _digits(args):
    notice = check_digits_size(args.per_class, args.steps)
    if notice:
        print(notice, file=sys.stderr)
    from . import digits  # noqa: PLC0415

    start = time.perf_counter()
    digits.run(args.out, args.seed, args.steps, args.lr, args.weighting, args.per_class)
    _done("digits", start, args.out)


_RUNS = {"trajectories": _trajectories, "drift": _drift, "sweep": _sweep, "statistics": _statistics, "digits": _digits}
_PARSERS = {}


# ``toy all``'s experiments, longest first (CPU seconds measured at load ~1: the parallel
# workers take them in this order, so that the two longest start at once)
LONGEST_FIRST = ("sweep", "trajectories", "digits", "statistics", "drift")


def _all(args):
    start = time.perf_counter()
    import multiprocessing  # noqa: PLC0415

    jobs = min(args.jobs, len(EXPERIMENTS))
    if jobs == 1 or "fork" not in multiprocessing.get_all_start_methods():  # no fork (Windows): one process
        for name in EXPERIMENTS:
            _run_default(name, args.out, args.seed)
    else:
        _run_parallel(jobs, args.out, args.seed)
    print(f"toy all: {time.perf_counter() - start:.1f} s; summaries in {args.out}/*.md")
    if args.docs:
        from .report import compress_png  # noqa: PLC0415

        for stem in EXPERIMENTS:
            compress_png(f"{args.out}/{stem}.png", f"{args.docs}/{stem}.png")
        print(f"the figures, re-saved for the docs, in {args.docs}/")


def _run_default(name, out, seed):
    """Experiment ``name`` with its command's defaults (its line printed when done)."""
    from types import SimpleNamespace  # noqa: PLC0415

    defaults = vars(_PARSERS[name].parse_args([]))
    defaults.update(out=out, seed=seed)
    _RUNS[name](SimpleNamespace(**defaults))
    sys.stdout.flush()


class WorkerInterrupted(Exception):
    """A worker's KeyboardInterrupt, sent back to the parent as an ordinary exception (a
    BaseException leaving a pool task would end the worker and leave its result pending)."""


def _run_in_worker(name, out, seed):
    try:
        _run_default(name, out, seed)
    except KeyboardInterrupt:
        raise WorkerInterrupted(name) from None
    except SystemExit as exc:
        raise RuntimeError(f"toy {name} exited with {exc.code}") from None


def _worker_init():
    """A ``toy all`` worker: Ctrl-C is the parent's to handle, no progress bars (one terminal for
    all), one BLAS thread."""
    import signal  # noqa: PLC0415

    from . import progress  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    progress.SHOW = False
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


def _run_parallel(jobs, out, seed):
    """Every experiment in ``jobs`` worker processes (each is seeded and writes its own files:
    the outputs are those of one process); each prints its line when done."""
    import multiprocessing  # noqa: PLC0415

    pool = multiprocessing.get_context("fork").Pool(jobs, initializer=_worker_init)
    try:
        pending = [pool.apply_async(_run_in_worker, (name, out, seed)) for name in LONGEST_FIRST]
        for result in pending:
            result.get()  # re-raises a worker's error here
        pool.close()
    except WorkerInterrupted:
        pool.terminate()
        raise KeyboardInterrupt from None
    except BaseException:
        pool.terminate()  # Ctrl-C or an error: stop the other workers too
        raise
    finally:
        pool.join()


def _common(p):
    p.add_argument("--out", default="toy_out", help="output folder (default: toy_out/)")
    p.add_argument("--seed", type=integer(0), default=0, help="random seed, >= 0 (default: 0)")


def _weighting(p):
    from ssd_toolkit import list_weightings  # noqa: PLC0415 - NumPy only

    names = list_weightings()
    p.add_argument("--weighting", default="uniform", choices=names, metavar="NAME",
                   help=f"w(t), one of {', '.join(names)} (default: uniform; sds is 1 - abar_t)")  # fmt: skip


def register(subparsers):
    """Add the ``toy`` command group (trajectories, drift, sweep, statistics, digits, all)."""
    toy = subparsers.add_parser("toy", help="the paper's mixture-of-Gaussians experiments (no weights needed)")
    sub = toy.add_subparsers(dest="toy_command", metavar="EXPERIMENT", required=True)

    p = sub.add_parser("trajectories", help="Fig. 7: trajectories of each estimator on the paper's 2-d mixture")
    _common(p)
    p.add_argument("--seeds", type=integer(1), default=16, help="seeds, all vectorised (default: 16)")
    p.add_argument("--steps", type=integer(1), default=3000, help="Eq. 3 updates (default: 3000)")
    p.add_argument("--lr", type=number(positive=True), default=0.01, help="learning rate (default: 0.01)")
    p.add_argument("--M", type=number(minimum=0), default=200.0, help="SSD threshold (default: 200)")
    _weighting(p)
    p.add_argument("--denoiser", choices=("exact", "learned"), default="exact",
                   help="exact mixture scores, or a small CFG denoiser trained on the mixture (needs torch; "
                        "cached in --out/denoiser/; writes trajectories_learned.*) (default: exact)")  # fmt: skip
    p.set_defaults(func=_command("trajectories", _trajectories))
    _PARSERS["trajectories"] = p

    p = sub.add_parser("drift", help="why Algorithm 1 leaves the mode: push and pull per t along the ray through [2, 1]")
    _common(p)
    p.add_argument("--M", type=number(minimum=0), default=200.0, help="SSD threshold (default: 200)")
    p.add_argument("--noises", type=integer(2), default=128, help="noises per t and point, >= 2 (default: 128)")
    p.set_defaults(func=_command("drift", _drift))
    _PARSERS["drift"] = p

    p = sub.add_parser("sweep", help="SSD's end state against M, lr, steps, timestep annealing")
    _common(p)
    p.add_argument("--Ms", type=distinct(comma_list(number(minimum=0))), default=(0, 100, 200, 400, 600, 800),
                   help="thresholds (default: 0,100,200,400,600,800)")  # fmt: skip
    p.add_argument("--lrs", type=distinct(comma_list(number(positive=True))), default=(0.01, 0.1),
                   help="learning rates (default: 0.01,0.1)")  # fmt: skip
    p.add_argument("--steps", type=distinct(comma_list(integer(1))), default=(1000, 3000, 10000),
                   help="run lengths (default: 1000,3000,10000)")  # fmt: skip
    p.add_argument("--seeds", type=integer(1), default=8, help="seeds per configuration (default: 8)")
    p.set_defaults(func=_command("sweep", _sweep))
    _PARSERS["sweep"] = p

    p = sub.add_parser("statistics", help="Sec. 11: ||eps_hat||, corr, c vs r, ||h||, variances against t")
    _common(p)
    p.add_argument("--dim", type=integer(1), default=64, help="mixture dimension (default: 64)")
    p.add_argument("--noises", type=integer(2), default=8192, help="noises per t, >= 2 (default: 8192)")
    p.add_argument("--num-t", dest="num_t", type=integer(2), default=40,
                   help="timesteps in [1, 999], >= 2 (default: 40)")  # fmt: skip
    p.set_defaults(func=_command("statistics", _statistics))
    _PARSERS["statistics"] = p

    p = sub.add_parser("digits", help="8x8 digits with exact scores: --per-class images per class per estimator")
    _common(p)
    p.add_argument("--steps", type=integer(1), default=1000, help="Eq. 3 updates (default: 1000)")
    p.add_argument("--lr", type=number(positive=True), default=0.01, help="learning rate (default: 0.01)")
    _weighting(p)
    p.add_argument("--per-class", dest="per_class", type=integer(1), default=2, help="images per class (default: 2)")
    p.set_defaults(func=_command("digits", _digits))
    _PARSERS["digits"] = p

    p = sub.add_parser("all", help="every toy experiment with its defaults (the main job)")
    _common(p)
    p.add_argument("--jobs", type=integer(1), default=min(2, os.cpu_count() or 1),
                   help="experiments run side by side in this many processes, >= 1 (default: 2, or 1 on one core)")  # fmt: skip
    p.add_argument("--docs", default=None, help="also write optimised copies of the figures here (e.g. docs/toy, the figures the docs show)")
    p.set_defaults(func=_command("all", _all))
