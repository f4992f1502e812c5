"""Backend choice and the general path: a prepared batch (``_arrays.prepare``) -> E (, stats).

``core.estimate`` tries its fast paths first and comes here for everything else; the
torch custom op (``_torch_op``) comes here for CPU tensors. Nothing here validates user
input again: ``_arrays.prepare`` did it once.
"""

from __future__ import annotations

import numpy as np

from . import _arrays, _extension
from ._ssd_math import STAT_NAMES
from .reference import estimate_reference

BACKENDS = ("auto", "compiled", "reference", "torch")


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def require_cuda_kernel(device):
    """Raises RuntimeError (how to rebuild) when data on ``device`` cannot run here."""
    if not _extension.has_cuda_kernel():
        raise RuntimeError(
            f"eps_cond is on {device} but ssd_toolkit was built without CUDA "
            f"({_extension.backends()['reason'] or 'no CUDA kernel compiled in'}); "
            "rebuild on a machine with nvcc: `pip install -e . --no-build-isolation` "
            "(SSD_TOOLKIT_CUDA_ARCHS selects the GPU architectures), or pass backend='torch'"
        )


def choose_backend(batch, backend):
    """'cuda', 'compiled', 'reference' or 'torch' for a batch (its ``device`` and ``library``)."""
    check_backend(backend)
    if backend == "torch":
        if batch.library != "torch":
            raise ValueError(f"backend: 'torch' needs torch tensors, got {batch.library} arrays")
        return "torch"
    if batch.device != "cpu":
        if backend == "reference":
            raise ValueError(
                f"backend: 'reference' runs on host arrays, got {batch.device} data; "
                "move the data to the CPU yourself or use backend='auto' with a CUDA build"
            )
        require_cuda_kernel(batch.device)
        return "cuda"
    if backend == "reference":
        return "reference"
    if _extension.has_cpu_kernel():
        return "compiled"
    if backend == "compiled":
        raise RuntimeError(f"backend: 'compiled' requested but {_extension.backends()['reason']}; {_extension.BUILD_HINT}")
    _extension.warn_fallback_once()
    return "reference"


def run(batch, backend, return_stats):
    """``E`` (or ``(E, stats)``) in the caller's library, device, dtype and shape."""
    chosen = choose_backend(batch, backend)
    if chosen == "cuda":
        from . import _cuda_glue  # noqa: PLC0415 - only CUDA callers need it

        return _cuda_glue.estimate_cuda(batch, batch.t, batch.M, return_stats)
    rows = [_arrays.flat_rows(a, batch.B, batch.N) for a in (batch.eps_cond, batch.eps_uncond, batch.noise)]
    if chosen == "torch":
        E2d, stats = _run_torch(rows, batch.t64, batch.M)
    elif chosen == "compiled":
        E2d, stats = _run_compiled_cpu(rows, batch.t64, batch.M)
    else:
        E2d, stats = _run_reference(rows, batch.t64, batch.M, batch.library)
    E = E2d.reshape(batch.shape)
    if not return_stats:
        return E
    return E, _stats_like(stats, rows[0])


def _run_reference(rows, t64, M, library):
    E64, stats = estimate_reference(*(_arrays.to_float64_numpy(r) for r in rows), t64, M)
    if library == "torch":
        return _arrays.from_numpy_like(E64, rows[0], dtype=rows[0].dtype), stats
    return E64.astype(rows[0].dtype), stats


def _run_torch(rows, t64, M):
    import torch  # noqa: PLC0415 - torch inputs only

    from ._torch_impl import estimate_torch  # noqa: PLC0415

    accum = torch.float32 if rows[0].device.type == "mps" else torch.float64
    return estimate_torch(*rows, torch.from_numpy(t64).to(rows[0].device), M, accum_dtype=accum)


def _run_compiled_cpu(rows, t64, M):
    """One call into the C++ CPU kernel; buffers and sizes only cross the boundary."""
    views = [_arrays.host_view(r) for r in rows]
    out = _arrays.empty_like_rows(rows[0])
    out_view, _ = _arrays.host_view(out)
    B, N = rows[0].shape
    stats_buf = np.empty((len(STAT_NAMES), B), dtype=np.float64)
    _extension.cpu_kernel()(*(v for v, _ in views), out_view, t64, stats_buf, B, N, views[0][1], M)
    stats = dict(zip(STAT_NAMES, stats_buf))
    stats["mode_seeking"] = t64 <= M
    return out, stats


def _stats_like(stats, like):
    """Stats as float64/bool arrays in ``like``'s library and device."""
    if not _arrays.is_torch_tensor(like):
        return {k: np.asarray(v) for k, v in stats.items()}
    return {
        k: v.to(like.device) if _arrays.is_torch_tensor(v) else _arrays.from_numpy_like(np.asarray(v), like)
        for k, v in stats.items()
    }
