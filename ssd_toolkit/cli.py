"""The ``ssd-toolkit`` command. Subcommand groups register themselves here; heavy imports
happen inside each command's run function, so ``ssd-toolkit --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# (module, function): each function takes the subparsers object and adds its commands,
# setting ``func`` on each parser to a callable taking the parsed args.
COMMAND_GROUPS = (
    ("ssd_toolkit.toy.cli", "register"),
    ("ssd_toolkit.integrations.dreamwaltz.cli", "register"),
    ("ssd_toolkit.integrations.dreamwaltz.avatar_cli", "register"),
)


def _backends(args):
    from . import backends  # noqa: PLC0415

    print(json.dumps(backends(), indent=2))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="ssd-toolkit", description="Stable Score Distillation toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="report which compiled kernels are available")
    p.set_defaults(func=_backends)
    for module_name, func_name in COMMAND_GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part of the package is not installed
            raise
        getattr(module, func_name)(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
