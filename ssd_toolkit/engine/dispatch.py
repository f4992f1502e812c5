"""Compute backends: the one policy for what runs when a kernel is not built
(``kernel_or_fallback``), and the host runner.

The array backends (``ssd_toolkit.frameworks``) decide where a batch's data live and ask
``kernel_or_fallback`` whether the compiled kernel or their library's own maths runs it; for
data in host memory they call ``run_host`` here, which needs nothing of the library but the
backend's conversion hooks. Nothing here validates user input again: the boundary did.
"""

from __future__ import annotations

import numpy as np

from . import extension as _extension
from .maths import NUM_STATS, STAT_NAMES, stats_dict
from .reference import estimate_reference

BACKENDS = ("auto", "compiled", "reference", "torch")


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def kernel_or_fallback(backend, device, fallback):
    """The one kernel-missing policy: ``"compiled"`` where the kernel for ``device`` data (a
    torch.device or "cpu"/"cuda...") is built; otherwise ``fallback`` (the library's own maths:
    "reference" on the host, "torch" for torch tensors on a GPU) under ``backend="auto"``, with a
    one-time RuntimeWarning, and the error saying how to build under ``"compiled"`` or where the
    library has no fallback (``fallback=None``). Every backend and host asks here."""
    cuda = str(device).startswith("cuda")
    if _extension.has_cuda_kernel() if cuda else _extension.has_cpu_kernel():
        return "compiled"
    if backend == "compiled" or fallback is None:
        if cuda:
            require_cuda_kernel(device)
        raise RuntimeError(f"backend: 'compiled' requested but {_extension.backends()['reason']}; {_extension.BUILD_HINT}")
    _extension.warn_fallback_once("the CUDA kernel" if cuda else "the compiled module", fallback)
    return fallback


def require_cuda_kernel(device):
    """Raises RuntimeError (how to rebuild) when data on ``device`` cannot run here."""
    if not _extension.has_cuda_kernel():
        raise RuntimeError(
            f"eps_cond is on {device} but ssd_toolkit was built without CUDA "
            f"({_extension.backends()['reason'] or 'no CUDA kernel compiled in'}); "
            "rebuild on a machine with nvcc: `pip install -e . --no-build-isolation` "
            "(SSD_TOOLKIT_CUDA_ARCHS selects the GPU architectures), or pass backend='torch'"
        )


def choose_host(backend, library):
    """'compiled' or 'reference' for host data of ``library`` under ``backend``."""
    check_backend(backend)
    if backend == "torch":
        raise ValueError(f"backend: 'torch' needs torch tensors, got {library} arrays")
    if backend == "reference":
        return "reference"
    return kernel_or_fallback(backend, "cpu", "reference")


def run_host(framework, batch, backend, return_stats):
    """``E`` (or ``(E, stats)``) for a batch in host memory, in the caller's library.

    ``framework`` provides ``flat_rows``, ``host_view`` (a NumPy view of contiguous rows
    and the kernel's dtype name), ``empty_rows``, ``to_host_float64``, ``from_host`` and
    ``reshape``.
    """
    chosen = choose_host(backend, framework.name)
    B, N, t64, M = batch.B, batch.N, batch.t64, batch.M
    rows = [framework.flat_rows(a, B, N) for a in batch.arrays]
    if chosen == "compiled":
        out = framework.empty_rows(rows[0])
        views = [framework.host_view(r) for r in (*rows, out)]
        stats = np.empty((NUM_STATS, B)) if return_stats else None
        _extension.cpu_kernel()(*(v for v, _ in views), t64, stats, B, N, views[0][1], M)
    else:
        E64, named = estimate_reference(*(framework.to_host_float64(r) for r in rows), t64, M)
        out = framework.from_host(E64, rows[0], batch.dtype)
        stats = np.stack([named[name] for name in STAT_NAMES]) if return_stats else None
    E = framework.reshape(out, batch.shape)
    if not return_stats:
        return E
    return E, stats_dict(framework.from_host(stats, rows[0]), framework.from_host(t64 <= M, rows[0]))
