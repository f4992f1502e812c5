"""``torch.ops.ssd_toolkit.estimate``: the estimator as a ``torch.library`` custom op.

Torch inputs come here when their data cannot be read directly: under ``torch.compile``
(``estimate_traced``: validation Dynamo can trace, then one opaque node, so
``fullgraph=True`` and CUDA graphs hold), and eagerly for ``torch.func`` transforms,
``meta`` and fake tensors (``run_op``, after the usual ``prepare``). The op has

- a CUDA kernel (one fused launch on the current stream) and a CPU kernel (the compiled
  CPU kernel called directly, else the NumPy reference);
- a fake (meta) kernel giving the output shapes;
- a vmap rule: the vmapped dimensions are folded into the batch, so every leading axis
  indexes samples and samples never mix;
- an autograd rule stating the estimator's no-gradient contract: the result is a
  constant, the inputs get no gradient through it (``None``), as eager calls detach it.

Op schema: ``estimate(Tensor eps_cond, Tensor eps_uncond, Tensor noise, Tensor? t,
float t_scalar, float M, bool return_stats) -> (Tensor E, Tensor stats)`` on ``[B, N]``
rows; ``t`` is None (every sample has ``t_scalar``) or float64 ``[B]`` on the data's
device; ``stats`` is float64 ``[6, B]`` (rows ``STAT_NAMES``), or ``[6, 0]`` without stats.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...engine import dispatch as _dispatch
from ...engine import extension as _extension
from ...engine.reference import estimate_reference
from ..batch import ARRAY_ARGS, FLOAT_DTYPES, STAT_NAMES, stats_dict
from ..timestep_checks import check_kind, check_shape

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NAMES = dict(zip(_FLOAT_DTYPES, FLOAT_DTYPES))


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
    from .cuda import launch_torch  # noqa: PLC0415

    _dispatch.require_cuda_kernel(eps_cond.device)  # a CPU-only build: how to rebuild
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
    """The compiled CPU kernel called directly on the rows (no second validation)."""
    B, N = eps_cond.shape
    t64 = np.full(B, t_scalar) if t is None else t.to(torch.float64).contiguous().numpy()
    rows = [x if x.is_contiguous() else x.contiguous() for x in (eps_cond, eps_uncond, noise)]
    out = torch.empty((B, N), dtype=eps_cond.dtype)
    stats = _empty_stats(eps_cond, B if return_stats else 0)
    kernel = _extension.cpu_kernel()
    if kernel is not None:
        pointers = [r.data_ptr() for r in (*rows, out)]
        kernel(*pointers, t64, stats.data_ptr() if return_stats else None, B, N, _NAMES[eps_cond.dtype], M)
        return out, stats
    _extension.warn_fallback_once()
    E64, named = estimate_reference(*(r.to(torch.float64).numpy() for r in rows), t64, M)
    out.copy_(torch.from_numpy(E64))
    if return_stats:
        stats.copy_(torch.from_numpy(np.stack([named[s] for s in STAT_NAMES])))
    return out, stats


@estimate_op.register_fake
def _estimate_op_fake(eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats):
    B = eps_cond.shape[0]
    return torch.empty_like(eps_cond, memory_format=torch.contiguous_format), _empty_stats(
        eps_cond, B if return_stats else 0
    )


def _estimate_op_vmap(info, in_dims, eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats):
    """Vmapped dims folded into the batch: ``[V, B, N]`` rows become ``[V * B, N]``."""
    V = info.batch_size

    def front(x, dim):
        return x.movedim(dim, 0) if dim is not None else x.expand(V, *x.shape)

    c, u, n = (front(x, d) for x, d in zip((eps_cond, eps_uncond, noise), in_dims[:3]))
    B, N = c.shape[1], c.shape[2]
    flat = [x.reshape(V * B, N) for x in (c, u, n)]
    t_flat = None if t is None else front(t, in_dims[3]).reshape(V * B)
    E, stats = torch.ops.ssd_toolkit.estimate(*flat, t_flat, t_scalar, M, return_stats)
    stats = stats.reshape(len(STAT_NAMES), V, B if return_stats else 0)
    return (E.reshape(V, B, N), stats), (0, 1)


def _setup_context(ctx, inputs, output):
    pass


def _no_gradient(ctx, grad_E, grad_stats):
    """The estimator is not differentiable: no gradient reaches its inputs (see docs/api.md)."""
    return None, None, None, None, None, None, None


torch.library.register_vmap("ssd_toolkit::estimate", _estimate_op_vmap)
estimate_op.register_autograd(_no_gradient, setup_context=_setup_context)


def _empty_stats(like, B):
    return torch.empty((len(STAT_NAMES), B), dtype=torch.float64, device=like.device)


def tensor_timesteps(t, B, device):
    """``(t_vector or None, t_scalar)``: plain tensor code (Dynamo traces it, functorch and
    fake tensors pass through); values are not checked (that would need a host read)."""
    if isinstance(t, torch.Tensor):
        check_kind(str(t.dtype).replace("torch.", ""))
        check_shape(t.shape, B)
        if t.ndim == 0:
            return t.detach().to(device=device, dtype=torch.float64).reshape(1).expand(B), 0.0
        return t.detach().to(device=device, dtype=torch.float64), 0.0
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return None, t
    t_vec = torch.as_tensor(t, dtype=torch.float64, device=device)  # a list or NumPy array
    check_shape(t_vec.shape, B)
    return (t_vec.reshape(1).expand(B) if t_vec.ndim == 0 else t_vec), 0.0


def _call_op(eps_cond, eps_uncond, noise, t_dev, t_scalar, M, return_stats, backend, B, N):
    rows = [x.detach().reshape(B, N) for x in (eps_cond, eps_uncond, noise)]
    device = eps_cond.device
    if backend == "torch":
        from .eager import estimate_torch  # noqa: PLC0415

        t_vec = t_dev if t_dev is not None else torch.full((B,), t_scalar, dtype=torch.float64, device=device)
        E2d, stats = estimate_torch(*rows, t_vec, M)
    else:
        E2d, stats_rows = torch.ops.ssd_toolkit.estimate(*rows, t_dev, t_scalar, M, return_stats)
        if return_stats:
            seeking = torch.full((B,), t_scalar <= M, dtype=torch.bool, device=device) if t_dev is None else t_dev <= M
            stats = stats_dict(stats_rows, seeking)
    E = E2d.reshape(eps_cond.shape)
    return (E, stats) if return_stats else E


def run_op(batch, backend, return_stats):
    """The op on a prepared batch (``torch.func`` transforms, meta and fake tensors)."""
    if backend == "reference":
        raise ValueError(
            "backend: 'reference' reads host memory, got tensors without storage (torch.func, meta or fake); "
            "use backend='auto'"
        )
    t_dev, t_scalar = tensor_timesteps(batch.t, batch.B, batch.eps_cond.device)
    return _call_op(*batch.arrays, t_dev, t_scalar, batch.M, return_stats, backend, batch.B, batch.N)


def estimate_traced(eps_cond, eps_uncond, noise, t, M, *, return_stats=False, backend="auto"):
    """``ssd_toolkit.estimate`` for torch tensors, written for Dynamo (see module doc).

    Same arguments, results and errors as ``estimate``, except: ``M`` must be a Python
    number (a tensor would need a host read), and the finiteness of ``M`` and of the
    timestep values is not checked (Dynamo treats Python floats as symbolic, and a device
    ``t`` would need a host read).
    """
    arrays = (eps_cond, eps_uncond, noise)
    for name, x in zip(ARRAY_ARGS, arrays):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor like eps_cond, got {type(x).__name__}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a floating dtype in {FLOAT_DTYPES}, got {x.dtype}")
        if x.ndim == 0:
            raise ValueError(f"{name}: expected shape [B, ...] with at least one dimension, got a 0-d array")
    for name, x in zip(ARRAY_ARGS[1:], arrays[1:]):
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
    _dispatch.check_backend(backend)
    B = eps_cond.shape[0]
    N = 1
    for d in eps_cond.shape[1:]:
        N = N * d
    t_dev, t_scalar = tensor_timesteps(t, B, eps_cond.device)
    return _call_op(eps_cond, eps_uncond, noise, t_dev, t_scalar, M, return_stats, backend, B, N)
