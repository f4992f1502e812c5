"""Argument checks shared by the ``ssd-toolkit`` subcommands: value types for argparse,
path checks that write nothing, and optional dependencies named by their extra.

Every failure reads ``<flag>: expected ..., got ...`` (the CLI prefixes the command).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os

EXIT_USAGE = 2

# top-level module -> the extra that installs it
OPTIONAL_EXTRAS = {
    "matplotlib": "toy",
    "sklearn": "toy",
    "scipy": "toy",
    "PIL": "toy",
    "torch": "torch",
    "diffusers": "avatar",
    "transformers": "avatar",
    "accelerate": "avatar",
    "smplx": "avatar",
    "cv2": "avatar",
    "imageio": "avatar",
    "imageio_ffmpeg": "avatar",
}
_PIP_NAMES = {"sklearn": "scikit-learn", "cv2": "opencv-python-headless", "PIL": "pillow"}


class CommandError(ValueError):
    """A user error: the CLI prints ``<prog>: error: <message>`` on one line and exits 2."""


def expected(flag, what, got) -> CommandError:
    """``CommandError("<flag>: expected <what>, got <got>")``."""
    return CommandError(f"{flag}: expected {what}, got {got}")


def plain_text(doc: str) -> str:
    """A docstring as ``--help`` text: RST's double backticks dropped (``--out`` -> --out)."""
    return doc.replace("``", "")


# ---------------------------------------------------------------- argparse value types


def integer(minimum=None):
    """argparse type: an int, at least ``minimum`` when given."""
    what = "an integer" + (f" >= {minimum}" if minimum is not None else "")

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_type(what, ok):
    """argparse type: a float for which ``ok(value)`` holds, else "expected <what>"."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def number(minimum=None, positive=False):
    """argparse type: a finite float, ``> 0`` when ``positive``, ``>= minimum`` when given."""
    bound = " > 0" if positive else (f" >= {minimum:g}" if minimum is not None else "")
    low = -math.inf if minimum is None else minimum
    return _float_type(f"a finite number{bound}", lambda v: math.isfinite(v) and v >= low and (v > 0 or not positive))


def open_interval(low, high):
    """argparse type: a float strictly between ``low`` and ``high``."""
    return _float_type(f"a number strictly between {low:g} and {high:g}", lambda v: low < v < high)


def comma_list(item):
    """argparse type: a non-empty comma-separated list of ``item`` values (a tuple)."""

    def parse(text):
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list such as 1,2,3, got {text!r}")
        values = []
        for part in parts:
            try:
                values.append(item(part))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{exc} in the list {text!r}") from None
        return tuple(values)

    parse.__name__ = "list"
    return parse


# ---------------------------------------------------------------- paths (nothing written)


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_output_dir(path, flag="--out"):
    """``path`` is a directory or could be created as one, and is writable; creates nothing.

    Raises:
        CommandError: ``path`` is a file, or its nearest existing ancestor is not a
            writable directory.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise expected(flag, "a directory", f"{str(path)!r}, which is a file")
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        raise expected(flag, "a path whose existing part is a directory", f"{str(path)!r} ({base!r} is a file)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise expected(flag, "a writable directory", f"{str(path)!r} ({base!r} is not writable)")
    return path


def check_output_file(path, flag="--out", suffixes=None):
    """``path`` can be written as a file (suffix among ``suffixes`` when given); creates nothing."""
    if suffixes and not str(path).lower().endswith(tuple(suffixes)):
        raise expected(flag, f"a file name ending in {' or '.join(suffixes)}", repr(str(path)))
    if os.path.isdir(path):
        raise expected(flag, "a file path", f"{str(path)!r}, which is a directory")
    check_output_dir(os.path.dirname(os.path.abspath(path)), flag)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise expected(flag, "a writable file", f"{str(path)!r} (not writable)")
    return path


def check_input_path(path, flag, what, directory_ok=False):
    """``path`` exists and is readable: a file, or also a directory when ``directory_ok``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise expected(flag, what, f"{path!r} (does not exist)")
    if os.path.isdir(path) and not directory_ok:
        raise expected(flag, what, f"{path!r}, which is a directory")
    if not os.access(path, os.R_OK):
        raise expected(flag, what, f"{path!r} (not readable)")
    return path


# ---------------------------------------------------------------- optional dependencies


def install_hint(module):
    """The pip command installing ``module`` (its extra when it has one)."""
    top = module.split(".")[0]
    extra = OPTIONAL_EXTRAS.get(top)
    return f'pip install "ssd_toolkit[{extra}]"' if extra else f"pip install {_PIP_NAMES.get(top, top)}"


def require(*modules):
    """Check that every module can be imported (without importing it).

    Raises:
        CommandError: the first missing module, with the install command.
    """
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise CommandError(f"{module}: expected an installed optional dependency, got none ({install_hint(module)})")


def missing_dependency_message(exc: ModuleNotFoundError):
    """The one-line message for an optional dependency missing at run time, else None."""
    top = (exc.name or "").split(".")[0]
    if top not in OPTIONAL_EXTRAS:
        return None
    return f"{top}: expected an installed optional dependency, got none ({install_hint(top)})"


def as_command_error(exc: Exception, flags: dict) -> CommandError:
    """``exc`` as a CommandError, its leading ``name:`` replaced by ``flags[name]``.

    Library errors name the argument (``path: expected ...``); the CLI names the flag the
    user typed (``--body: expected ...``).
    """
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name, sep, rest = message.partition(":")
    if sep and name in flags:
        message = flags[name] + sep + rest
    return CommandError(message)
