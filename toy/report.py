"""Writing an experiment's outputs: JSON (numbers) and a markdown summary."""

from __future__ import annotations

import json
import os

import numpy as np


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path, obj):
    """``obj`` (dicts, lists, NumPy scalars/arrays) as indented JSON; non-finite floats become null."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_plain(obj), f, indent=1)


def markdown_table(headers, rows, fmt="{:.3g}"):
    """A GitHub markdown table; floats are formatted with ``fmt``, ``|`` in cells escaped."""

    def cell(v):
        text = fmt.format(v) if isinstance(v, (float, np.floating)) else str(v)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path, title, sections):
    """A markdown file: ``# title`` then each section (a string) separated by blank lines."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"# {title}\n\n" + "\n\n".join(sections) + "\n")


def compress_png(src, dst):
    """``src`` re-saved as an optimised, lossless RGB PNG at ``dst`` (the figures the docs show;
    a 256-colour palette, used before, banded the figures' colour gradients)."""
    from PIL import Image  # noqa: PLC0415 - matplotlib's dependency

    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").save(dst, optimize=True)
