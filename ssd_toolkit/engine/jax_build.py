"""Builds the optional JAX extension ``ssd_toolkit/_ssd_jax_ffi.so`` (``csrc/jax/``), and
its CUDA handler ``_ssd_jax_ffi_cuda.so`` where nvcc and JAX's CUDA plugin are installed.

It needs jaxlib's FFI headers (``jax.ffi.include_dir()``), which pip's isolated build
environment of ``ssd_toolkit`` does not have, so it is built after the install, in the
user's environment: ``python -m ssd_toolkit.engine.jax_build`` (scripts/install.sh
does it when JAX is installed). Flags come from csrc/build_config.json, like ``_C``'s;
``SSD_TOOLKIT_CUDA=0`` skips the CUDA handler, ``SSD_TOOLKIT_CUDA_ARCHS`` picks its GPUs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from .extension import JAX_CUDA_LIBRARY as CUDA_LIBRARY
from .extension import JAX_LIBRARY as LIBRARY
from .extension import PACKAGE
SOURCES = ("csrc/jax/ssd_jax_ffi.cpp", "csrc/ssd_cpu.cpp", "csrc/ssd_params.cpp")
CUDA_SOURCES = ("csrc/jax/ssd_jax_ffi_cuda.cu", "csrc/cuda/ssd_cuda.cu", "csrc/ssd_params.cpp")


def source_root():
    """The checkout holding csrc/ (an editable or in-tree install), or None."""
    root = PACKAGE.parent
    return root if all((root / s).exists() for s in SOURCES) else None


def stale(output=LIBRARY):
    """True when ``output`` is missing, or older than a file of csrc/ it is compiled from
    (its sources and every header beside them): a library built from older sources."""
    root = source_root()
    if not output.exists():
        return True
    if root is None:
        return False  # an installed package: nothing to compare with
    inputs = [root / s for s in SOURCES] + list((root / "csrc").glob("*.h")) + list((root / "csrc" / "jax").glob("*"))
    built = output.stat().st_mtime
    return any(path.stat().st_mtime > built for path in inputs)


def _config(root):
    return json.loads((root / "csrc" / "build_config.json").read_text())


def command(root, output):
    import jax  # noqa: PLC0415

    config = _config(root)["cxx"]
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


def cuda_command(root, output, nvcc):
    """The nvcc line of the CUDA handler (the fused kernel compiled in), or None."""
    import jax  # noqa: PLC0415

    config = _config(root)["cuda"]
    archs = [a.replace(".", "") for a in re.split(r"[;, ]+", os.environ.get("SSD_TOOLKIT_CUDA_ARCHS") or
                                                    config["default_archs"]) if a]
    top = max(archs, key=lambda a: int(re.match(r"\d+", a).group()))
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs] + [f"-gencode=arch=compute_{top},code=compute_{top}"]
    flags = [x for f in config["flags"] if "visibility" not in f for x in shlex.split(f)]
    return [nvcc, *flags, f"-D{config['define']}", *gencode, "-shared", "-isystem", jax.ffi.include_dir(),
            f"-I{root / 'csrc'}", *(str(root / s) for s in CUDA_SOURCES), "-o", str(output),
            *(f"-l{lib}" for lib in config["libraries"])]


def cuda_wanted():
    """nvcc on PATH (or CUDA_HOME), JAX's CUDA plugin installed, SSD_TOOLKIT_CUDA != 0."""
    if os.environ.get("SSD_TOOLKIT_CUDA", "1") == "0":
        return None
    home = os.environ.get("CUDA_HOME")
    nvcc = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc")
    plugin = any(d.metadata["Name"].lower().replace("_", "-").startswith("jax-cuda") for d in importlib.metadata.distributions())
    return nvcc if nvcc and os.access(nvcc, os.X_OK) and plugin else None


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
    nvcc = cuda_wanted() if output == LIBRARY else None
    if nvcc:
        cmd = cuda_command(root, CUDA_LIBRARY, nvcc)
        if not quiet:
            print(shlex.join(cmd), file=sys.stderr)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"compiling the JAX CUDA handler failed:\n{result.stderr[-4000:]}")
    return output


if __name__ == "__main__":
    try:
        print(f"built {build(quiet=True)}")
    except RuntimeError as exc:
        raise SystemExit(f"jax_build: {exc}") from None
