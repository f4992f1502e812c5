"""Builds and loads the torch op library ``ssd_toolkit/_torch_ops.so`` (``csrc/torch/``).

The library registers ``torch.ops.ssd_toolkit.estimate`` from C++ on torch's stable C ABI
(docs/kernels.md, "The torch op"). It is compiled against the installed torch's headers,
so it is built after the install, in the user's environment:
``python -m ssd_toolkit.engine.torch_op_build`` (scripts/install.sh does it when torch is
installed), with ninja (the same commands one by one without it) and the flags of the
``torch_op`` section of csrc/build_config.json. It compiles no kernel: at load it receives
the entry points of ``ssd_toolkit._C`` (``_C.core_table()``), so ``_C`` must import.

``load()`` loads it once and says whether the op is available; ``reason()`` says why not.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .extension import PACKAGE, TORCH_OP_LIBRARY

ROOT = PACKAGE.parent
BUILD_DIR = ROOT / "build" / "torch_op"

_state = {"loaded": None, "reason": None}


def _config(root=ROOT):
    return json.loads((root / "csrc" / "build_config.json").read_text())


def library_path() -> Path:
    """Where the op library is built and loaded from (inside the package, git-ignored)."""
    return ROOT / _config()["torch_op"]["library"] if (ROOT / "csrc").is_dir() else TORCH_OP_LIBRARY


def source_root():
    """The checkout holding csrc/torch (an editable or in-tree install), or None."""
    try:
        sources = _config()["torch_op"]["sources"]
    except (OSError, KeyError, ValueError):
        return None
    return ROOT if all((ROOT / s).exists() for s in sources) else None


def build_steps(root, output):
    """``(variables, steps)`` for ninja: ``steps`` are ``(rule, out, inputs)``."""
    from torch.utils.cpp_extension import include_paths, library_paths  # noqa: PLC0415

    config = _config(root)
    op = config["torch_op"]
    cflags = [f"-std=c++{config['cxx']['standard']}", "-fPIC", *op["flags"]]
    cflags += [f"-D{d}" for d in op["defines"]]
    cflags += [f"-I{root / d}" for d in config["include_dirs"]]
    cflags += [x for d in include_paths() for x in ("-isystem", d)]
    libs = library_paths()
    ldflags = ["-shared", *op["link_flags"], *(f"-L{d}" for d in libs), *(f"-Wl,-rpath,{d}" for d in libs)]
    ldflags += [f"-l{lib}" for lib in op["libraries"]]
    steps = [("compile", str(BUILD_DIR / (Path(s).stem + ".o")), [str(root / s)]) for s in op["sources"]]
    steps.append(("link", str(output), [out for _, out, _ in steps]))
    variables = {"cxx": os.environ.get("CXX", "c++"), "cflags": cflags, "ldflags": ldflags}
    return variables, steps


RULES = {
    "compile": "$cxx -MMD -MF $out.d $cflags -c $in -o $out",
    "link": "$cxx $in -o $out $ldflags",
}


def _ninja_file(variables, steps):
    lines = ["ninja_required_version = 1.3"]
    lines += [f"{k} = {v if isinstance(v, str) else shlex.join(v)}" for k, v in variables.items()]
    for name, command in RULES.items():
        lines += [f"rule {name}", f"  command = {command}"]
        if name == "compile":
            lines += ["  depfile = $out.d", "  deps = gcc"]
    lines += [f"build {out}: {rule} {' '.join(inputs)}" for rule, out, inputs in steps]
    return "\n".join(lines) + "\n"


def _find_ninja():
    try:
        import ninja  # noqa: PLC0415

        return os.path.join(ninja.BIN_DIR, "ninja")
    except ImportError:
        return shutil.which("ninja")


def _run(command, quiet):
    if not quiet:
        print(command if isinstance(command, str) else shlex.join(command), file=sys.stderr)
    result = subprocess.run(command, shell=isinstance(command, str), capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"building the torch op failed:\n{(result.stdout + result.stderr)[-4000:]}")


def build(output=None, quiet=False):
    """Compiles the op library (only what changed); returns its path. Raises RuntimeError
    with the reason (no torch, no sources, a compile error)."""
    try:
        import torch  # noqa: PLC0415, F401
    except ImportError:
        raise RuntimeError("torch is not installed (pip install 'ssd_toolkit[torch]')") from None
    root = source_root()
    if root is None:
        raise RuntimeError(f"the C++ sources (csrc/torch/) are not beside {PACKAGE}; build from a checkout")
    output = Path(output) if output else library_path()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    variables, steps = build_steps(root, output)
    ninja = _find_ninja()
    if ninja:
        (BUILD_DIR / "build.ninja").write_text(_ninja_file(variables, steps))
        _run([ninja, "-C", str(BUILD_DIR), "-j", os.environ.get("MAX_JOBS", "2")], quiet)
        return output
    for rule, out, inputs in steps:
        command = RULES[rule].replace("$in", shlex.join(inputs)).replace("$out", shlex.quote(out))
        for k, v in variables.items():
            command = command.replace(f"${k}", v if isinstance(v, str) else shlex.join(v))
        _run(command, quiet)
    return output


def load() -> bool:
    """Loads the op library once (``torch.ops.load_library``) and binds it to the kernels of
    ``ssd_toolkit._C``; True when ``torch.ops.ssd_toolkit.estimate`` is then available,
    False with the reason kept for ``reason()``. Imports torch."""
    if _state["loaded"] is None:
        _state["loaded"], _state["reason"] = _load()
    return _state["loaded"]


def reason():
    """Why ``load()`` returned False (None when it returned True or was not called)."""
    return _state["reason"]


def _load():
    import ctypes  # noqa: PLC0415

    from . import extension  # noqa: PLC0415

    path = library_path()
    if not path.exists():
        return False, f"{path.name} is not built (python -m ssd_toolkit.engine.torch_op_build)"
    core = extension.load()
    if core is None or not hasattr(core, "core_table"):
        why = extension._state["error"] or "it has no core_table(): rebuild it with pip install -e ."
        return False, f"the op library calls the kernels of ssd_toolkit._C, which is not usable ({why})"
    import torch  # noqa: PLC0415

    try:
        torch._C._dispatch_find_schema_or_throw("ssd_toolkit::estimate", "")
        return False, "an op ssd_toolkit::estimate is already defined in this process (load the library first)"
    except RuntimeError:  # not defined: the library may define it
        pass
    try:
        torch.ops.load_library(str(path))
    except Exception as exc:  # OSError (a stale or foreign binary), RuntimeError (a second registration)
        return False, f"loading {path.name} failed ({type(exc).__name__}: {exc})"
    bind = ctypes.CDLL(str(path)).ssd_toolkit_torch_op_bind
    bind.argtypes, bind.restype = [ctypes.c_void_p], ctypes.c_char_p
    error = bind(core.core_table())
    if error:
        return False, f"binding {path.name} to ssd_toolkit._C failed: {error.decode()}"
    return True, None


if __name__ == "__main__":
    try:
        print(f"built {build(quiet=True)}")
    except RuntimeError as exc:
        raise SystemExit(f"torch_op_build: {exc}") from None
