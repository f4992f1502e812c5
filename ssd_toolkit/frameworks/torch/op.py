"""``torch.ops.ssd_toolkit.estimate``: the estimator as one torch op, whatever the caller's transforms.

Where the op library is built (``csrc/torch/``, ``engine/torch_op_build.py``; scripts/install.sh
builds it) the op is registered from C++: CPU and CUDA kernels that call the compiled cores,
a Meta kernel, checks in C++, and the no-gradient rule (E and stats are constants), all without
a Python frame; its kernels sit behind ``ssd_toolkit::estimate_kernel``. Where it is not built
(e.g. torch installed after ssd_toolkit) the same schema is defined here with
``torch.library.custom_op``, its kernels calling the same cores. Either way this module adds
the vmap rule: vmapped dimensions are folded into the batch, so every leading axis indexes
samples and samples never mix.

Schema: ``estimate(Tensor eps_cond, Tensor eps_uncond, Tensor noise, Tensor? t, float t_scalar,
float M, bool return_stats) -> (Tensor E, Tensor stats)`` on ``[B, ...]`` inputs (E has
eps_cond's shape); ``t`` is None (every sample has ``t_scalar``) or ``[B]`` of any real dtype on
the data's device; ``stats`` is float64 ``[6, B]`` (rows ``STAT_NAMES``), or ``[6, 0]`` without
stats.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ...engine import dispatch, torch_op_build
from ...engine import extension as _extension
from ...engine.maths import NUM_STATS, STAT_NAMES
from ...engine.reference import estimate_reference


def estimate_op():
    """The op's default overload (``torch.ops.ssd_toolkit.estimate.default``)."""
    return ESTIMATE


def kernel_op():
    """The overload that holds the kernels, for inputs that need no autograd handling: the C++
    ``estimate_kernel`` (no grad-mode switch, one dispatch less) or the Python op itself."""
    return KERNEL


def op_status():
    """``(registered_from_cpp, reason)``: how the op is defined; the reason why the C++
    registration is not used, or None."""
    if not COMPILED and os.environ.get("SSD_TOOLKIT_TORCH_OP") == "0":
        return False, "SSD_TOOLKIT_TORCH_OP=0"
    return COMPILED, torch_op_build.reason()


def _define_python_op():
    """The op's schema and kernels in Python, for an install without the op library."""

    @torch.library.custom_op("ssd_toolkit::estimate", mutates_args=(), device_types=("cuda",))
    def python_op(
        eps_cond: torch.Tensor,
        eps_uncond: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor | None,
        t_scalar: float,
        M: float,
        return_stats: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CUDA: one fused kernel launch on the current stream."""
        from .cuda import launch_torch  # noqa: PLC0415

        dispatch.kernel_or_fallback("compiled", eps_cond.device, None)  # a CPU-only build: how to rebuild
        B = eps_cond.shape[0]
        N = math.prod(eps_cond.shape[1:])
        rows = [x.contiguous() for x in (eps_cond, eps_uncond, noise)]
        out = torch.empty_like(eps_cond, memory_format=torch.contiguous_format)
        stats = _empty_stats(eps_cond, B if return_stats else 0)
        t_dev = None if t is None else t.to(device=eps_cond.device, dtype=torch.float64).contiguous()
        launch_torch(*rows, out, t_dev, t_scalar, M, stats if return_stats else None, B, N)
        return out, stats

    @python_op.register_kernel("cpu")
    def _cpu(eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats):
        """The compiled CPU kernel on the rows, else the NumPy reference (``dispatch.kernel_or_fallback``)."""
        B = eps_cond.shape[0]
        N = math.prod(eps_cond.shape[1:])
        t64 = np.full(B, t_scalar) if t is None else t.to(torch.float64).contiguous().numpy()
        if not np.isfinite(t64).all():  # a host read is free here (under vmap too)
            bad = int(np.flatnonzero(~np.isfinite(t64))[0])
            raise ValueError(f"t: expected finite timesteps, got t[{bad}]={t64[bad]}")
        rows = [x.contiguous().view(B, N) for x in (eps_cond, eps_uncond, noise)]
        out = torch.empty(eps_cond.shape, dtype=eps_cond.dtype)
        stats = _empty_stats(eps_cond, B if return_stats else 0)
        if dispatch.kernel_or_fallback("auto", "cpu", "reference") == "compiled":
            pointers = [r.data_ptr() for r in (*rows, out)]
            dtype = str(eps_cond.dtype).replace("torch.", "")
            _extension.cpu_kernel()(*pointers, t64, stats.data_ptr() if return_stats else None, B, N, dtype, M)
            return out, stats
        E64, named = estimate_reference(*(r.to(torch.float64).numpy() for r in rows), t64, M)
        out.view(B, N).copy_(torch.from_numpy(E64))
        if return_stats:
            stats.copy_(torch.from_numpy(np.stack([named[s] for s in STAT_NAMES])))
        return out, stats

    @python_op.register_fake
    def _fake(eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats):
        B = eps_cond.shape[0]
        E = torch.empty_like(eps_cond, memory_format=torch.contiguous_format)
        return E, _empty_stats(eps_cond, B if return_stats else 0)

    python_op.register_autograd(_no_gradient, setup_context=_setup_context)


def _setup_context(ctx, inputs, output):
    pass


def _no_gradient(ctx, grad_E, grad_stats):
    """The estimator is not differentiable: no gradient reaches its inputs (see docs/api.md)."""
    return None, None, None, None, None, None, None


def _estimate_vmap(info, in_dims, eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats):
    """Vmapped dims folded into the batch: ``[V, B, ...]`` inputs become ``[V * B, ...]``."""
    V = info.batch_size

    def front(x, dim):
        return x.movedim(dim, 0) if dim is not None else x.expand(V, *x.shape)

    c, u, n = (front(x, d) for x, d in zip((eps_cond, eps_uncond, noise), in_dims[:3]))
    B, rest = c.shape[1], c.shape[2:]
    flat = [x.reshape(V * B, *rest) for x in (c, u, n)]
    t_flat = None if t is None else front(t, in_dims[3]).reshape(V * B)
    E, stats = torch.ops.ssd_toolkit.estimate(*flat, t_flat, t_scalar, M, return_stats)
    stats = stats.reshape(NUM_STATS, V, B if return_stats else 0)
    return (E.reshape(V, B, *rest), stats), (0, 1)


def _empty_stats(like, B):
    return torch.empty((NUM_STATS, B), dtype=torch.float64, device=like.device)


# At import, not at first call: the first call of a process may be inside torch.compile, which
# runs imports natively but cannot trace loading a library or defining an op.
# SSD_TOOLKIT_TORCH_OP=0 keeps the C++ library unloaded (the Python op then serves; its tests use it).
COMPILED = os.environ.get("SSD_TOOLKIT_TORCH_OP", "1") != "0" and torch_op_build.load()
if not COMPILED:
    _define_python_op()
# C++: ``estimate`` (composite, grad mode off) calls ``estimate_kernel``; vmap may reach either.
for _name in ("estimate", "estimate_kernel") if COMPILED else ("estimate",):
    torch.library.register_vmap(f"ssd_toolkit::{_name}", _estimate_vmap)
ESTIMATE = torch.ops.ssd_toolkit.estimate.default
KERNEL = torch.ops.ssd_toolkit.estimate_kernel.default if COMPILED else ESTIMATE
