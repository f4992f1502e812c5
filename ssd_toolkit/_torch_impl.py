"""The SSD estimator in plain PyTorch eager ops, same semantics as ``reference.py``.

Used as ``estimate(..., backend="torch")`` (e.g. on a GPU without the compiled CUDA
kernel) and as the eager / ``torch.compile`` baseline in ``bench/``. Sums accumulate in
float64 (float32 where the device lacks float64, e.g. Apple MPS).
"""

from __future__ import annotations

import torch

from .reference import COLLINEAR_RTOL2


def estimate_torch(eps_cond, eps_uncond, noise, t, M: float, accum_dtype=torch.float64):
    """SSD estimator on ``[B, N]`` tensors.

    Args:
        eps_cond, eps_uncond, noise: tensors ``[B, N]`` of one float dtype and device.
        t: tensor ``[B]`` on the same device.
        M: float threshold.
        accum_dtype: dtype of the per-sample sums.

    Returns:
        ``(E, stats)``: E in eps_cond's dtype, stats as in ``reference.estimate_reference``.
    """
    c = eps_cond.to(accum_dtype)
    u = eps_uncond.to(accum_dtype)
    n = noise.to(accum_dtype)
    h = c - u
    hh = (h * h).sum(1)
    cc = (c * c).sum(1)
    cn = (c * n).sum(1)
    nn = (n * n).sum(1)
    has_noise = nn > 0
    safe_nn = torch.where(has_noise, nn, torch.ones_like(nn))
    r = torch.where(has_noise, cn / safe_nn, torch.zeros_like(nn))
    et2 = torch.where(has_noise, cc - cn * cn / safe_nn, cc).clamp_min(0)  # clamp keeps NaN
    degenerate = et2 <= COLLINEAR_RTOL2 * cc
    safe_et2 = torch.where(degenerate, torch.ones_like(et2), et2)
    scale = torch.where(degenerate, torch.zeros_like(et2), hh.sqrt() / safe_et2.sqrt())
    finite = hh.isfinite() & cc.isfinite() & cn.isfinite() & nn.isfinite()
    output_scale = torch.where(finite, scale, torch.full_like(scale, float("nan")))
    mode_seeking = t.to(accum_dtype) <= M
    rescaled = output_scale[:, None] * (c - r[:, None] * n)
    E = torch.where(mode_seeking[:, None], rescaled, h).to(eps_cond.dtype)
    stats = {
        "r": r,
        "h_norm": hh.sqrt(),
        "eps_tilde_norm": et2.sqrt(),
        "eps_cond_norm": cc.sqrt(),
        "noise_norm": nn.sqrt(),
        "scale": scale,
        "mode_seeking": mode_seeking,
    }
    return E, stats
