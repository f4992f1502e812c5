"""Builds and imports the CUDA emulation test module (csrc/cuda/emulation/), cached.

One g++ command from the flags in csrc/build_config.json ("emulation"), into
build/emulation/<hash of the csrc sources, flags, compiler and Python>/, so an unchanged
tree reuses the module. ``sanitize=True`` adds the AddressSanitizer/UBSan flags (the
interpreter then needs the ASan runtime preloaded, see .ci/run). SSD_TOOLKIT_EMULATION_SOURCE
names another tree holding csrc/ to build from instead (into its own build/; the barrier
mutants of tests/kernels/test_barrier_mutants.py).
"""

import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(os.environ.get("SSD_TOOLKIT_EMULATION_SOURCE") or Path(__file__).resolve().parents[1]).resolve()
CONFIG = json.loads((ROOT / "csrc" / "build_config.json").read_text())["emulation"]


def _command(output, sanitize):
    import pybind11  # noqa: PLC0415 - a test requirement (the "test" extra)

    flags = CONFIG["flags"] + (CONFIG["sanitize_flags"] if sanitize else [])
    includes = [sysconfig.get_paths()["include"], pybind11.get_include(), str(ROOT / "csrc")]
    return [
        *shlex.split(os.environ.get("CXX", "c++")), "-std=c++17", "-fPIC", "-shared", *flags,
        *(f"-I{d}" for d in includes), *(str(ROOT / s) for s in CONFIG["sources"]), "-o", str(output),
    ]


def _digest(sanitize):
    h = hashlib.sha256()
    for path in sorted((ROOT / "csrc").rglob("*")):
        if path.suffix in (".h", ".cuh", ".cpp", ".json"):
            h.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    h.update(repr((_command("out", sanitize), sys.version)).encode())
    return h.hexdigest()[:16]


def module_path(sanitize=False):
    """The module's path, compiled first if this tree has not built it yet."""
    name = CONFIG["module"] + sysconfig.get_config_var("EXT_SUFFIX")
    out_dir = ROOT / "build" / "emulation" / (("asan-" if sanitize else "") + _digest(sanitize))
    output = out_dir / name
    if not output.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f".{name}.{os.getpid()}"
        result = subprocess.run(_command(partial, sanitize), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building the CUDA emulation failed:\n{result.stderr[-6000:]}")
        os.replace(partial, output)  # atomic: a concurrent build never sees half a file
    return output


def load(sanitize=False):
    """The imported module ``_ssd_cuda_emulation``."""
    if CONFIG["module"] in sys.modules:
        return sys.modules[CONFIG["module"]]
    spec = importlib.util.spec_from_file_location(CONFIG["module"], module_path(sanitize))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[CONFIG["module"]] = module
    return module
