"""PyTorch tensors: plain, on any device, under ``torch.compile``, ``torch.func`` and fake modes.

Routes (``TorchTensors.run``), decided once per call:

- Dynamo tracing, or tensors without storage (``torch.func`` transforms, ``meta``,
  ``FakeTensor`` and other subclasses): the custom op ``torch.ops.ssd_toolkit.estimate``
  (``op.py``), which has meta, vmap and autograd rules.
- ``backend="torch"``: PyTorch eager ops on any device (MPS, XPU, ...).
- ``cuda``: the fused CUDA kernel on the current stream (``cuda.py``).
- ``cpu``: the compiled CPU kernel on the tensors' memory, or the NumPy reference.
- any other device: a ValueError naming the device and ``backend="torch"``.

The fast path takes plain contiguous CPU tensors (and CUDA ones) that need no
conversion straight to the kernel; anything else returns None and takes ``run``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from ...engine import dispatch as _dispatch
from ...engine import extension as _extension
from ..base import ArrayBackend
from ..batch import GRAD_WARNING, prepare, stats_dict
from ..numpy_arrays import fast_threshold
from ..timestep_checks import check_kind, check_shape, fast_timesteps, host_timesteps
from .eager import TORCH_OPS, estimate_torch

_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


class TorchTensors(ArrayBackend):
    name = "torch"

    def __init__(self):
        torch = sys.modules["torch"]
        self.torch = torch
        self.tensor = torch.Tensor
        self.ops = TORCH_OPS
        self.names = {getattr(torch, name): name for name in _DTYPE_NAMES}
        compiler = torch.compiler
        self.tracing = getattr(compiler, "is_dynamo_compiling", compiler.is_compiling)  # 1 call, not 3
        functorch = getattr(torch._C, "_functorch", None)
        self.wrapped = getattr(functorch, "is_functorch_wrapped_tensor", lambda x: False)

    def claims(self, kind):
        return issubclass(kind, self.tensor)

    # -- validation hooks ------------------------------------------------------------------
    def checked(self, x, name):
        return x.resolve_neg() if x.is_neg() else x  # a neg-bit view's memory holds -x

    def dtype_name(self, x):
        name = self.names.get(x.dtype)
        return name if name is not None else str(x.dtype).replace("torch.", "")

    def device(self, x):
        return str(x.device)

    def needs_op(self, x) -> bool:
        """True for tensors whose data cannot be read directly (no storage, or a subclass)."""
        kind = type(x)
        if kind is not self.tensor and not isinstance(x, self.torch.nn.Parameter):
            return True
        return x.device.type == "meta" or self.wrapped(x)

    def host_timesteps(self, batch):
        return batch.device == "cpu" and not any(self.needs_op(a) for a in batch.arrays)

    def warn_if_differentiated(self, batch):
        if any(a.requires_grad for a in batch.arrays):
            warnings.warn(GRAD_WARNING, UserWarning, stacklevel=5)

    def host_vector(self, t):
        if type(t) is not self.tensor or t.ndim != 1 or t.device.type != "cpu" or t.requires_grad or t.is_neg():
            return None
        try:
            return t.numpy()
        except RuntimeError:  # a functorch-wrapped tensor has no storage
            return None

    # -- estimate ----------------------------------------------------------------------------
    def estimate(self, eps_cond, eps_uncond, noise, t, M, return_stats, backend):
        if self.tracing():  # Dynamo: validation it can trace, then the opaque custom op
            from .op import estimate_traced  # noqa: PLC0415

            return estimate_traced(eps_cond, eps_uncond, noise, t, M, return_stats=return_stats, backend=backend)
        if backend == "auto" or backend == "compiled":
            result = self._fast(eps_cond, eps_uncond, noise, t, M, return_stats)
            if result is not None:
                return result
        return self.run(prepare(eps_cond, eps_uncond, noise, t, M), backend, return_stats)

    def run(self, batch, backend, return_stats):
        _dispatch.check_backend(backend)
        device = batch.eps_cond.device
        if any(self.needs_op(a) for a in batch.arrays):
            from .op import run_op  # noqa: PLC0415

            return run_op(batch, backend, return_stats)
        if backend == "torch":
            return self._run_eager(batch, return_stats)
        if device.type == "cuda":
            if backend == "reference":
                raise ValueError(
                    f"backend: 'reference' runs on host arrays, got {device} data; "
                    "move the data to the CPU yourself or use backend='auto' with a CUDA build"
                )
            _dispatch.require_cuda_kernel(device)
            from .cuda import estimate_torch_cuda  # noqa: PLC0415

            return estimate_torch_cuda(*batch.arrays, batch.t, batch.M, return_stats, batch.shape, batch.N)
        if device.type != "cpu":
            raise ValueError(
                f"eps_cond: the compiled kernels run on cpu and cuda tensors, got {device}; "
                "pass backend='torch' (PyTorch eager ops on any device) or move the tensors"
            )
        return _dispatch.run_host(self, batch, backend, return_stats)

    def _run_eager(self, batch, return_stats):
        """``backend="torch"``: PyTorch eager ops where the data are (float32 sums on MPS,
        which has no float64; stats then stay float32 too)."""
        torch = self.torch
        rows = [self.flat_rows(a, batch.B, batch.N) for a in batch.arrays]
        device = rows[0].device
        accum = torch.float32 if device.type == "mps" else torch.float64
        t = batch.t
        if isinstance(t, self.tensor) and t.device == device and device.type != "cpu":  # stays on its device
            check_kind(self.dtype_name(t))
            check_shape(t.shape, batch.B)
            t_vec = t.detach().to(accum).reshape(-1).expand(batch.B)
        else:
            t64 = batch.t64 if batch.t64 is not None else host_timesteps(t, batch.B)
            t_vec = torch.from_numpy(t64).to(device=device, dtype=accum)
        E, stats = estimate_torch(*rows, t_vec, batch.M, accum_dtype=accum)
        E = E.reshape(batch.shape)
        return (E, stats) if return_stats else E

    # -- conversions -------------------------------------------------------------------------
    def flat_rows(self, x, B, N):
        return x.detach().contiguous().view(B, N) if N and B else x.detach().reshape(B, N)

    def astype(self, x, dtype):
        return x.to(getattr(self.torch, dtype))

    def reshape(self, x, shape):
        return x.reshape(shape)

    def host_view(self, rows):
        if rows.dtype == self.torch.bfloat16:  # NumPy has no bfloat16: the kernel reads the bits
            return rows.view(self.torch.uint16).numpy(), "bfloat16"
        return rows.numpy(), self.names[rows.dtype]

    def empty_rows(self, like):
        return self.torch.empty_like(like, memory_format=self.torch.contiguous_format)

    def to_host_float64(self, x):
        return x.detach().to("cpu", dtype=self.torch.float64).numpy()

    def from_host(self, values, like, dtype=None):
        out = self.torch.from_numpy(np.ascontiguousarray(values))
        target = getattr(self.torch, dtype) if isinstance(dtype, str) else out.dtype
        return out.to(device=like.device, dtype=target)

    # -- the fast path -----------------------------------------------------------------------
    def _fast(self, eps_cond, eps_uncond, noise, t, M, return_stats):
        tensor = self.tensor
        if type(eps_cond) is not tensor or type(eps_uncond) is not tensor or type(noise) is not tensor:
            return None
        dt = eps_cond.dtype
        shape = eps_cond.shape
        name = self.names.get(dt)
        if (
            name is None
            or eps_uncond.dtype is not dt
            or noise.dtype is not dt
            or eps_uncond.shape != shape
            or noise.shape != shape
            or eps_cond.requires_grad
            or eps_uncond.requires_grad
            or noise.requires_grad
            or not shape
        ):
            return None
        B = shape[0]
        size = eps_cond.numel()
        M = fast_threshold(M)
        if not B or size == B or M is None:
            return None
        device = eps_cond.device.type
        if device == "cpu":
            return self._fast_cpu(eps_cond, eps_uncond, noise, t, M, return_stats, shape, B, size, name)
        if device == "cuda":
            return self._fast_cuda(eps_cond, eps_uncond, noise, t, M, return_stats, shape, B, size)
        return None

    def _fast_cpu(self, eps_cond, eps_uncond, noise, t, M, return_stats, shape, B, size, name):
        """Contiguous CPU tensors -> the CPU kernel on their memory (addresses, no copies)."""
        arrays = (eps_cond, eps_uncond, noise)
        if (
            eps_uncond.device.type != "cpu"
            or noise.device.type != "cpu"
            or not (eps_cond.is_contiguous() and eps_uncond.is_contiguous() and noise.is_contiguous())
            or eps_cond.is_neg()
            or eps_uncond.is_neg()
            or noise.is_neg()
        ):
            return None
        kernel = _extension.cpu_kernel()
        t64 = fast_timesteps(t, B)
        if kernel is None or t64 is None:
            return None
        try:
            pointers = [a.data_ptr() for a in arrays]
        except RuntimeError:  # torch.func-wrapped tensors have no storage: the op route
            return None
        return self.cpu_kernel(kernel, pointers, t64, M, return_stats, shape, B, size // B, name)

    def cpu_kernel(self, kernel, pointers, t64, M, return_stats, shape, B, N, name):
        """The compiled CPU kernel on three tensors' addresses; E (and stats) as tensors."""
        torch = self.torch
        out = torch.empty(shape, dtype=getattr(torch, name))
        stats = torch.empty((6, B), dtype=torch.float64) if return_stats else None
        kernel(*pointers, out.data_ptr(), t64, None if stats is None else stats.data_ptr(), B, N, name, M)
        if stats is None:
            return out
        return out, stats_dict(stats, torch.from_numpy(t64 <= M))

    def _fast_cuda(self, eps_cond, eps_uncond, noise, t, M, return_stats, shape, B, size):
        """CUDA tensors on one device -> the eager CUDA glue (one launch, no host sync)."""
        device = eps_cond.device
        if eps_uncond.device != device or noise.device != device or not _extension.has_cuda_kernel():
            return None
        if eps_cond.is_neg() or eps_uncond.is_neg() or noise.is_neg():
            return None
        from .cuda import estimate_torch_cuda  # noqa: PLC0415

        return estimate_torch_cuda(eps_cond, eps_uncond, noise, t, M, return_stats, shape, size // B)
