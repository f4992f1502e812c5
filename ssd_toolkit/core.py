"""``ssd_toolkit.estimate``: validation, backend choice, and the return in the caller's type."""

from __future__ import annotations

import math
import sys

import numpy as np

from . import _arrays, _extension
from .reference import STAT_NAMES, estimate_reference

BACKENDS = ("auto", "compiled", "reference", "torch")


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
    """
    if type(eps_cond) is np.ndarray and (backend == "auto" or backend == "compiled"):
        result = _estimate_numpy_fast(eps_cond, eps_uncond, noise, t, M, return_stats)
        if result is not None:
            return result
    if _traced_by_torch_compile(eps_cond):
        from ._torch_op import estimate_traced  # noqa: PLC0415 - Dynamo tracing only

        return estimate_traced(eps_cond, eps_uncond, noise, t, M, return_stats=return_stats, backend=backend)
    batch = _arrays.validate_arrays(eps_cond, eps_uncond, noise)
    M = _arrays.validate_threshold(M)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    chosen = _choose_backend(batch, backend)
    if chosen == "cuda":
        from . import _cuda_glue  # noqa: PLC0415 - only CUDA callers need it

        return _cuda_glue.estimate_cuda(batch, t, M, return_stats)
    t64 = _arrays.validate_timesteps(t, batch.B)
    rows = [_arrays.flat_rows(a, batch.B, batch.N) for a in (batch.eps_cond, batch.eps_uncond, batch.noise)]
    if chosen == "torch":
        E2d, stats = _estimate_torch(rows, t64, M, batch)
    elif chosen == "compiled":
        E2d, stats = _estimate_compiled_cpu(rows, t64, M)
    else:
        E2d, stats = _estimate_reference(rows, t64, M, batch)
    E = E2d.reshape(batch.shape)
    if not return_stats:
        return E
    return E, _stats_like(stats, rows[0])


# Native-byte-order float dtypes the fast path takes, by identity (no hashing on the hot path).
_FAST_DTYPES = tuple((np.dtype(name), name) for name in ("float32", "float16", "float64"))
_F64 = np.dtype("float64")


def _estimate_numpy_fast(eps_cond, eps_uncond, noise, t, M, return_stats):
    """The common case on the compiled CPU kernel with the least Python work: three
    C-contiguous native-order NumPy arrays of one float dtype and shape, a float64 ``[B]``
    array or a Python number for ``t``, a finite float or int ``M``. Returns None for
    anything else (or anything wrong): the general path then handles it, errors included.
    """
    if type(eps_uncond) is not np.ndarray or type(noise) is not np.ndarray:
        return None
    dt = eps_cond.dtype
    for fast_dtype, name in _FAST_DTYPES:
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
        or not shape[0]
        or not (eps_cond.flags.c_contiguous and eps_uncond.flags.c_contiguous and noise.flags.c_contiguous)
    ):
        return None
    type_M = type(M)
    if (type_M is not float and type_M is not int) or not math.isfinite(M):
        return None
    if not _extension.has_cpu_kernel():
        return None
    B = shape[0]
    type_t = type(t)
    if type_t is np.ndarray:
        # t . t is finite only if every t_b is (an overflow merely takes the general path).
        if t.dtype is not _F64 or t.shape != (B,) or not t.flags.c_contiguous or not math.isfinite(t.dot(t)):
            return None
        t64 = t
    elif (type_t is float or type_t is int) and math.isfinite(t):
        t64 = np.full(B, float(t))
    else:
        return None
    M = float(M)
    module = _extension.load()
    out = np.empty(shape, dt)
    stats_buf = np.empty((len(STAT_NAMES), B)) if return_stats else None
    # The arrays themselves cross the boundary (buffer protocol): no address look-ups here.
    module.estimate_cpu(eps_cond, eps_uncond, noise, out, t64, stats_buf, B, eps_cond.size // B, name, M)
    if not return_stats:
        return out
    stats = dict(zip(STAT_NAMES, stats_buf))
    stats["mode_seeking"] = t64 <= M
    return out, stats


def _traced_by_torch_compile(x):
    """True while torch.compile (Dynamo) traces a call on torch tensors: ``_torch_op`` then
    routes it through the ``ssd_toolkit::estimate`` custom op (fullgraph-safe)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor) and torch.compiler.is_compiling()


def _choose_backend(batch, backend):
    on_gpu = batch.device != "cpu"
    if backend == "torch":
        if batch.library != "torch":
            raise ValueError(f"backend: 'torch' needs torch tensors, got {batch.library} arrays")
        return "torch"
    if on_gpu:
        if backend == "reference":
            raise ValueError(
                f"backend: 'reference' runs on host arrays, got {batch.device} data; "
                "move the data to the CPU yourself or use backend='auto' with a CUDA build"
            )
        if not _extension.has_cuda_kernel():
            raise RuntimeError(
                f"eps_cond is on {batch.device} but ssd_toolkit was built without CUDA "
                f"({_extension.backends()['reason'] or 'no CUDA kernel compiled in'}); "
                "rebuild on a machine with nvcc: `pip install -e . --no-build-isolation` "
                "(SSD_TOOLKIT_CUDA_ARCHS selects the GPU architectures), or pass backend='torch'"
            )
        return "cuda"
    if backend == "reference":
        return "reference"
    if _extension.has_cpu_kernel():
        return "compiled"
    if backend == "compiled":
        raise RuntimeError(f"backend: 'compiled' requested but {_extension.backends()['reason']}; {_extension.BUILD_HINT}")
    _extension.warn_fallback_once()
    return "reference"


def _estimate_reference(rows, t64, M, batch):
    host = [_arrays.to_float64_numpy(r) for r in rows]
    E64, stats = estimate_reference(*host, t64, M)
    if batch.library == "torch":
        E = _arrays.from_numpy_like(E64, rows[0], dtype=rows[0].dtype)
    else:
        E = E64.astype(rows[0].dtype)
    return E, stats


def _estimate_torch(rows, t64, M, batch):
    import torch  # noqa: PLC0415 - torch inputs only

    from ._torch_impl import estimate_torch  # noqa: PLC0415

    accum = torch.float32 if rows[0].device.type == "mps" else torch.float64
    t = torch.from_numpy(t64).to(rows[0].device)
    E, stats = estimate_torch(*rows, t, M, accum_dtype=accum)
    return E, stats


def _estimate_compiled_cpu(rows, t64, M):
    """One call into the C++ CPU kernel; pointers and sizes only cross the boundary."""
    module = _extension.load()
    views = [_arrays.host_view(r) for r in rows]
    dtype = views[0][1]
    out = _arrays.empty_like_rows(rows[0])
    out_view, _ = _arrays.host_view(out)
    B, N = rows[0].shape
    stats_buf = np.empty((len(STAT_NAMES), B), dtype=np.float64)
    module.estimate_cpu(*(v for v, _ in views), out_view, t64, stats_buf, B, N, dtype, M)  # buffers, no addresses
    stats = dict(zip(STAT_NAMES, stats_buf))
    stats["mode_seeking"] = t64 <= M
    return out, stats


def _stats_like(stats, like):
    """Stats as float64/bool arrays in ``like``'s library and device."""
    if not _arrays.is_torch_tensor(like):
        return {k: np.asarray(v) for k, v in stats.items()}
    out = {}
    for k, v in stats.items():
        if _arrays.is_torch_tensor(v):
            out[k] = v.to(like.device)
        else:
            out[k] = _arrays.from_numpy_like(np.asarray(v), like)
    return out
