"""Lazy loading of the compiled module ``ssd_toolkit._C``.

``import ssd_toolkit`` never fails: the compiled module is imported on first use, and a
missing or broken build falls back to the NumPy reference with a one-time warning.
``backends()`` reports what is available and why something is not.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
JAX_LIBRARY = PACKAGE / "_ssd_jax_ffi.so"  # built by engine/jax_build.py
JAX_CUDA_LIBRARY = PACKAGE / "_ssd_jax_ffi_cuda.so"
TORCH_OP_LIBRARY = PACKAGE / "_torch_ops.so"  # built by engine/torch_op_build.py

_state = {"loaded": False, "module": None, "error": None}

BUILD_HINT = (
    "build it with `pip install -e .` (a C++17 compiler, pybind11 and ninja are needed; "
    "CUDA is compiled in when nvcc is found, see docs/kernels.md)"
)


def load():
    """The compiled module, or None (the reason is kept for ``backends()``)."""
    if not _state["loaded"]:
        _state["loaded"] = True
        try:
            _state["module"] = importlib.import_module("ssd_toolkit._C")
        except Exception as exc:  # ImportError, or a broken .so raising OSError
            _state["error"] = f"{type(exc).__name__}: {exc}"
    return _state["module"]


FALLBACK_NAMES = {"reference": "the NumPy reference backend", "torch": "PyTorch eager ops (backend='torch')"}


def warn_fallback_once(missing="the compiled module", fallback="reference"):
    """The one-time RuntimeWarning of ``dispatch.kernel_or_fallback`` (once per fallback)."""
    key = f"warned_{fallback}"
    if not _state.get(key):
        _state[key] = True
        why = _state["error"] if missing == "the compiled module" else "nvcc was not found when it was built"
        warnings.warn(
            f"ssd_toolkit: {missing} is not available ({why}); using {FALLBACK_NAMES[fallback]}, which is slower. "
            + BUILD_HINT,
            RuntimeWarning,
            stacklevel=4,
        )


def cpu_kernel():
    """The compiled ``estimate_cpu``, or None (looked up once)."""
    if "cpu_kernel" not in _state:
        _state["cpu_kernel"] = getattr(load(), "estimate_cpu", None)
    return _state["cpu_kernel"]


def has_cpu_kernel() -> bool:
    return cpu_kernel() is not None


def has_cuda_kernel() -> bool:
    """True when the CUDA kernel is compiled into the module (says nothing about a GPU)."""
    if "cuda_kernel" not in _state:
        mod = load()
        _state["cuda_kernel"] = mod is not None and bool(getattr(mod, "compiled_with_cuda", lambda: False)())
    return _state["cuda_kernel"]


def cuda_device_status():
    """``(usable, reason)``: whether the CUDA runtime of the compiled kernel finds a device."""
    if not has_cuda_kernel():
        return False, "the CUDA kernel is not compiled in"
    if "cuda_device" not in _state:
        try:
            load().cuda_current_device()
            _state["cuda_device"] = (True, None)
        except RuntimeError as exc:  # no driver, no device
            _state["cuda_device"] = (False, str(exc))
    return _state["cuda_device"]


def backends() -> dict:
    """What can run here.

    Returns:
        A dict with ``reference`` (always True); ``cpu`` and ``cuda`` (bools: the CPU and
        the CUDA kernel are compiled in); ``cuda_device`` (bool: the compiled CUDA kernel's
        runtime finds a usable driver and device); ``reason`` (why the compiled module
        failed to load, or None); ``cuda_device_reason`` (why no CUDA device is usable, or
        None); ``jax_ffi`` (bool: the optional JAX extension is built, see docs/api.md);
        ``torch_op`` (bool: the C++ torch op library is built; torch calls then run through it,
        else through the Python-defined op of the same schema; docs/kernels.md).
    """
    load()
    usable, why = cuda_device_status()
    return {
        "reference": True,
        "cpu": has_cpu_kernel(),
        "cuda": has_cuda_kernel(),
        "cuda_device": usable,
        "reason": _state["error"],
        "cuda_device_reason": why,
        "jax_ffi": JAX_LIBRARY.exists(),
        "torch_op": TORCH_OP_LIBRARY.exists(),
    }
