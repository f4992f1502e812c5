"""``python -m ssd_toolkit.integrations.threestudio install THREESTUDIO_DIR``: write the
``custom/ssd-toolkit/__init__.py`` extension folder threestudio's ``launch.py`` imports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FOLDER = "ssd-toolkit"
EXTENSION = (
    '"""Registers ssd_toolkit\'s threestudio guidance (ssd-toolkit-guidance)."""\n\n'
    "import ssd_toolkit.integrations.threestudio.guidance  # noqa: F401\n"
)


def install(threestudio_dir):
    """Write ``<threestudio_dir>/custom/ssd-toolkit/__init__.py``; returns its path.

    ``threestudio_dir`` is the checkout or its ``custom/`` folder.

    Raises:
        ValueError: ``threestudio_dir`` has no ``launch.py`` and ``custom/`` (not a checkout).
    """
    root = Path(threestudio_dir)
    if root.name == "custom" and (root.parent / "launch.py").is_file():
        root = root.parent
    if not (root / "launch.py").is_file() or not (root / "custom").is_dir():
        raise ValueError(f"threestudio_dir: expected a threestudio checkout (launch.py and custom/) or its custom/, got {str(root)!r}")
    target = root / "custom" / FOLDER / "__init__.py"
    target.parent.mkdir(exist_ok=True)
    target.write_text(EXTENSION)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ssd_toolkit.integrations.threestudio")
    sub = parser.add_subparsers(dest="command", required=True)
    install_parser = sub.add_parser("install", help="write custom/ssd-toolkit/ into a threestudio checkout")
    install_parser.add_argument("threestudio_dir")
    args = parser.parse_args(argv)
    try:
        path = install(args.threestudio_dir)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {path}; use system.guidance_type: ssd-toolkit-guidance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
