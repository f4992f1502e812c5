"""``ssd-toolkit avatar``: the end-to-end canonical-avatar run.

Every setting of ``config.AvatarConfig`` is a flag (``--sd-model``, ``--M``, ...); only the
flags actually given override the config file and, with ``--resume``, the saved run.
Settings, dependencies, the output directory, the body, the networks and (on resume) the
checkpoint are all checked before the output directory changes; a failure there is one
line and exit code 2 (the flags in about a second: nothing heavy is imported before they
pass). Exit codes: 0 done, 2 a user error, 3 stopped on non-finite values, 130
interrupted, 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import sys

from ssd_toolkit.cli_args import CommandError, as_command_error, integer, number, plain_text, require
from ssd_toolkit.integrations.guidance.prompts import one_line_prompt_warnings

from . import config as config_mod

EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
NEEDS = ("torch", "diffusers", "transformers", "smplx", "cv2", "imageio", "scipy")


def _flag(name):
    return "--" + name.replace("_", "-") if name != "M" else "--M"


# setting (or library argument) named in an error -> the flag to name instead
FLAGS = {name: _flag(name) for name in config_mod.field_names()} | {"config": "--config", "path": "--body"}


def _help(name):
    import ssd_toolkit  # noqa: PLC0415 - NumPy only

    text = config_mod.HELP[name]
    registry = {"estimator": ssd_toolkit.list_estimators, "weighting": ssd_toolkit.list_weightings,
                "t_sampler": ssd_toolkit.list_samplers}.get(name)  # fmt: skip
    if registry:
        text = f"{text.split(' (')[0]}: one of {', '.join(registry())}"
    text += f" (default: {_shown(getattr(config_mod.AvatarConfig(), name))}"
    if name in config_mod.TINY_DEFAULTS:
        tiny = config_mod.TINY_DEFAULTS[name]
        text += f"; --tiny: {_shown(tiny) if tiny != '' else 'built into <out>/tiny_assets'}"
    return (text + ")").replace("%", "%%")


def _shown(value):
    if isinstance(value, list):
        return " ".join(map(str, value))
    if value == "" or value is None:
        return "none"
    return repr(value) if isinstance(value, str) else str(value)


def add_arguments(parser, exclude=()):
    """One flag per setting (default: not given), plus --resume, --config, --no-progress;
    the names in ``exclude`` (settings or "resume") get no flag (``avatar-batch`` uses this)."""
    for name in config_mod.field_names():
        if name in exclude:
            continue
        kind = config_mod.FIELD_TYPES[name]
        kwargs = {"dest": name, "default": argparse.SUPPRESS, "help": _help(name)}
        if name == "tiny":
            parser.add_argument("--tiny", action="store_true", **kwargs)
        elif kind == "bool":
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        elif kind == "list":
            parser.add_argument(_flag(name), type=integer(), nargs="+", metavar="N", **kwargs)
        else:
            convert = {"int": integer(), "float": number()}.get(kind, str)
            parser.add_argument(_flag(name), type=convert, **kwargs)
    if "resume" not in exclude:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--config", default=None, help="JSON/YAML file of settings (flags given override it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the warnings, logs and progress bars of diffusers/transformers/huggingface_hub")


def register(subparsers):
    parser = subparsers.add_parser(
        "avatar",
        help="distil a canonical 3D avatar (latent radiance field) with SSD + ControlNet openpose guidance",
        description=plain_text(__doc__),
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def settings_from_args(args) -> dict:
    """The settings given on the command line (argparse namespace -> dict)."""
    names = set(config_mod.field_names())
    return {k: v for k, v in vars(args).items() if k in names}


def quiet_hub_progress_bars():
    """--no-progress also silences the weight-loading bars of transformers and diffusers."""
    import diffusers.utils.logging  # noqa: PLC0415
    import transformers.utils.logging  # noqa: PLC0415

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def disk_error(exc: OSError):
    """A full or read-only disk under --out as the one-line user error."""
    return CommandError(f"--out: expected room to write the run, got {type(exc).__name__}: {exc}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the run is, so that it stops as Ctrl-C stops it: the last
    checkpoint kept, the log closed, the lock released, a fresh start's directory removed."""


@contextlib.contextmanager
def stop_on_sigterm():
    """Within the block SIGTERM raises ``Terminated``; the previous handler comes back after."""

    def terminate(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: signals stay as they are
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def interrupted(prog: str, exc: KeyboardInterrupt) -> int:
    """Say that ``prog`` stopped on Ctrl-C (exit 130) or SIGTERM (exit 143), in one line."""
    terminated = isinstance(exc, Terminated)
    print(f"{prog}: {'terminated (SIGTERM)' if terminated else 'interrupted'}; the last checkpoint, if any, is kept",
          file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def run_command(args):
    """``_run_command`` with Ctrl-C and SIGTERM, at start-up as in training, as one line and an exit code."""
    with stop_on_sigterm():
        try:
            cfg = checked_settings(args)  # before any heavy import: a mistake is refused at once
            from .quiet import quiet_third_party  # noqa: PLC0415

            with quiet_third_party(args.verbose), one_line_prompt_warnings("ssd-toolkit avatar"):
                return _run_command(args, cfg)  # prompt truncation above: one stderr line
        except KeyboardInterrupt as exc:
            return interrupted("ssd-toolkit avatar", exc)


def checked_settings(args):
    """The resolved settings, the output location and the optional dependencies checked, and
    an ignored ``--guidance-scale`` warned about, importing nothing heavy (no torch, diffusers
    or transformers): a mistake in the flags is refused in about a second."""
    from .outdir import check_output_location  # noqa: PLC0415 - standard library only

    try:
        cfg = config_mod.resolve(settings_from_args(args), args.config, resume=args.resume)
        check_output_location(cfg.out)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        raise as_command_error(exc, FLAGS) from exc
    require(*NEEDS)
    if "guidance_scale" in vars(args):
        warn_if_scale_ignored("ssd-toolkit avatar", cfg.estimator, cfg.guidance_scale, "--guidance-scale")
    return cfg


def warn_if_scale_ignored(prog, estimator, scale, option):
    """One stderr line, ``<prog>: warning: <option>=<scale> is ignored: <why>``, when the CFG
    scale the user gave does not reach ``estimator`` (``config.SCALE_TAKERS``); True if so."""
    import ssd_toolkit  # noqa: PLC0415 - NumPy only
    from ssd_toolkit.integrations.guidance.estimator_choice import canonical_name, estimator_params  # noqa: PLC0415

    if "guidance_scale" in estimator_params(estimator, guidance_scale=scale, scale_takers=config_mod.SCALE_TAKERS):
        return False
    name = canonical_name(estimator)
    own = getattr(ssd_toolkit.get_estimator(name), "guidance_scale", None)
    why = f"{name} has no CFG scale" if own is None else f"{name} keeps its own CFG scale {own:g}"
    print(f"{prog}: warning: {option}={scale:g} is ignored: {why}", file=sys.stderr)
    return True


def _run_command(args, cfg):
    """Run the checked settings ``cfg``; map failures to one clear line and an exit code."""
    from .run import execute_run, prepare_run  # noqa: PLC0415
    from .train import NonFiniteError  # noqa: PLC0415

    progress = not args.no_progress
    if not progress:
        quiet_hub_progress_bars()
    try:
        prepared = prepare_run(cfg, resume=args.resume, progress=progress)
    except (ValueError, ImportError, OSError) as exc:
        if isinstance(exc, ModuleNotFoundError):
            raise
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise disk_error(exc) from exc
        raise as_command_error(exc, FLAGS) from exc
    try:
        execute_run(prepared, progress=progress)
    except NonFiniteError as exc:
        print(f"ssd-toolkit avatar: stopped: {exc}", file=sys.stderr)
        return EXIT_NON_FINITE
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise disk_error(exc) from exc
        raise
    return 0
