"""Torch CUDA tensors -> one fused kernel launch (``ssd_toolkit._C.estimate_cuda``).

The eager path is on every training step: it avoids views and device switches it does
not need (a few microseconds each), because the launch itself takes about as long.
Nothing here synchronises the device or copies array data to the host. Timesteps: a host
scalar travels as ``t_scalar``; a device tensor is used in place (cast to float64 on the
device if needed; its values are not checked for finiteness, which would need a host
round trip); a host vector is copied to the device once (asynchronously).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _extension
from .batch import STAT_NAMES, stats_dict
from .timesteps import check_kind, check_shape, fast_timesteps, host_timesteps

_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64"}


def launch_torch(c, u, n, out, t_dev, t_scalar, M, stats, B, N):
    """Launches the kernel on torch tensors (asynchronous, on the current stream).

    Args:
        c, u, n: C-contiguous CUDA tensors of ``B * N`` elements, one dtype, one device.
        out: a C-contiguous tensor like ``c`` that receives E.
        t_dev: float64 contiguous ``[B]`` tensor on that device, or None (use t_scalar).
        t_scalar: timestep of every sample when ``t_dev`` is None.
        M: float threshold.
        stats: None or a float64 ``[6, B]`` contiguous tensor on that device (filled).
        B, N: batch size and sample size.
    """
    index = c.device.index
    args = (
        c.data_ptr(),
        u.data_ptr(),
        n.data_ptr(),
        out.data_ptr(),
        0 if t_dev is None else t_dev.data_ptr(),
        float(t_scalar),
        0 if stats is None else stats.data_ptr(),
        B,
        N,
        _DTYPE_NAMES[c.dtype],
        float(M),
    )
    module = _extension.load()
    if torch.cuda.current_device() == index:
        module.estimate_cuda(*args, _raw_stream(index))
    else:
        with torch.cuda.device(index):
            module.estimate_cuda(*args, _raw_stream(index))


def _raw_stream(index):
    """The current ``cudaStream_t`` of device ``index`` as an int."""
    get = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return get(index) if get is not None else torch.cuda.current_stream(index).cuda_stream


def torch_timesteps(t, B, device):
    """``(t_dev or None, t_scalar)`` for a launch on ``device`` (no host round trip).

    Raises:
        TypeError: complex or non-numeric timesteps.
        ValueError: wrong length, non-finite host values, or a tensor on another device.
    """
    if type(t) is np.ndarray and t.ndim == 1:  # a sampler's int64 vector: one conversion
        t64 = fast_timesteps(t, B)
        if t64 is not None:
            return torch.from_numpy(t64).to(device, non_blocking=True), 0.0
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
        return None, float(t)
    if isinstance(t, torch.Tensor) and t.device.type != "cpu":
        if t.device != device:
            raise ValueError(f"t: expected a host value or a tensor on {device} (eps_cond's device), got {t.device}")
        check_kind(str(t.dtype).replace("torch.", ""))
        check_shape(t.shape, B)
        if t.ndim == 0:
            return t.to(torch.float64).reshape(1).expand(B).contiguous(), 0.0
        return t.to(torch.float64).contiguous(), 0.0
    if (t.ndim if isinstance(t, torch.Tensor) else np.ndim(t)) == 0:
        return None, float(host_timesteps(t, 1)[0])
    return torch.from_numpy(host_timesteps(t, B)).to(device, non_blocking=True), 0.0


def estimate_torch_cuda(eps_cond, eps_uncond, noise, t, M, return_stats, shape, N):
    """The eager route: launch on the inputs as they are (copies only for non-contiguous
    ones), output in eps_cond's shape."""
    B = shape[0]
    device = eps_cond.device
    c = eps_cond if eps_cond.is_contiguous() else eps_cond.contiguous()
    u = eps_uncond if eps_uncond.is_contiguous() else eps_uncond.contiguous()
    n = noise if noise.is_contiguous() else noise.contiguous()
    t_dev, t_scalar = torch_timesteps(t, B, device)
    out = torch.empty(shape, dtype=eps_cond.dtype, device=device)
    stats = torch.empty((len(STAT_NAMES), B), dtype=torch.float64, device=device) if return_stats else None
    launch_torch(c, u, n, out, t_dev, t_scalar, M, stats, B, N)
    if not return_stats:
        return out
    return out, stats_dict(stats, mode_seeking(t_dev, t_scalar, M, B, device))


def mode_seeking(t_dev, t_scalar, M, B, device):
    """The bool ``[B]`` mask ``t_b <= M`` on ``device``."""
    if t_dev is None:
        return torch.full((B,), bool(t_scalar <= M), dtype=torch.bool, device=device)
    return t_dev <= M
