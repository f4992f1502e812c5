"""``ssd-toolkit avatar``: the end-to-end canonical-avatar run.

Every setting of ``config.AvatarConfig`` is a flag (``--sd-model``, ``--M``, ...); only the
flags actually given override the config file and, with ``--resume``, the saved run.
Heavy imports happen when the command runs, so ``ssd-toolkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from . import config as config_mod

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130


def _flag(name):
    return "--" + name.replace("_", "-") if name != "M" else "--M"


def add_arguments(parser):
    """One flag per setting (default: not given), plus --resume, --config, --no-progress."""
    for name in config_mod.field_names():
        kind = config_mod.FIELD_TYPES[name]
        kwargs = {"dest": name, "default": argparse.SUPPRESS, "help": config_mod.HELP[name]}
        if name == "tiny":
            parser.add_argument("--tiny", action="store_true", **kwargs)
        elif kind == "bool":
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        elif kind == "list":
            parser.add_argument(_flag(name), type=int, nargs="+", metavar="N", **kwargs)
        else:
            convert = {"int": int, "float": float}.get(kind, str)
            parser.add_argument(_flag(name), type=convert, **kwargs)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--config", default=None, help="JSON/YAML file of settings (flags given override it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers):
    parser = subparsers.add_parser(
        "avatar",
        help="distil a canonical 3D avatar (latent radiance field) with SSD + ControlNet openpose guidance",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def settings_from_args(args) -> dict:
    """The settings given on the command line (argparse namespace -> dict)."""
    names = set(config_mod.field_names())
    return {k: v for k, v in vars(args).items() if k in names}


def run_command(args):
    """Resolve the settings, run, and map failures to one clear line and an exit code."""
    from .train import NonFiniteError  # noqa: PLC0415
    from .run import run_avatar  # noqa: PLC0415

    try:
        cfg = config_mod.resolve(settings_from_args(args), args.config, resume=args.resume)
        run_avatar(cfg, resume=args.resume, progress=not args.no_progress)
    except NonFiniteError as exc:
        print(f"ssd-toolkit avatar: stopped: {exc}", file=sys.stderr)
        return EXIT_NON_FINITE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as exc:
        print(f"ssd-toolkit avatar: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
