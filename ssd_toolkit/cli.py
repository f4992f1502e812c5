"""The ``ssd-toolkit`` command.

Subcommand groups are found through the ``ssd_toolkit.commands`` entry-point group (see
pyproject.toml): each entry point is a function taking the subparsers object and adding
its commands, with ``func`` set to a callable taking the parsed args. Heavy imports happen
inside each command's run function, so ``ssd-toolkit --help`` stays fast.

User errors print one line, ``ssd-toolkit <cmd>: error: <flag>: expected ..., got ...``,
and exit with code 2: argparse's own messages are rephrased to that form, and commands
raise ``cli_args.CommandError``. Anything else (an internal bug) keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from .checks import did_you_mean
from .cli_args import EXIT_USAGE, CommandError, missing_dependency_message

ENTRY_POINT_GROUP = "ssd_toolkit.commands"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as the toy and avatar commands
NO_GROUPS_HINT = (
    f"no '{ENTRY_POINT_GROUP}' entry points are installed (metadata from an older install): "
    "reinstall with bash scripts/install.sh or pip install -e ."
)

# argparse's messages -> "<flag>: expected ..., got ..."
_REPHRASE = (
    (r"argument (\S+): invalid choice: (.+) \(choose from (.+)\)", r"\1: expected one of \3, got \2"),
    (r"argument (\S+): invalid (\w+) value: (.+)", r"\1: expected a value of type \2, got \3"),
    (r"argument (\S+): expected one argument", r"\1: expected a value, got none"),
    (r"argument (\S+): expected at least one argument", r"\1: expected one or more values, got none"),
    (r"argument (\S+): not allowed with argument (\S+)", r"\1: expected either \1 or \2, got both"),
    (r"argument (\S+): ignored explicit argument (.+)", r"\1: expected no value, got \2"),
    (r"the following arguments are required: ([^,]+).*", r"\1: expected a value (required), got none"),
    (r"argument (\S+): (.+)", r"\1: \2"),
)


def rephrase(message: str) -> str:
    """argparse's error ``message`` in the one-line ``<flag>: expected ..., got ...`` form."""
    for pattern, replacement in _REPHRASE:
        if re.fullmatch(pattern, message, flags=re.DOTALL):
            return re.sub(pattern, replacement, message, flags=re.DOTALL)
    return message


class Parser(argparse.ArgumentParser):
    """ArgumentParser without abbreviations whose errors are one line and exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {self._rephrase(message)}\n")

    def _rephrase(self, message):
        one_of = re.fullmatch(r"one of the arguments (.+) is required", message)
        if one_of:
            flags = one_of.group(1).split()
            return f"{flags[0]}: expected one of {' or '.join(flags)}, got none"
        for action in self._actions:  # a missing subcommand: list the choices
            if (isinstance(action, argparse._SubParsersAction) and action.required
                    and message == f"the following arguments are required: {action.metavar}"):  # fmt: skip
                return f"{action.metavar}: expected one of {', '.join(action.choices)}, got none"
        hint = next((getattr(a, "choices_hint", None) for a in self._actions if getattr(a, "choices_hint", None)), None)
        return rephrase(message) + (f" ({hint})" if hint and "invalid choice" in message else self._did_you_mean(message))

    def _did_you_mean(self, message):
        """`` (did you mean 'toy'?)`` for an invalid choice close to a valid one, else ''."""
        got = re.fullmatch(r"argument (\S+): invalid choice: '?([^' ]*)'? \(choose from .*\)", message, flags=re.DOTALL)
        if not got:
            return ""
        for action in self._actions:
            if action.choices and got.group(1) in (action.metavar, action.dest, *action.option_strings):
                return did_you_mean(got.group(2), action.choices)
        return ""


def _backends(args):
    from . import backends  # noqa: PLC0415

    print(json.dumps(backends(), indent=2))
    return 0


def command_groups():
    """The registered entry points of ``ENTRY_POINT_GROUP``, sorted by name."""
    from importlib.metadata import entry_points  # noqa: PLC0415

    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _tag_parsers(parser):
    """Set ``_parser`` on every parser of the tree: after parsing, the deepest one wins."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _tag_parsers(sub)


def build_parser():
    from . import __version__  # noqa: PLC0415

    parser = Parser(prog="ssd-toolkit", description="Stable Score Distillation toolkit")
    parser.add_argument("--version", action="version", version=f"ssd-toolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("backends", help="report which compiled kernels are available")
    p.set_defaults(func=_backends)
    groups = command_groups()
    if not groups:  # installed metadata older than the entry points: say how to fix it
        sub.choices_hint = NO_GROUPS_HINT
    for entry in groups:
        try:
            register = entry.load()
        except ModuleNotFoundError as exc:
            if exc.name and entry.value.startswith(exc.name):
                continue  # that part of the package is not installed
            raise
        register(sub)
    _tag_parsers(parser)
    return parser


def main(argv=None):
    """Run the command; Ctrl-C before or during it prints one line and returns 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("ssd-toolkit: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv):
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command = args._parser
    if unknown:
        command.error(f"{unknown[0]}: expected an option listed by '{command.prog} --help', got {' '.join(unknown)!r}")
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        message = str(exc)
    except ModuleNotFoundError as exc:
        message = missing_dependency_message(exc)
        if message is None:
            raise
    print(f"{command.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
