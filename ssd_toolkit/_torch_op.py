"""``torch.ops.ssd_toolkit.estimate``: the estimator as a ``torch.library`` custom op.

Eager calls of ``ssd_toolkit.estimate`` on CUDA tensors launch the kernel directly
(``_cuda_glue``; no dispatcher overhead). Under ``torch.compile`` (Dynamo tracing),
``core.estimate`` hands torch inputs to ``estimate_traced`` below, whose validation is
plain tensor-metadata code Dynamo can trace, and whose compute is this opaque custom op:
its fake implementation gives the output shapes, so ``fullgraph=True`` holds and
Inductor / CUDA graphs (``mode="reduce-overhead"``) see one node. The op runs the fused
CUDA kernel on CUDA tensors and the host path (compiled CPU kernel or NumPy reference) on
CPU tensors.

Op schema: ``estimate(Tensor eps_cond, Tensor eps_uncond, Tensor noise, Tensor? t,
float t_scalar, float M, bool return_stats) -> (Tensor E, Tensor stats)`` on ``[B, N]``
rows; ``t`` is None (every sample has ``t_scalar``) or float64 ``[B]`` on the data's
device; ``stats`` is float64 ``[6, B]`` (rows ``reference.STAT_NAMES``), or ``[6, 0]``
when ``return_stats`` is False.
"""

from __future__ import annotations

import math

import torch

from . import _arrays
from ._cuda_glue import launch_torch
from ._dispatch import check_backend, require_cuda_kernel, run
from ._ssd_math import STAT_NAMES

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@torch.library.custom_op("ssd_toolkit::estimate", mutates_args=(), device_types=("cuda",))
def estimate_op(
    eps_cond: torch.Tensor,
    eps_uncond: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor | None,
    t_scalar: float,
    M: float,
    return_stats: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CUDA implementation: one fused kernel launch on the current stream."""
    require_cuda_kernel(eps_cond.device)  # a CPU-only build: how to rebuild
    B = eps_cond.shape[0]
    N = math.prod(eps_cond.shape[1:])
    rows = [x.contiguous() for x in (eps_cond, eps_uncond, noise)]
    out = torch.empty_like(eps_cond, memory_format=torch.contiguous_format)
    stats = _empty_stats(eps_cond, B if return_stats else 0)
    t_dev = None if t is None else t.to(device=eps_cond.device, dtype=torch.float64).contiguous()
    launch_torch(*rows, out, t_dev, t_scalar, M, stats if return_stats else None, B, N)
    return out, stats


@estimate_op.register_kernel("cpu")
def _estimate_op_cpu(eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats):
    batch = _arrays.prepare(eps_cond, eps_uncond, noise, t_scalar if t is None else t, M)
    E, stats = run(batch, "auto", return_stats=True)
    if not return_stats:
        return E, _empty_stats(eps_cond, 0)
    return E, torch.stack([stats[name].to(torch.float64) for name in STAT_NAMES])


@estimate_op.register_fake
def _estimate_op_fake(eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats):
    B = eps_cond.shape[0]
    return torch.empty_like(eps_cond, memory_format=torch.contiguous_format), _empty_stats(
        eps_cond, B if return_stats else 0
    )


def _empty_stats(like, B):
    return torch.empty((len(STAT_NAMES), B), dtype=torch.float64, device=like.device)


def estimate_traced(eps_cond, eps_uncond, noise, t, M, *, return_stats=False, backend="auto"):
    """``ssd_toolkit.estimate`` for torch tensors, written for Dynamo (see module doc).

    Same arguments, results and errors as ``core.estimate``, except: ``M`` must be a
    Python number (a tensor would need a host read), and the finiteness of ``M`` and of
    the timestep values is not checked (Dynamo treats Python floats as symbolic, and a
    device ``t`` would need a host read).
    """
    arrays = (eps_cond, eps_uncond, noise)
    for name, x in zip(_arrays.ARRAY_ARGS, arrays):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor like eps_cond, got {type(x).__name__}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a floating dtype in {_arrays.FLOAT_DTYPES}, got {x.dtype}")
        if x.ndim == 0:
            raise ValueError(f"{name}: expected shape [B, ...] with at least one dimension, got a 0-d array")
    for name, x in zip(_arrays.ARRAY_ARGS[1:], arrays[1:]):
        if x.shape != eps_cond.shape:
            raise ValueError(f"{name}: expected shape {list(eps_cond.shape)} (eps_cond's), got {list(x.shape)}")
        if x.dtype != eps_cond.dtype:
            raise ValueError(f"{name}: expected dtype {eps_cond.dtype} (eps_cond's), got {x.dtype}")
        if x.device != eps_cond.device:
            raise ValueError(f"{name}: expected device {eps_cond.device} (eps_cond's), got {x.device}")
    if isinstance(M, torch.Tensor):
        raise TypeError("M: under torch.compile expected a Python number (a tensor would need a host read), got a tensor")
    if isinstance(M, bool) or not isinstance(M, (int, float)):
        raise TypeError(f"M: expected a finite real scalar, got {type(M).__name__}")
    check_backend(backend)
    device = eps_cond.device
    B = eps_cond.shape[0]
    N = 1
    for d in eps_cond.shape[1:]:
        N = N * d
    rows = [x.detach().reshape(B, N) for x in arrays]
    t_dev, t_scalar = _traced_timesteps(t, B, device)
    if backend == "torch":
        from ._torch_impl import estimate_torch  # noqa: PLC0415

        t_vec = t_dev if t_dev is not None else torch.full((B,), t_scalar, dtype=torch.float64, device=device)
        E2d, stats = estimate_torch(*rows, t_vec, M)
    else:
        E2d, stats_t = torch.ops.ssd_toolkit.estimate(*rows, t_dev, t_scalar, M, return_stats)
        stats = {name: stats_t[i] for i, name in enumerate(STAT_NAMES)}
        if t_dev is None:
            stats["mode_seeking"] = torch.full((B,), t_scalar <= M, dtype=torch.bool, device=device)
        else:
            stats["mode_seeking"] = t_dev <= M
    E = E2d.reshape(eps_cond.shape)
    return (E, stats) if return_stats else E


def _traced_timesteps(t, B, device):
    if isinstance(t, torch.Tensor):
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t: expected real timesteps, got dtype {t.dtype}")
        if t.ndim == 0:
            return t.detach().to(device=device, dtype=torch.float64).reshape(1).expand(B), 0.0
        if t.ndim != 1 or t.shape[0] != B:
            raise ValueError(f"t: expected a scalar or a vector of length B={B}, got shape {list(t.shape)}")
        return t.detach().to(device=device, dtype=torch.float64), 0.0
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return None, t
    t_vec = torch.as_tensor(t, dtype=torch.float64, device=device)  # a list or NumPy array
    if t_vec.ndim != 1 or t_vec.shape[0] != B:
        raise ValueError(f"t: expected a scalar or a vector of length B={B}, got shape {list(t_vec.shape)}")
    return t_vec, 0.0
