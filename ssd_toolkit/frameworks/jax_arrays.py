"""JAX arrays, eager and inside ``jax.jit`` / ``jax.vmap`` / ``jax.grad``.

Routes, chosen per call:

- the JAX extension is built (``_ssd_jax_ffi.so``, see ``engine/jax_build.py``): the
  compiled CPU kernel through the XLA FFI (``jax.ffi.ffi_call``) on CPU arrays, eager and
  traced alike; on GPU arrays the fused CUDA kernel on XLA's stream where
  ``_ssd_jax_ffi_cuda.so`` is built (else the ``jax.numpy`` route below).
  Under ``jax.vmap`` every leading axis indexes samples ("broadcast_all": each vmapped
  index is one kernel call on its own ``[B, N]`` block), so samples never mix.
  Eager calls on plain arrays take a fast path (``_fast``): a few checks, then the
  compiled call; ``t`` is never read back to the host, stats are computed only when asked.
- no extension, concrete CPU arrays: DLPack / buffer views into the compiled CPU kernel
  (the NumPy reference without it), the result copied back into a ``jax.Array``.
- no extension and traced (or a GPU without the CUDA handler): the shared maths
  (``engine.maths``) in ``jax.numpy``, accumulating in float64 when ``jax_enable_x64`` is
  on, float32 otherwise (XLA's arithmetic: subnormals flush to zero there).

The branch ``t_b <= M`` is decided exactly as NumPy decides it, on every route and for
every dtype of ``t`` (``jax_branch.py``); that one decision drives the result and
``stats["mode_seeking"]``. ``M`` must be a static Python number under ``jit``. A JAX ``t``
is not read on the host: a non-finite entry gives that sample NaN results and stats
(``mode_seeking`` False); host ``t`` (Python numbers, lists, NumPy) is checked and a
non-finite entry raises. Stats are float64 with x64 on, float32 with it off. Gradients
follow the torch rule: the estimator is a constant, ``jax.grad`` through it gives zero for
its inputs and warns once per trace (docs/api.md).
"""

from __future__ import annotations

import ctypes
import math
import sys
import warnings

import numpy as np

from ..engine import dispatch as _dispatch
from ..engine.array_ops import ModuleOps
from ..engine.extension import JAX_CUDA_LIBRARY as CUDA_LIBRARY
from ..engine.extension import JAX_LIBRARY as LIBRARY
from ..engine.maths import estimate_rows, fast_number
from .base import ArrayBackend
from .batch import FLOAT_DTYPES, GRAD_WARNING, STAT_NAMES, prepare, warn_if_conventions_differ
from .jax_branch import H, INVALID, SEEKING, branch_codes, host_codes
from .timestep_checks import check_kind, check_shape, host_timesteps

TARGET = "ssd_toolkit_estimate"
ABI_VERSION = 2  # csrc/jax/ssd_ffi_layout.h kAbiVersion: the operands this module passes
BUILD_HINT = "`python -m ssd_toolkit.engine.jax_build`"
_ffi = {"tried": False, "ok": False, "reason": None, "cuda": False}


def _load(path, symbol):
    """The handler capsule of the library at ``path``; OSError/AttributeError when it
    cannot be loaded, ValueError when it was built from other sources."""
    import jax  # noqa: PLC0415

    library = ctypes.cdll.LoadLibrary(str(path))
    version = getattr(library, "ssd_jax_ffi_abi_version", None)
    built = version() if version is not None else 1
    if built != ABI_VERSION:
        raise ValueError(f"{path.name} was built from older sources (operands v{built}, expected v{ABI_VERSION}); "
                         f"rebuild it with {BUILD_HINT}")
    return jax.ffi.pycapsule(getattr(library, symbol))


def ffi_available(platform="cpu") -> bool:
    """Registers the FFI targets once (CPU, and CUDA where its handler is built); False
    (with the reason kept) when the ``platform``'s handler cannot be used."""
    if not _ffi["tried"]:
        _ffi["tried"] = True
        import jax  # noqa: PLC0415

        try:
            jax.ffi.register_ffi_target(TARGET, _load(LIBRARY, "SsdEstimateCpu"), platform="cpu")
            _ffi["ok"] = True
        except (OSError, AttributeError, ValueError) as exc:
            _ffi["reason"] = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        if _ffi["ok"] and CUDA_LIBRARY.exists():
            try:
                jax.ffi.register_ffi_target(TARGET, _load(CUDA_LIBRARY, "SsdEstimateCuda"), platform="CUDA")
                _ffi["cuda"] = True
            except (OSError, AttributeError, ValueError, RuntimeError) as exc:  # no CUDA backend in this JAX
                _ffi["cuda"] = False
                _ffi["cuda_reason"] = f"{type(exc).__name__}: {exc}"
    return _ffi["ok"] if platform == "cpu" else _ffi["ok"] and _ffi["cuda"] and platform == "gpu"


def _handler_platforms():
    """The lowering platforms ("cpu", "cuda") whose handler is registered."""
    return tuple(name for name, platform in (("cpu", "cpu"), ("cuda", "gpu")) if ffi_available(platform))


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
        # jit-compiled once per (M, route, stats asked, kind of t, shapes): eager calls reuse it
        self._estimate = jax.jit(_no_gradient(jax, self._compute), static_argnums=(0, 1, 2, 3))
        self._warned_fallback = False
        # the fast path's checks: the concrete array class, the kernel's dtypes and those of t
        with jax.ensure_compile_time_eval():  # a concrete array even when first called inside a trace
            self._array_type = type(jnp.zeros(0))
        self._data_dtypes = frozenset(jnp.dtype(name) for name in FLOAT_DTYPES)
        self._t_dtypes = frozenset(jnp.dtype(name) for name in ("int32", "int64", "float32", "float64"))
        self._platforms = {}  # single-device sharding -> platform name

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
        if backend == "auto":
            fast = self._fast(eps_cond, eps_uncond, noise, t, M, return_stats)
            if fast is not None:
                return fast
        if isinstance(M, self.tracer):
            raise TypeError(
                "M: under jax.jit expected a static Python number (static_argnums=... or functools.partial), "
                "got a traced value"
            )
        return self.run(prepare(eps_cond, eps_uncond, noise, t, M), backend, return_stats)

    def _fast(self, c, u, n, t, M, return_stats):
        """The result for plain concrete arrays on one device with the extension's handler,
        a Python number ``M`` and a Python number or JAX array ``t``, checked with the
        least work; None for anything else (the general path then validates and names the
        error). The same compiled call as the general path, so the same bits."""
        array = self._array_type
        if type(c) is not array or type(u) is not array or type(n) is not array:
            return None
        dtype, shape = c.dtype, c.shape
        if dtype not in self._data_dtypes or u.dtype != dtype or n.dtype != dtype or u.shape != shape \
                or n.shape != shape or len(shape) < 2 or shape[0] == 0 or math.prod(shape[1:]) < 2:
            return None  # (one-element samples warn on the general path)
        sharding = c.sharding
        if (u.sharding is not sharding and u.sharding != sharding) or (n.sharding is not sharding and n.sharding != sharding):
            return None
        platform = self._platforms.get(sharding)
        if platform is None:
            devices = sharding.device_set
            if len(devices) != 1:
                return None
            platform = self._platforms[sharding] = next(iter(devices)).platform
        if not ffi_available(platform):
            return None
        M = fast_number(M)
        if M is None:
            return None
        kind = type(t)
        t_host = fast_number(t)
        if t_host is not None:
            warn_if_conventions_differ(t_host, M, stacklevel=4)  # host values only, as everywhere
            t_kind, t = (SEEKING if t_host <= M else H), None
        elif kind is array and t.dtype in self._t_dtypes and t.shape in ((), (shape[0],)) \
                and (t.sharding is sharding or t.sharding == sharding):
            t_kind = "t"
        else:
            return None
        return _result(self._estimate(M, "ffi", return_stats, t_kind, c, u, n, t), return_stats)

    def run(self, batch, backend, return_stats):
        _dispatch.check_backend(backend)
        if backend == "torch":
            raise ValueError("backend: 'torch' needs torch tensors, got jax arrays")
        traced = any(isinstance(a, self.tracer) for a in (*batch.arrays, batch.t))
        if backend == "reference" and traced:
            raise ValueError("backend: 'reference' reads host memory, got traced jax values; use backend='auto'")
        if backend == "compiled" and not ffi_available(batch.device):
            raise RuntimeError(
                f"backend: 'compiled' for jax arrays needs the JAX extension's {batch.device} handler "
                f"({ffi_reason()}); build it with {BUILD_HINT} or use backend='auto'"
            )
        fallback = not traced and batch.device == "cpu" and not ffi_available("cpu")
        if fallback and backend == "auto" and not self._warned_fallback:
            self._warned_fallback = True
            warnings.warn(
                f"ssd_toolkit: the JAX extension is not available ({ffi_reason()}); eager CPU calls use the "
                f"compiled kernel through host views, and jax.jit/vmap the jax.numpy maths; build it with {BUILD_HINT}",
                RuntimeWarning,
                stacklevel=4,
            )
        if backend == "reference" or (fallback and self._finite_or_host(batch.t)):
            batch.t64 = host_timesteps(batch.t, batch.B)
            return _dispatch.run_host(self, batch, backend, return_stats)
        # (a non-finite JAX t on the fallback: the jax.numpy maths give those samples NaN, as everywhere)
        route = _handler_platforms() if traced else "ffi" if ffi_available(batch.device) else "jnp"
        t_kind, t = self._branch_input(batch.t, batch.B, batch.M)
        return _result(self._estimate(batch.M, route, return_stats, t_kind, *batch.arrays, t), return_stats)

    def _finite_or_host(self, t):
        """False only for a concrete JAX ``t`` with a non-finite entry (read on the host:
        the fallback route reads the data there anyway)."""
        return not isinstance(t, self.jax.Array) or bool(np.all(np.isfinite(np.asarray(t, np.float64))))

    def _branch_input(self, t, B, M):
        """``(t_kind, operand)`` of the compiled call: ``("t", t)`` for a JAX ``t`` (checked
        for kind and shape, never read: its codes are computed inside the call), else the
        codes of the validated host ``t``: one static code when all samples agree
        (``(code, None)``), or ``("codes", uint8 [B])``."""
        if isinstance(t, (self.jax.Array, self.tracer)):
            check_kind(np.dtype(t.dtype).name)
            check_shape(t.shape, B)
            return "t", t
        t64 = host_timesteps(t, B)
        warn_if_conventions_differ(t64, M, stacklevel=5)
        codes = host_codes(t64, M)
        if codes.size and (codes == codes[0]).all():
            return int(codes[0]), None
        return "codes", codes

    def _compute(self, M, route, with_stats, t_kind, c, u, n, t):
        """``(E,)``, or ``(E, *6 stats [B], mode_seeking [B])`` with stats (split here: eager
        indexing outside would cost a dispatch each), for a validated batch (traceable).

        ``route``: "ffi" (the extension's handler), "jnp" (the ``jax.numpy`` maths) or a
        tuple of the platforms with a handler (traced calls: the handler or the maths by the
        platform the call is lowered for; it runs where its data are, not necessarily on the
        default device). ``t_kind``: "t" (``t``
        is the caller's timesteps), "codes" (``t`` is uint8 host codes) or the code every
        sample shares (``t`` is None).
        """
        jax, jnp = self.jax, self.jnp
        B = c.shape[0]
        wide = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        if t_kind == "t":
            codes = branch_codes(jax, t, M, B)
        elif t_kind == "codes":
            codes = jnp.asarray(t, jnp.uint8)
        else:
            codes = jnp.full((B,), t_kind, jnp.uint8)
        stats_shape = (len(STAT_NAMES), B) if with_stats else (0,)

        def kernel(c, u, n, codes):
            shapes = (jax.ShapeDtypeStruct(c.shape, c.dtype), jax.ShapeDtypeStruct(stats_shape, wide))
            call = jax.ffi.ffi_call(TARGET, shapes, vmap_method="broadcast_all")
            return call(c, u, n, codes, sample_ndim=np.int64(c.ndim - 1))

        def maths(c, u, n, codes):
            rows = [x.reshape(B, -1).astype(wide) for x in (c, u, n)]
            E, named = estimate_rows(self.ops, *rows, codes == SEEKING)
            invalid = codes == INVALID
            E = jnp.where(invalid[:, None], jnp.nan, E).astype(c.dtype).reshape(c.shape)
            stats = jnp.where(invalid, jnp.nan, jnp.stack([named[s] for s in STAT_NAMES]))
            return E, stats if with_stats else jnp.zeros(stats_shape, wide)

        if isinstance(route, tuple):
            E, stats = jax.lax.platform_dependent(c, u, n, codes, default=maths, **dict.fromkeys(route, kernel))
        else:
            E, stats = (kernel if route == "ffi" else maths)(c, u, n, codes)
        return (E, *(stats[i] for i in range(len(STAT_NAMES))), codes == SEEKING) if with_stats else (E,)

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


def _result(out, with_stats):
    """``E`` or ``(E, stats)`` from the compiled call's outputs."""
    if not with_stats:
        return out[0]
    stats = dict(zip(STAT_NAMES, out[1:-1]))
    stats["mode_seeking"] = out[-1]
    return out[0], stats


def _no_gradient(jax, compute):
    """``compute`` as a constant for differentiation: zero tangents, one warning per trace."""
    static = (0, 1, 2, 3)
    fn = jax.custom_jvp(compute, nondiff_argnums=static)

    def jvp(M, route, with_stats, t_kind, primals, tangents):
        warnings.warn(GRAD_WARNING.replace("detached (no autograd link)", "a constant (zero gradient)"), UserWarning, stacklevel=2)
        out = fn(M, route, with_stats, t_kind, *primals)
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
