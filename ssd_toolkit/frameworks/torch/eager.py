"""The SSD estimator in plain PyTorch eager ops, same semantics as ``engine/reference.py``.

Used as ``estimate(..., backend="torch")`` (e.g. on a GPU without the compiled CUDA
kernel) and as the eager / ``torch.compile`` baseline in ``bench/``. Sums accumulate in
float64 (float32 where the device lacks float64, e.g. Apple MPS).
"""

from __future__ import annotations

import torch

from ...engine.array_ops import ModuleOps
from ...engine.maths import estimate_rows

TORCH_OPS = ModuleOps(torch)  # engine.maths' xp for tensors


def estimate_torch(eps_cond, eps_uncond, noise, t, M: float, accum_dtype=torch.float64):
    """SSD estimator on ``[B, N]`` tensors.

    Args:
        eps_cond, eps_uncond, noise: tensors ``[B, N]`` of one float dtype and device.
        t: tensor ``[B]`` on the same device.
        M: float threshold.
        accum_dtype: dtype of the per-sample sums and of the arithmetic.

    Returns:
        ``(E, stats)``: E in eps_cond's dtype, stats as in ``reference.estimate_reference``.
    """
    c, u, n = (x.to(accum_dtype) for x in (eps_cond, eps_uncond, noise))
    E, stats = estimate_rows(TORCH_OPS, c, u, n, t.to(accum_dtype) <= M)
    return E.to(eps_cond.dtype), stats
