"""Torch CUDA tensors -> one fused kernel launch (``ssd_toolkit._C.estimate_cuda``).

The eager path is on every training step: it avoids views and device switches it does
not need (a few microseconds each), because the launch itself takes about as long.
Nothing here synchronises the device or copies array data to the host. Timesteps: a host
scalar travels as ``t_scalar``; a device tensor is used in place (cast to float64 on the
device if needed; its values are not checked for finiteness, which would need a host
round trip); a host vector is copied to the device once (asynchronously).

Self-test: the first launch on each device first runs a small random batch per dtype
through the kernel and compares it with PyTorch eager (``_torch_impl``); on a mismatch it
warns once with the numbers and that device uses the eager ops from then on (a guard for
an architecture the kernel has not been run on). ``SSD_TOOLKIT_CUDA_SELFTEST=0`` skips it.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch

from ...engine import extension as _extension
from ..batch import STAT_NAMES, stats_dict
from ..timestep_checks import check_kind, check_shape, fast_timesteps, host_timesteps

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
        if not _self_test_passed(module, c.device):
            return _launch_eager(c, u, n, out, t_dev, t_scalar, M, stats, B, N)
        module.estimate_cuda(*args, _raw_stream(index))
    else:
        with torch.cuda.device(index):
            if not _self_test_passed(module, c.device):
                return _launch_eager(c, u, n, out, t_dev, t_scalar, M, stats, B, N)
            module.estimate_cuda(*args, _raw_stream(index))


# ----------------------------------------------------------------------------- self-test
_SELF_TEST = {}  # device -> True (the kernel agrees with eager PyTorch) or False (eager ops used)
_SELF_TEST_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _self_test_passed(module, device):
    passed = _SELF_TEST.get(device)
    if passed is None:
        passed = _SELF_TEST[device] = os.environ.get("SSD_TOOLKIT_CUDA_SELFTEST", "1") == "0" or _self_test(module, device)
    return passed


def _self_test(module, device):
    """Every dtype, both branches, odd sizes: the kernel's E against eager PyTorch (float64
    sums) within the dtype's tolerance (relative to each sample's rms)."""
    from .eager import estimate_torch  # noqa: PLC0415

    generator = torch.Generator().manual_seed(0)
    t = torch.tensor([0.0, 999.0, 100.0, 600.0], dtype=torch.float64)
    for dtype, rtol in _SELF_TEST_TOLERANCE.items():
        for N in (37, 4099):
            c, u, n = (torch.randn(4, N, generator=generator, dtype=torch.float64).to(dtype).to(device) for _ in range(3))
            t_dev = t.to(device)
            out = torch.empty_like(c)
            module.estimate_cuda(c.data_ptr(), u.data_ptr(), n.data_ptr(), out.data_ptr(), t_dev.data_ptr(), 0.0, 0,
                                 4, N, _DTYPE_NAMES[dtype], 500.0, _raw_stream(device.index))
            ref, _ = estimate_torch(c, u, n, t_dev, 500.0)
            ref64, got = ref.double(), out.double()
            rms = ref64.pow(2).mean(1, keepdim=True).sqrt()
            error = ((got - ref64).abs() / (ref64.abs() + rms)).nan_to_num(float("inf")).max().item()
            if not error <= rtol:
                warnings.warn(
                    f"ssd_toolkit: the CUDA kernel disagrees with PyTorch eager on {device} ({_DTYPE_NAMES[dtype]}, "
                    f"[4, {N}]: relative error {error:.3g} > {rtol:g}); this device uses backend='torch' from now on "
                    "(please report it with `ssd-toolkit backends`; SSD_TOOLKIT_CUDA_SELFTEST=0 skips this check)",
                    RuntimeWarning,
                    stacklevel=5,
                )
                return False
    return True


def _launch_eager(c, u, n, out, t_dev, t_scalar, M, stats, B, N):
    """What ``launch_torch`` writes, computed by PyTorch eager ops (a failed self-test)."""
    from .eager import estimate_torch  # noqa: PLC0415

    t_vec = t_dev if t_dev is not None else torch.full((B,), float(t_scalar), dtype=torch.float64, device=c.device)
    E, named = estimate_torch(c.reshape(B, N), u.reshape(B, N), n.reshape(B, N), t_vec, float(M))
    out.view(B, N).copy_(E)
    if stats is not None:
        stats.copy_(torch.stack([named[name] for name in STAT_NAMES]))


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
