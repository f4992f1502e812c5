"""Builds the optional JAX extension ``ssd_toolkit/_ssd_jax_ffi.so`` (``csrc/jax/``).

It needs jaxlib's FFI headers (``jax.ffi.include_dir()``), which pip's isolated build
environment of ``ssd_toolkit`` does not have, so it is built after the install, in the
user's environment: ``python -m ssd_toolkit.frameworks.jax_build`` (scripts/install.sh
does it when JAX is installed). Flags come from csrc/build_config.json, like ``_C``'s.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
LIBRARY = PACKAGE / "_ssd_jax_ffi.so"
SOURCES = ("csrc/jax/ssd_jax_ffi.cpp", "csrc/ssd_cpu.cpp", "csrc/ssd_params.cpp")


def source_root():
    """The checkout holding csrc/ (an editable or in-tree install), or None."""
    root = PACKAGE.parent
    return root if all((root / s).exists() for s in SOURCES) else None


def command(root, output):
    import jax  # noqa: PLC0415

    config = json.loads((root / "csrc" / "build_config.json").read_text())["cxx"]
    flags = [f for f in config["flags"] if f != "-fvisibility=hidden"]  # the handler symbol is exported
    return [
        os.environ.get("CXX", "c++"),
        f"-std=c++{config['standard']}",
        "-fPIC",
        "-shared",
        *flags,
        "-isystem",
        jax.ffi.include_dir(),
        f"-I{root / 'csrc'}",
        *(str(root / s) for s in SOURCES),
        "-o",
        str(output),
        *config["link_flags"],
    ]


def build(output=LIBRARY, quiet=False):
    """Compiles the extension to ``output``; returns its path. Raises RuntimeError with the
    reason (no JAX, no sources, a compile error)."""
    try:
        import jax  # noqa: PLC0415, F401
    except ImportError:
        raise RuntimeError("jax is not installed (pip install 'ssd_toolkit[jax]')") from None
    root = source_root()
    if root is None:
        raise RuntimeError(f"the C++ sources ({', '.join(SOURCES)}) are not beside {PACKAGE}; build from a checkout")
    cmd = command(root, output)
    if not quiet:
        print(shlex.join(cmd), file=sys.stderr)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"compiling the JAX extension failed:\n{result.stderr[-4000:]}")
    return output


if __name__ == "__main__":
    try:
        print(f"built {build(quiet=True)}")
    except RuntimeError as exc:
        raise SystemExit(f"jax_build: {exc}") from None
