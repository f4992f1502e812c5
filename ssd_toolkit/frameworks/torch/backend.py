"""PyTorch tensors: one route for eager calls, ``torch.compile``, ``torch.func`` and fake tensors.

``TorchTensors.estimate`` is the whole torch route. It validates once (``validate_arrays``,
written so that Dynamo traces it: under ``torch.compile`` a bad input raises the same one-line
error, carried as the cause of Dynamo's "Observed exception"), converts ``t`` once
(``timesteps``) and decides once where the batch runs:

- ``backend="torch"``, or ``"auto"`` on a device without compiled kernels (MPS, XPU, ...) or on
  a GPU without the CUDA kernel built (warned once, ``engine.dispatch.kernel_or_fallback``):
  PyTorch eager ops (``eager.py``);
- ``backend="reference"``: the float64 NumPy reference, for CPU tensors with storage;
- otherwise the op ``torch.ops.ssd_toolkit.estimate`` (``op.py``: registered from C++ where
  the op library is built), whose CPU, CUDA and Meta kernels, vmap and no-gradient rules
  serve plain, compiled, ``torch.func``-transformed, ``meta`` and fake tensors alike.

Plain same-dtype tensors with a host ``t`` skip straight to the op (``_fast``); anything that
is not plainly valid takes the full validation, which names what is wrong.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from ... import checks
from ...engine import dispatch, extension
from ...engine.dtypes import FLOAT_DTYPES
from ...engine.maths import fast_number, stats_dict, warn_if_conventions_differ
from ...engine.reference import estimate_reference
from ..base import ArrayBackend
from ..batch import GRAD_WARNING, validate_arrays, warn_one_element
from ..timestep_checks import check_kind, check_shape, fast_timesteps, host_timesteps
from .eager import TORCH_OPS, estimate_torch
from . import selftest
from .op import estimate_op, kernel_op

KERNEL_DEVICES = ("cpu", "cuda")  # where the op has kernels (meta: its fake kernel)


class TorchTensors(ArrayBackend):
    name = "torch"

    def __init__(self):
        torch = sys.modules["torch"]
        self.torch = torch
        self.tensor = torch.Tensor
        self.ops = TORCH_OPS
        self.names = {getattr(torch, name): name for name in FLOAT_DTYPES}
        compiler = torch.compiler
        self.tracing = getattr(compiler, "is_dynamo_compiling", compiler.is_compiling)  # 1 call, not 3
        functorch = getattr(torch._C, "_functorch", None)
        self.wrapped = getattr(functorch, "is_functorch_wrapped_tensor", lambda x: False)
        self.transforming = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)
        self.op = estimate_op()
        self.kernel_op = kernel_op()  # the fast path's inputs require no grad
        self.kernels_built = {}  # is_cuda -> the compiled kernel is there (looked up once)
        self.self_tested = {}  # CUDA device -> the kernel passed its first-use self-test there

    def claims(self, kind):
        return issubclass(kind, self.tensor)

    # -- validation hooks (batch.validate_arrays) -----------------------------------------
    def checked(self, x, name):
        if x.layout is not self.torch.strided or x.is_nested:
            kind = "a nested tensor" if x.is_nested else f"layout {x.layout}"
            raise TypeError(f"{name}: expected a dense (strided) tensor, got {kind}; convert it with .to_dense()")
        if self.tracing():
            return x
        return x.resolve_neg() if x.is_neg() else x  # a neg-bit view's memory holds -x

    def dtype_name(self, x):
        name = self.names.get(x.dtype)
        return name if name is not None else str(x.dtype).replace("torch.", "")

    def device(self, x):
        return str(x.device)

    def storage_free(self, x) -> bool:
        """True for tensors whose data cannot be read on the host (no storage, or a subclass)."""
        kind = type(x)
        if kind is not self.tensor and not isinstance(x, self.torch.nn.Parameter):
            return True
        return x.device.type == "meta" or self.wrapped(x)

    def host_vector(self, t):
        if type(t) is not self.tensor or t.ndim != 1 or t.device.type != "cpu" or t.requires_grad or t.is_neg():
            return None
        try:
            return t.numpy()
        except RuntimeError:  # a functorch-wrapped tensor has no storage
            return None

    # -- the route -----------------------------------------------------------------------
    def estimate(self, eps_cond, eps_uncond, noise, t, M, return_stats, backend):
        tracing = self.tracing() or self.transforming()  # torch.compile, or torch.func: no host reads
        if not tracing and (backend == "auto" or backend == "compiled"):
            result = self._fast(eps_cond, eps_uncond, noise, t, M, return_stats)
            if result is not None:
                return result
        dispatch.check_backend(backend)
        batch = validate_arrays(eps_cond, eps_uncond, noise)
        if tracing and isinstance(M, self.tensor):
            raise TypeError("M: under torch.compile expected a Python number (a tensor would need a host read), got a tensor")
        M = checks.threshold(M)
        device = batch.eps_cond.device
        t_vec, t_scalar = self.timesteps(t, batch.B, device, tracing)
        if not self.tracing():
            if t_vec is None or t_vec.device.type == "cpu" and not self.storage_free(t_vec):  # device t: not read
                warn_if_conventions_differ(t_scalar if t_vec is None else t_vec, M, stacklevel=3)
            warn_one_element(batch, stacklevel=4)
            if any(a.requires_grad for a in batch.arrays):
                warnings.warn(GRAD_WARNING, UserWarning, stacklevel=3)
        if backend == "torch" or (backend == "auto" and device.type not in (*KERNEL_DEVICES, "meta")):
            E, stats = self._eager(self._rows(batch), t_vec, t_scalar, M, batch.B)
        elif backend == "reference":
            E, stats = self._reference(batch, self._rows(batch), t_vec, t_scalar, M)
        else:
            if device.type not in (*KERNEL_DEVICES, "meta"):
                raise ValueError(
                    f"eps_cond: the compiled kernels run on cpu and cuda tensors, got {device}; "
                    "pass backend='torch' (PyTorch eager ops on any device) or move the tensors"
                )
            fallback = "torch" if device.type == "cuda" else "reference"  # the op's CPU kernel holds the reference
            kernel = "compiled" if device.type == "meta" else dispatch.kernel_or_fallback(backend, device, fallback)
            if kernel == "torch" or device.type == "cuda" and not tracing and not self._self_tested(device):
                E, stats = self._eager(self._rows(batch), t_vec, t_scalar, M, batch.B)
            else:  # the op takes [B, ...] and any real dtype of t: nothing to reshape or convert here
                E, rows_stats = self.op(*batch.arrays, t_vec, t_scalar, M, return_stats)
                stats = stats_dict(rows_stats, self._mode_seeking(t_vec, t_scalar, M, batch.B, device)) if return_stats else None
        E = E.reshape(batch.shape)
        return (E, stats) if return_stats else E

    def timesteps(self, t, B, device, tracing=False):
        """``(t_vec, t_scalar)``: ``t`` as a ``[B]`` tensor on ``device`` (float64 from host values,
        a tensor's own real dtype otherwise), or None with every sample at the host value
        ``t_scalar``; the one conversion of the torch route.

        Host values are checked (real, finite, length); a tensor on ``device`` is converted in
        place, its values unchecked (that would need a host read; with ``tracing``, inside
        ``torch.func`` and ``torch.compile``, it is a traced value; the op's CPU kernel checks
        them).

        Raises:
            TypeError: non-real timesteps.
            ValueError: wrong length, non-finite host values, a tensor on another device.
        """
        torch = self.torch
        if type(t) is float or type(t) is int:
            if tracing:  # Dynamo may treat it as a symbolic float: no value checks
                return None, t
            if fast_number(t) is not None:
                return None, float(t)
        if isinstance(t, self.tensor):
            check_kind(self.dtype_name(t))
            check_shape(t.shape, B)
            on_host = t.device.type == "cpu" and not tracing and not self.storage_free(t)
            if t.device != device and not on_host:
                raise ValueError(f"t: expected a host value or a tensor on {device} (eps_cond's device), got {t.device}")
            if on_host:  # values checked here, then one copy to the data's device
                host = host_timesteps(t.detach(), B)
                return torch.from_numpy(host).to(device, non_blocking=True), 0.0
            t = t.detach()  # any real dtype: the op and the eager maths convert it
            return (t.reshape(1).expand(B) if t.ndim == 0 else t), 0.0
        if tracing:  # a list or NumPy array inside torch.compile: a constant of the graph
            t_vec = torch.as_tensor(t, dtype=torch.float64, device=device)
            check_shape(t_vec.shape, B)
            return (t_vec.reshape(1).expand(B) if t_vec.ndim == 0 else t_vec), 0.0
        host = host_timesteps(t, B)
        if np.ndim(t) == 0:
            return None, float(host[0])
        return torch.from_numpy(host).to(device, non_blocking=True), 0.0

    def timestep_vector(self, t, B, like):
        t_vec, t_scalar = self.timesteps(t, B, like.device, self.tracing() or self.transforming())
        if t_vec is None:
            return self.torch.full((B,), t_scalar, dtype=self.torch.float64, device=like.device)
        return t_vec.to(self.torch.float64)

    @staticmethod
    def _rows(batch):
        return [a.detach().reshape(batch.B, batch.N) for a in batch.arrays]

    def _mode_seeking(self, t_vec, t_scalar, M, B, device):
        if t_vec is None:
            return self.torch.full((B,), t_scalar <= M, dtype=self.torch.bool, device=device)
        return t_vec <= M

    def _eager(self, rows, t_vec, t_scalar, M, B):
        """PyTorch eager ops where the data are (float32 sums on MPS, which has no float64)."""
        torch = self.torch
        device = rows[0].device
        accum = torch.float32 if device.type == "mps" else torch.float64
        t_vec = torch.full((B,), t_scalar, dtype=accum, device=device) if t_vec is None else t_vec.to(accum)
        return estimate_torch(*rows, t_vec, M, accum_dtype=accum)

    def _reference(self, batch, rows, t_vec, t_scalar, M):
        """The float64 NumPy reference on CPU tensors with storage."""
        device = rows[0].device
        if device.type != "cpu" or any(self.storage_free(a) for a in batch.arrays):
            raise ValueError(
                f"backend: 'reference' runs on host tensors with storage, got {device} data"
                f"{' without storage (torch.func, meta or fake)' if device.type == 'cpu' else ''}; "
                "use backend='auto'"
            )
        t64 = np.full(batch.B, t_scalar) if t_vec is None else t_vec.cpu().numpy()
        E64, named = estimate_reference(*(self.to_host_float64(r) for r in rows), t64, M)
        E = self.from_host(E64, rows[0], batch.dtype)
        named = {k: self.torch.from_numpy(np.ascontiguousarray(v)) for k, v in named.items()}
        return E, named

    # -- the fast path ---------------------------------------------------------------------
    def _fast(self, eps_cond, eps_uncond, noise, t, M, return_stats):
        """Plain tensors on a CPU or CUDA device with the kernel built, a host scalar or a ``[B]``
        t (a tensor on the data's device, or host values) and a finite Python M: straight to the
        op, whose C++ checks cover shapes, dtypes and devices. None for anything else, and when
        the op refuses the inputs (the full validation then names what is wrong in Python's
        error types)."""
        tensor = self.tensor
        if (
            type(eps_cond) is not tensor
            or type(eps_uncond) is not tensor
            or type(noise) is not tensor
            or eps_cond.requires_grad
            or eps_uncond.requires_grad
            or noise.requires_grad
            or eps_cond.is_neg()
            or eps_uncond.is_neg()
            or noise.is_neg()
            or eps_cond.dim() == 0
        ):
            return None
        M = fast_number(M)
        if M is None:
            return None
        B = eps_cond.shape[0]
        if not B or eps_cond.numel() == B:  # empty batch, one-element samples (warned)
            return None
        cuda = eps_cond.is_cuda
        if not (cuda or eps_cond.is_cpu) or not self._kernel_built(cuda) or cuda and not self._self_tested(eps_cond.device):
            return None
        t_kind = type(t)
        if t_kind is float or t_kind is int:
            t_vec, t_scalar = None, fast_number(t)
            if t_scalar is None:
                return None
            warn_if_conventions_differ(t_scalar, M, stacklevel=4)
        elif t_kind is tensor and t.dim() == 1 and not t.requires_grad and t.is_cuda is cuda:
            t_vec, t_scalar = t, 0.0  # the op reads any real dtype and checks shape, device, host values
            if not cuda:  # host values: read without a copy (a device t is not read)
                warn_if_conventions_differ(t, M, stacklevel=4)
        else:
            t64 = fast_timesteps(t, B)
            if t64 is None:
                return None
            warn_if_conventions_differ(t64, M, stacklevel=4)
            t_vec, t_scalar = self.torch.from_numpy(t64), 0.0
            if cuda:
                t_vec = t_vec.to(eps_cond.device, non_blocking=True)
        try:
            E, rows_stats = self.kernel_op(eps_cond, eps_uncond, noise, t_vec, t_scalar, M, return_stats)
        except (ValueError, RuntimeError):
            return None  # the full validation raises the error, in Python's types
        if not return_stats:
            return E
        return E, stats_dict(rows_stats, self._mode_seeking(t_vec, t_scalar, M, B, eps_cond.device))

    def _self_tested(self, device):
        """Whether the CUDA kernel passed its first-use self-test on ``device`` (``selftest.py``;
        a failure warns once and that device runs PyTorch eager ops, or raises under
        ``SSD_TOOLKIT_CUDA_SELFTEST=strict``). One dict look-up after the first call."""
        passed = self.self_tested.get(device)
        if passed is None:
            passed = self.self_tested[device] = selftest.passed(extension.load(), device)
        return passed

    def _kernel_built(self, cuda):
        built = self.kernels_built.get(cuda)
        if built is None:
            built = self.kernels_built[cuda] = extension.has_cuda_kernel() if cuda else extension.has_cpu_kernel()
        return built

    # -- conversions (used by the estimators, diagnostics and host helpers) -------------------
    def flat_rows(self, x, B, N):
        return x.detach().contiguous().view(B, N) if N and B else x.detach().reshape(B, N)

    def astype(self, x, dtype):
        return x.to(getattr(self.torch, dtype))

    def reshape(self, x, shape):
        return x.reshape(shape)

    def to_host_float64(self, x):
        return x.detach().to("cpu", dtype=self.torch.float64).numpy()

    def from_host(self, values, like, dtype=None):
        out = self.torch.from_numpy(np.ascontiguousarray(values))
        target = getattr(self.torch, dtype) if isinstance(dtype, str) else out.dtype
        return out.to(device=like.device, dtype=target)

