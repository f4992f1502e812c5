"""``ssd_toolkit.estimate``: the fast paths for what users pass, else prepare + dispatch.

The fast paths take the common calls (three C-contiguous NumPy arrays or torch tensors of
one float dtype and shape; ``t`` a Python/NumPy scalar, a NumPy int/float ``[B]`` vector or
a torch CPU tensor; a finite ``M``) straight to the compiled kernel with the least Python
work, and return None for anything else or anything wrong: the general path
(``_arrays.prepare`` then ``_dispatch.run``) then handles it, errors and warnings included.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from . import _arrays, _dispatch, _extension
from ._cuda_glue import estimate_torch_cuda  # imports no torch and no compiled module
from ._dispatch import BACKENDS
from ._ssd_math import STAT_NAMES

__all__ = ["BACKENDS", "estimate"]


def estimate(eps_cond, eps_uncond, noise, t, M, *, return_stats=False, backend="auto"):
    """The Stable Score Distillation estimator (Algorithm 1), per sample.

    Args:
        eps_cond: conditional noise prediction, ``[B, ...]``; float16, bfloat16 (torch),
            float32 or float64; a NumPy array or a PyTorch tensor.
        eps_uncond: unconditional noise prediction, same shape, dtype, library and device.
        noise: the noise that made ``x_t``, same shape, dtype, library and device.
        t: timesteps, a scalar or a length-``B`` vector (ints or floats, finite).
        M: the threshold (finite). ``t_b > M`` gives ``h_b = eps_cond_b - eps_uncond_b``;
            ``t_b <= M`` gives ``(||h_b|| / ||eps_tilde_b||) * eps_tilde_b``.
        return_stats: also return the per-sample statistics of the same pass.
        backend: ``"auto"`` (compiled kernel if built, else the NumPy reference with a
            one-time warning), ``"compiled"`` (error if not built), ``"reference"``
            (NumPy, float64) or ``"torch"`` (PyTorch eager ops; torch inputs only).

    Returns:
        ``E``, with eps_cond's shape, dtype, library and device; with ``return_stats``,
        ``(E, stats)`` where ``stats`` maps ``r``, ``h_norm``, ``eps_tilde_norm``,
        ``eps_cond_norm``, ``noise_norm``, ``scale`` to float64 ``[B]`` arrays and
        ``mode_seeking`` to a bool ``[B]`` array (True where ``t_b <= M``), in the
        caller's library and device.

    Raises:
        TypeError: non-array inputs, mixed libraries, integer/complex dtypes or timesteps.
        ValueError: 0-d inputs, mismatched shapes/dtypes/devices, wrong-length or
            non-finite ``t``, non-finite ``M``, unknown backend.
        RuntimeError: a CUDA input without a CUDA build, or ``backend="compiled"``
            without a compiled module.

    Warns:
        UserWarning: one-element samples (likely a missing batch dimension), and torch
            inputs that require grad (the result is detached; see docs/api.md).
    """
    fast = backend == "auto" or backend == "compiled"
    kind = type(eps_cond)
    if kind is np.ndarray:
        if fast:
            result = _numpy_fast(eps_cond, eps_uncond, noise, t, M, return_stats)
            if result is not None:
                return result
    else:
        tensor = _tensor_type()
        if tensor is not None and isinstance(eps_cond, tensor):
            if _torch_types[3]():  # Dynamo is tracing: the fullgraph-safe custom op
                from ._torch_op import estimate_traced  # noqa: PLC0415 - Dynamo tracing only

                return estimate_traced(eps_cond, eps_uncond, noise, t, M, return_stats=return_stats, backend=backend)
            if fast and kind is tensor:
                result = _torch_fast(eps_cond, eps_uncond, noise, t, M, return_stats)
                if result is not None:
                    return result
    _dispatch.check_backend(backend)
    return _dispatch.run(_arrays.prepare(eps_cond, eps_uncond, noise, t, M), backend, return_stats)


# Native-byte-order float dtypes the NumPy fast path takes, by identity (no hashing).
_NUMPY_DTYPES = tuple((np.dtype(name), name) for name in ("float32", "float16", "float64"))
_torch_types = []  # [torch.Tensor, {dtype: name}, torch, is-Dynamo-tracing] once torch is imported


def _tensor_type():
    """torch.Tensor if torch is imported (never imports it), else None."""
    if _torch_types:
        return _torch_types[0]
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "Tensor"):
        return None
    names = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64"}
    compiler = torch.compiler
    tracing = getattr(compiler, "is_dynamo_compiling", compiler.is_compiling)  # the former: 1 call, not 3
    _torch_types.extend((torch.Tensor, names, torch, tracing))
    return torch.Tensor


def _fast_M(M):
    kind = type(M)
    if kind is float:
        return M if math.isfinite(M) else None
    if kind is int and -_arrays.HUGE_INT < M < _arrays.HUGE_INT:
        return float(M)
    return None


def _numpy_fast(eps_cond, eps_uncond, noise, t, M, return_stats):
    if type(eps_uncond) is not np.ndarray or type(noise) is not np.ndarray:
        return None
    dt = eps_cond.dtype
    for fast_dtype, name in _NUMPY_DTYPES:
        if dt is fast_dtype:
            break
    else:
        return None
    shape = eps_cond.shape
    if (
        eps_uncond.dtype is not dt
        or noise.dtype is not dt
        or eps_uncond.shape != shape
        or noise.shape != shape
        or not shape
        or not (eps_cond.flags.c_contiguous and eps_uncond.flags.c_contiguous and noise.flags.c_contiguous)
    ):
        return None
    B = shape[0]
    size = eps_cond.size
    M = _fast_M(M)
    if not B or size == B or M is None:  # empty batch, one-element samples (warned), bad M
        return None
    kernel = _extension.cpu_kernel()
    t64 = _arrays.fast_timesteps(t, B)
    if kernel is None or t64 is None:
        return None
    out = np.empty(shape, dt)
    if not return_stats:
        # The arrays themselves cross the boundary (buffer protocol): no address look-ups.
        kernel(eps_cond, eps_uncond, noise, out, t64, None, B, size // B, name, M)
        return out
    stats_buf = np.empty((6, B))
    kernel(eps_cond, eps_uncond, noise, out, t64, stats_buf, B, size // B, name, M)
    stats = dict(zip(STAT_NAMES, stats_buf))
    stats["mode_seeking"] = t64 <= M
    return out, stats


def _torch_fast(eps_cond, eps_uncond, noise, t, M, return_stats):
    """Torch tensors that need no conversion: CPU -> the CPU kernel on their memory, CUDA
    -> the eager CUDA glue. Tensors that require grad take the general path (it warns)."""
    tensor, names = _torch_types[0], _torch_types[1]
    if type(eps_uncond) is not tensor or type(noise) is not tensor:
        return None
    dt = eps_cond.dtype
    shape = eps_cond.shape
    name = names.get(dt)
    if (
        name is None
        or eps_uncond.dtype is not dt
        or noise.dtype is not dt
        or eps_uncond.shape != shape
        or noise.shape != shape
        or eps_cond.requires_grad
        or eps_uncond.requires_grad
        or noise.requires_grad
        or not shape
    ):
        return None
    B = shape[0]
    size = eps_cond.numel()
    M = _fast_M(M)
    if not B or size == B or M is None:
        return None
    path = _TORCH_DEVICE_PATHS.get(eps_cond.device.type)
    return None if path is None else path(eps_cond, eps_uncond, noise, t, M, return_stats, shape, B, size, name)


def _torch_cuda_fast(eps_cond, eps_uncond, noise, t, M, return_stats, shape, B, size, name):
    """CUDA tensors on one device -> the eager CUDA glue (one launch, no host sync)."""
    device = eps_cond.device
    if eps_uncond.device != device or noise.device != device or not _extension.has_cuda_kernel():
        return None
    return estimate_torch_cuda(eps_cond, eps_uncond, noise, t, M, return_stats, shape, size // B)


def _torch_cpu_fast(eps_cond, eps_uncond, noise, t, M, return_stats, shape, B, size, name):
    """Contiguous CPU tensors -> the CPU kernel on their memory (addresses, no copies)."""
    torch = _torch_types[2]
    if (
        eps_uncond.device.type != "cpu"
        or noise.device.type != "cpu"
        or not (eps_cond.is_contiguous() and eps_uncond.is_contiguous() and noise.is_contiguous())
    ):
        return None
    kernel = _extension.cpu_kernel()
    t64 = _arrays.fast_timesteps(t, B)
    if kernel is None or t64 is None:
        return None
    out = torch.empty(shape, dtype=eps_cond.dtype)
    stats = torch.empty((6, B), dtype=torch.float64) if return_stats else None
    kernel(
        eps_cond.data_ptr(),
        eps_uncond.data_ptr(),
        noise.data_ptr(),
        out.data_ptr(),
        t64,
        None if stats is None else stats.data_ptr(),
        B,
        size // B,
        name,
        M,
    )
    if stats is None:
        return out
    named = dict(zip(STAT_NAMES, stats.unbind(0)))
    named["mode_seeking"] = torch.from_numpy(t64 <= M)
    return out, named


# device.type -> the fast path for torch tensors there (bench/bench_cpu.py swaps in the CUDA
# path with a stubbed binding to count its host overhead on a machine without a GPU).
_TORCH_DEVICE_PATHS = {"cpu": _torch_cpu_fast, "cuda": _torch_cuda_fast}
