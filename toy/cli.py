"""``ssd-toolkit toy ...``: the paper's mixture-of-Gaussians experiments.

Heavy imports (matplotlib, scikit-learn, the experiment modules) happen inside the run
functions, so ``ssd-toolkit --help`` stays fast.
"""

from __future__ import annotations

import functools
import time


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


def _floats(text):
    return tuple(float(v) for v in text.split(","))


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _trajectories(args):
    from . import trajectories  # noqa: PLC0415

    s = trajectories.run(args.out, args.seed, args.seeds, args.steps, args.lr, args.M, args.weighting)
    print(f"trajectories: {s['seconds_both_runs']:.2f} s -> {args.out}/trajectories.{{png,json,md}}")


def _sweep(args):
    from . import sweep  # noqa: PLC0415

    s = sweep.run(args.out, args.seed, args.Ms, args.lrs, args.steps, args.seeds)
    print(f"sweep: {s['seconds']:.1f} s -> {args.out}/sweep.{{png,json,md}}")


def _statistics(args):
    from . import statistics  # noqa: PLC0415

    s = statistics.run(args.out, args.seed, args.dim, args.noises, args.num_t)
    print(f"statistics: {s['seconds']:.1f} s -> {args.out}/statistics.{{png,json,md}}")


def _digits(args):
    from . import digits  # noqa: PLC0415

    s = digits.run(args.out, args.seed, args.steps, args.lr, args.weighting, args.per_class)
    print(f"digits: {s['seconds']:.1f} s -> {args.out}/digits.{{png,json,md}}")


def _all(args):
    from types import SimpleNamespace  # noqa: PLC0415

    start = time.perf_counter()
    parsers = _PARSERS
    for name, func in (
        ("trajectories", _trajectories),
        ("sweep", _sweep),
        ("statistics", _statistics),
        ("digits", _digits),
    ):
        defaults = vars(parsers[name].parse_args([]))
        defaults.update(out=args.out, seed=args.seed)
        func(SimpleNamespace(**defaults))
    print(f"toy all: {time.perf_counter() - start:.1f} s; summaries in {args.out}/*.md")
    if args.docs:
        from .report import compress_png  # noqa: PLC0415

        for stem in ("trajectories", "sweep", "statistics", "digits"):
            compress_png(f"{args.out}/{stem}.png", f"{args.docs}/{stem}.png")
        print(f"palette-compressed figures in {args.docs}/")


_PARSERS = {}


def _common(p):
    p.add_argument("--out", default="toy_out", help="output folder (default: toy_out/)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def register(subparsers):
    """Add the ``toy`` command group (trajectories, sweep, statistics, digits, all)."""
    toy = subparsers.add_parser("toy", help="the paper's mixture-of-Gaussians experiments (no weights needed)")
    sub = toy.add_subparsers(dest="toy_command", required=True)

    p = sub.add_parser("trajectories", help="Fig. 7: trajectories of each estimator on the paper's 2-d mixture")
    _common(p)
    p.add_argument("--seeds", type=int, default=16, help="seeds, all vectorised (default: 16)")
    p.add_argument("--steps", type=int, default=3000, help="Eq. 3 updates (default: 3000)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default: 0.01)")
    p.add_argument("--M", type=float, default=200.0, help="SSD threshold (default: 200)")
    p.add_argument("--weighting", default="uniform", help="w(t): uniform or sds (1 - abar_t) (default: uniform)")
    p.set_defaults(func=_single_blas_thread(_trajectories))
    _PARSERS["trajectories"] = p

    p = sub.add_parser("sweep", help="SSD's end state against M, lr, steps, timestep annealing")
    _common(p)
    p.add_argument("--Ms", type=_floats, default=(0, 100, 200, 400, 600, 800), help="thresholds (default: 0,...,800)")
    p.add_argument("--lrs", type=_floats, default=(0.01, 0.1), help="learning rates (default: 0.01,0.1)")
    p.add_argument("--steps", type=_ints, default=(1000, 3000, 10000), help="run lengths (default: 1000,3000,10000)")
    p.add_argument("--seeds", type=int, default=8, help="seeds per configuration (default: 8)")
    p.set_defaults(func=_single_blas_thread(_sweep))
    _PARSERS["sweep"] = p

    p = sub.add_parser("statistics", help="Sec. 11: ||eps_hat||, corr, c vs r, ||h||, variances against t")
    _common(p)
    p.add_argument("--dim", type=int, default=64, help="mixture dimension (default: 64)")
    p.add_argument("--noises", type=int, default=8192, help="noises per t (default: 8192)")
    p.add_argument("--num-t", dest="num_t", type=int, default=40, help="timesteps in [1, 999] (default: 40)")
    p.set_defaults(func=_single_blas_thread(_statistics))
    _PARSERS["statistics"] = p

    p = sub.add_parser("digits", help="8x8 digits with exact scores: one image per class per estimator")
    _common(p)
    p.add_argument("--steps", type=int, default=1000, help="Eq. 3 updates (default: 1000)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default: 0.01)")
    p.add_argument("--weighting", default="uniform", help="w(t): uniform or sds (default: uniform)")
    p.add_argument("--per-class", dest="per_class", type=int, default=2, help="images per class (default: 2)")
    p.set_defaults(func=_single_blas_thread(_digits))
    _PARSERS["digits"] = p

    p = sub.add_parser("all", help="every toy experiment with its defaults (the main job)")
    _common(p)
    p.add_argument("--docs", default=None, help="also write palette-compressed PNGs here (the README's docs/toy)")
    p.set_defaults(func=_single_blas_thread(_all))
