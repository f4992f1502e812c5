"""JAX arrays, eager and inside ``jax.jit`` / ``jax.vmap`` / ``jax.grad``.

Routes, chosen per call:

- the JAX extension is built (``_ssd_jax_ffi.so``, see ``jax_build.py``): the compiled CPU
  kernel through the XLA FFI (``jax.ffi.ffi_call``) on CPU arrays, eager and traced alike;
  on GPU arrays the fused CUDA kernel on XLA's stream where ``_ssd_jax_ffi_cuda.so`` is
  built (else the ``jax.numpy`` route below).
  Under ``jax.vmap`` every leading axis indexes samples ("broadcast_all": each vmapped
  index is one kernel call on its own ``[B, N]`` block), so samples never mix.
- no extension, concrete CPU arrays: DLPack / buffer views into the compiled CPU kernel
  (the NumPy reference without it), the result copied back into a ``jax.Array``.
- no extension and traced (or a GPU without the CUDA handler): the shared maths (``_ssd_math``) in
  ``jax.numpy``, accumulating in float64 when ``jax_enable_x64`` is on, float32 otherwise.

``M`` must be a static Python number under ``jit`` (it selects the branch per sample on
the host side of the kernel). ``t`` may be int32/float32 (x64 off) or int64/float64; its
finiteness is checked only when it is concrete. Stats are float64 with x64 on, float32
with it off. Gradients follow the torch rule: the estimator is a constant, ``jax.grad``
through it gives zero for its inputs and warns once per trace (docs/api.md).
"""

from __future__ import annotations

import ctypes
import sys
import warnings

import numpy as np

from ..engine import dispatch as _dispatch
from ..engine.array_ops import ModuleOps
from ..engine.extension import JAX_CUDA_LIBRARY as CUDA_LIBRARY
from ..engine.extension import JAX_LIBRARY as LIBRARY
from ..engine.maths import estimate_rows
from .base import ArrayBackend
from .batch import GRAD_WARNING, STAT_NAMES, prepare, stats_dict
from .timestep_checks import check_kind, check_shape, host_timesteps

TARGET = "ssd_toolkit_estimate"
_ffi = {"tried": False, "ok": False, "reason": None, "cuda": False}


def ffi_available(platform="cpu") -> bool:
    """Registers the FFI targets once (CPU, and CUDA where its handler is built); False
    (with the reason kept) when the ``platform``'s handler cannot be used."""
    if not _ffi["tried"]:
        _ffi["tried"] = True
        import jax  # noqa: PLC0415

        try:
            library = ctypes.cdll.LoadLibrary(str(LIBRARY))
            jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.SsdEstimateCpu), platform="cpu")
            _ffi["ok"] = True
        except (OSError, AttributeError) as exc:
            _ffi["reason"] = f"{type(exc).__name__}: {exc}"
        if _ffi["ok"] and CUDA_LIBRARY.exists():
            try:
                library = ctypes.cdll.LoadLibrary(str(CUDA_LIBRARY))
                jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.SsdEstimateCuda), platform="CUDA")
                _ffi["cuda"] = True
            except (OSError, AttributeError, ValueError, RuntimeError):  # no CUDA backend in this JAX
                _ffi["cuda"] = False
    return _ffi["ok"] if platform == "cpu" else _ffi["ok"] and _ffi["cuda"] and platform == "gpu"


def ffi_reason():
    return None if _ffi["ok"] else _ffi["reason"] or f"not built ({LIBRARY.name} missing)"


class JaxArrays(ArrayBackend):
    name = "jax"

    def __init__(self):
        jax = sys.modules["jax"]
        import jax.numpy as jnp  # noqa: PLC0415

        self.jax, self.jnp = jax, jnp
        self.tracer = jax.core.Tracer
        self.ops = ModuleOps(jnp)
        # jit-compiled once per (M, route, shapes): eager calls reuse the compiled call
        self._estimate = jax.jit(_no_gradient(jax, self._compute), static_argnums=(0, 1))
        self._warned_fallback = False

    def claims(self, kind):
        return issubclass(kind, (self.jax.Array, self.tracer))  # tracers are Arrays only by isinstance

    def dtype_name(self, x):
        return np.dtype(x.dtype).name

    def device(self, x):
        if isinstance(x, self.tracer):
            return self.jax.default_backend()
        return next(iter(x.devices())).platform

    def host_timesteps(self, batch):
        return False  # t stays a JAX value (it may be traced)

    def estimate(self, eps_cond, eps_uncond, noise, t, M, return_stats, backend):
        if isinstance(M, self.tracer):
            raise TypeError(
                "M: under jax.jit expected a static Python number (static_argnums=... or functools.partial), "
                "got a traced value"
            )
        return self.run(prepare(eps_cond, eps_uncond, noise, t, M), backend, return_stats)

    def run(self, batch, backend, return_stats):
        _dispatch.check_backend(backend)
        if backend == "torch":
            raise ValueError("backend: 'torch' needs torch tensors, got jax arrays")
        traced = any(isinstance(a, self.tracer) for a in (*batch.arrays, batch.t))
        on_cpu = batch.device == "cpu"
        if backend == "reference" or (not traced and on_cpu and not ffi_available("cpu")):
            if traced:
                raise ValueError("backend: 'reference' reads host memory, got traced jax values; use backend='auto'")
            if backend != "reference" and not self._warned_fallback:
                self._warned_fallback = True
                warnings.warn(
                    f"ssd_toolkit: the JAX extension is not available ({ffi_reason()}); eager CPU calls use the "
                    "compiled kernel through host views, and jax.jit/vmap the jax.numpy maths; build it with "
                    "`python -m ssd_toolkit.engine.jax_build`",
                    RuntimeWarning,
                    stacklevel=4,
                )
            batch.t64 = host_timesteps(batch.t, batch.B)
            return _dispatch.run_host(self, batch, backend, return_stats)
        if backend == "compiled" and not ffi_available(batch.device):
            raise RuntimeError(
                f"backend: 'compiled' for jax arrays needs the JAX extension's {batch.device} handler "
                f"({ffi_reason()}); build it with `python -m ssd_toolkit.engine.jax_build` or use backend='auto'"
            )
        route = "ffi" if ffi_available(batch.device) else "jnp"
        t_vec = self._timesteps(batch.t, batch.B)
        E, stats, seeking = self._estimate(batch.M, route, *batch.arrays, t_vec)
        return (E, stats_dict(stats, seeking)) if return_stats else E

    def _timesteps(self, t, B):
        """``t`` checked (kind, shape; finiteness when concrete), as a JAX or NumPy value:
        broadcasting and casting happen inside the compiled call (eager JAX ops are slow)."""
        if isinstance(t, (self.jax.Array, self.tracer)):
            check_kind(np.dtype(t.dtype).name)
            check_shape(t.shape, B)
            if not isinstance(t, self.tracer):
                host_timesteps(t, B)  # finiteness: one host read of B values
            return t
        wide = np.float64 if self.jax.config.jax_enable_x64 else np.float32
        return host_timesteps(t, B).astype(wide)

    def _compute(self, M, route, c, u, n, t_vec):
        """``(E, stats [6, B], mode_seeking [B])`` for a validated batch (traceable)."""
        jax, jnp = self.jax, self.jnp
        B = c.shape[0]
        wide = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        if np.dtype(t_vec.dtype).name not in ("int32", "int64", "float32", "float64"):
            t_vec = t_vec.astype(wide)
        t_vec = jnp.broadcast_to(t_vec, (B,))
        if route == "ffi":
            shapes = (jax.ShapeDtypeStruct(c.shape, c.dtype), jax.ShapeDtypeStruct((len(STAT_NAMES), B), wide))
            call = jax.ffi.ffi_call(TARGET, shapes, vmap_method="broadcast_all")
            E, stats = call(c, u, n, t_vec, M=np.float64(M), sample_ndim=np.int64(c.ndim - 1))
            return E, stats, t_vec <= M
        rows = [x.reshape(B, -1).astype(wide) for x in (c, u, n)]
        seeking = t_vec <= M
        E, named = estimate_rows(self.ops, *rows, seeking)
        return E.astype(c.dtype).reshape(c.shape), jnp.stack([named[s] for s in STAT_NAMES]), seeking

    # -- host route (no extension, eager CPU arrays) ------------------------------------------
    def flat_rows(self, x, B, N):
        return x.reshape(B, N)

    def astype(self, x, dtype):
        return x.astype(dtype)

    def reshape(self, x, shape):
        return self.jnp.asarray(x).reshape(shape)

    def host_view(self, rows):
        view = np.asarray(rows)  # zero-copy for CPU arrays (read-only inputs; ``out`` is NumPy)
        name = view.dtype.name
        return (view.view(np.uint16), name) if name == "bfloat16" else (view, name)

    def empty_rows(self, like):
        return np.empty(like.shape, np.dtype(like.dtype))

    def to_host_float64(self, x):
        return np.asarray(x, dtype=np.float64)

    def from_host(self, values, like, dtype=None):
        return self.jnp.asarray(values, dtype=dtype)


def _no_gradient(jax, compute):
    """``compute`` as a constant for differentiation: zero tangents, one warning per trace."""
    fn = jax.custom_jvp(compute, nondiff_argnums=(0, 1))

    def jvp(M, route, primals, tangents):
        warnings.warn(GRAD_WARNING.replace("detached (no autograd link)", "a constant (zero gradient)"), UserWarning, stacklevel=2)
        out = fn(M, route, *primals)
        return out, jax.tree_util.tree_map(_zero_tangent, out)

    fn.defjvp(jvp)
    return fn


def _zero_tangent(x):
    import jax  # noqa: PLC0415

    if np.issubdtype(np.dtype(x.dtype), np.floating) or np.dtype(x.dtype).name == "bfloat16":
        return jax.numpy.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def jax_extension_status():
    """Whether the JAX extension file exists (without importing JAX)."""
    return LIBRARY.exists()
