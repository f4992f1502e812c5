"""Array-library adapters: recognise NumPy / PyTorch inputs, validate them, flatten to [B, N].

Nothing here imports torch at module import; torch is looked up in ``sys.modules`` so a
NumPy-only user never pays for it.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from dataclasses import dataclass

import numpy as np

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_F64 = np.dtype("float64")
_F32 = np.dtype("float32")
_INT_T = tuple(np.dtype(name) for name in ("int64", "int32", "uint8", "int16", "uint16", "uint32", "uint64", "int8"))
HUGE_INT = 1e300  # fast paths leave Python ints beyond this to the general path (float() could overflow)
ARRAY_ARGS = ("eps_cond", "eps_uncond", "noise")


def _torch():
    return sys.modules.get("torch")


def is_torch_tensor(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def library_of(x) -> str:
    """'numpy', 'torch' or 'cuda_array_interface' (a non-torch CUDA array such as CuPy)."""
    if isinstance(x, np.ndarray):
        return "numpy"
    if is_torch_tensor(x):
        return "torch"
    if hasattr(x, "__cuda_array_interface__"):
        return "cuda_array_interface"
    return "unknown"


_DTYPE_NAMES = {}  # dtype object -> canonical name; NumPy's dtype.name is slow on hot paths


def dtype_name(x) -> str:
    """Canonical dtype name ('float32', 'bfloat16', 'int64', ...) of a NumPy array or tensor."""
    dtype = x.dtype if (isinstance(x, np.ndarray) or is_torch_tensor(x)) else x.__cuda_array_interface__["typestr"]
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = str(dtype).replace("torch.", "") if is_torch_tensor(x) else np.dtype(dtype).name
        _DTYPE_NAMES[dtype] = name
    return name


def device_of(x) -> str:
    if is_torch_tensor(x):
        return str(x.device)
    if isinstance(x, np.ndarray):
        return "cpu"
    return "cuda"


@dataclass
class Batch:
    """Validated inputs, the one object every backend takes (see ``prepare``).

    ``library`` and ``device`` name where the result must go back; the arrays are the
    caller's (NumPy arrays in native byte order). ``t`` is the caller's timesteps, ``t64``
    the validated float64 host ``[B]`` vector (host data; CUDA data keeps ``t`` for the
    device-aware glue), ``M`` the validated threshold.
    """

    eps_cond: object
    eps_uncond: object
    noise: object
    library: str
    device: str
    dtype: str
    shape: tuple
    B: int
    N: int
    t: object = None
    t64: object = None
    M: float = None


def prepare(eps_cond, eps_uncond, noise, t, M) -> Batch:
    """``estimate``'s arguments validated once into a ``Batch``.

    Warns (UserWarning) for one-element samples (likely a missing batch dimension: the
    rescaled branch of such a sample is 0) and for torch inputs that require grad (the
    estimator is not differentiable; its result is detached).
    """
    batch = validate_arrays(eps_cond, eps_uncond, noise)
    batch.M = validate_threshold(M)
    batch.t = t
    if batch.device == "cpu":
        batch.t64 = validate_timesteps(t, batch.B)
    if batch.N == 1 and batch.B > 0:
        warnings.warn(
            f"eps_cond: shape {list(batch.shape)} has one element per sample; dimension 0 is the batch "
            "(add a batch dimension, e.g. x[None], if this is one sample)",
            UserWarning,
            stacklevel=3,
        )
    if batch.library == "torch" and any(x.requires_grad for x in (eps_cond, eps_uncond, noise)):
        warnings.warn(
            "eps_cond, eps_uncond, noise: the estimator is not differentiable, so the result is detached "
            "(no autograd link); score distillation applies it as a constant gradient, see docs/api.md",
            UserWarning,
            stacklevel=3,
        )
    return batch


def validate_arrays(eps_cond, eps_uncond, noise) -> Batch:
    """Check the three arrays agree in library, device, shape and float dtype.

    Raises:
        TypeError: unknown array type, mixed libraries, non-float dtypes.
        ValueError: 0-d inputs, mismatched shapes, dtypes or devices.
    """
    arrays = dict(zip(ARRAY_ARGS, (eps_cond, eps_uncond, noise)))
    libs = {name: library_of(a) for name, a in arrays.items()}
    for name, a in arrays.items():
        if libs[name] == "numpy" and not a.dtype.isnative:
            arrays[name] = a.astype(a.dtype.newbyteorder("="))  # the kernels read native order
    eps_cond, eps_uncond, noise = arrays.values()
    for name, lib in libs.items():
        if lib == "unknown":
            raise TypeError(
                f"{name}: expected a numpy.ndarray, a torch.Tensor or a __cuda_array_interface__ "
                f"array, got {type(arrays[name]).__module__}.{type(arrays[name]).__qualname__}"
            )
    if len(set(libs.values())) > 1:
        raise TypeError(
            "eps_cond, eps_uncond, noise: expected arrays from one library, got "
            + ", ".join(f"{n}={l}" for n, l in libs.items())
        )
    for name, a in arrays.items():
        dt = dtype_name(a)
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a floating dtype in {FLOAT_DTYPES}, got {dt}")
        if len(a.shape) == 0:
            raise ValueError(f"{name}: expected shape [B, ...] with at least one dimension, got a 0-d array")
    ref_shape = tuple(eps_cond.shape)
    ref_dtype = dtype_name(eps_cond)
    ref_device = device_of(eps_cond)
    for name in ARRAY_ARGS[1:]:
        a = arrays[name]
        if tuple(a.shape) != ref_shape:
            raise ValueError(f"{name}: expected shape {list(ref_shape)} (eps_cond's), got {list(a.shape)}")
        if dtype_name(a) != ref_dtype:
            raise ValueError(f"{name}: expected dtype {ref_dtype} (eps_cond's), got {dtype_name(a)}")
        if device_of(a) != ref_device:
            raise ValueError(f"{name}: expected device {ref_device} (eps_cond's), got {device_of(a)}")
    B = int(ref_shape[0])
    N = int(math.prod(ref_shape[1:]))
    return Batch(eps_cond, eps_uncond, noise, libs["eps_cond"], ref_device, ref_dtype, ref_shape, B, N)


def validate_threshold(M) -> float:
    """``M`` must be a finite real scalar."""
    if isinstance(M, (bool, np.bool_)) or not isinstance(M, numbers.Real):
        if (is_torch_tensor(M) or isinstance(M, np.ndarray)) and M.ndim == 0 and "complex" not in dtype_name(M):
            M = M.item()
        else:
            raise TypeError(f"M: expected a finite real scalar, got {type(M).__name__} {M!r}")
    try:
        value = float(M)
    except OverflowError:  # a Python int beyond float64's range
        raise ValueError(f"M: expected a finite real scalar, got an integer of {len(str(abs(M)))} digits") from None
    if not math.isfinite(value):
        raise ValueError(f"M: expected a finite real scalar, got {value}")
    return value


def validate_timesteps(t, B: int) -> np.ndarray:
    """``t`` as a float64 host array of shape ``[B]`` (a scalar is broadcast).

    Raises:
        TypeError: complex or non-numeric t.
        ValueError: a vector of the wrong length or non-finite entries.
    """
    if is_torch_tensor(t):
        if t.is_complex():
            raise TypeError(f"t: expected real timesteps, got dtype {dtype_name(t)}")
        t = t.detach().to("cpu").double().numpy()
    try:
        arr = np.asarray(t)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"t: expected a scalar or a length-{B} vector of timesteps, got {type(t).__name__}") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"t: expected real timesteps (ints or floats), got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full(B, float(arr), dtype=np.float64)
    elif arr.ndim != 1 or arr.shape[0] != B:
        raise ValueError(f"t: expected a scalar or a vector of length B={B}, got shape {list(arr.shape)}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"t: expected finite timesteps, got t[{bad}]={arr[bad]}")
    return arr


def fast_timesteps(t, B: int):
    """The common forms of ``t`` as a C-contiguous float64 host ``[B]`` array, or None.

    Takes a Python or NumPy int/float scalar, a native NumPy int/float ``[B]`` vector and a
    torch CPU ``[B]`` tensor, with the least work; None for anything else or anything
    invalid (``validate_timesteps`` then checks it and names the error).
    """
    kind = type(t)
    if kind is np.ndarray:
        if t.shape != (B,):
            return None
        dt = t.dtype
        if dt is _F64 or dt is _F32:
            # t . t is finite only if every t_b is (an overflow merely takes the general path).
            if not math.isfinite(t.dot(t)):
                return None
            return t if dt is _F64 and t.flags.c_contiguous else t.astype(_F64)
        return t.astype(_F64) if dt in _INT_T else None
    if kind is int:
        return np.full(B, float(t)) if -HUGE_INT < t < HUGE_INT else None
    if kind is float or kind is np.float64 or kind is np.int64:
        return np.full(B, t, _F64) if math.isfinite(t) else None
    if is_torch_tensor(t) and t.device.type == "cpu" and not t.requires_grad and t.ndim == 1:
        return fast_timesteps(t.numpy(), B)
    return None


def timestep_indices(t, T: int) -> np.ndarray:
    """t as an int64 host array (same shape), checked to be integers in ``[0, T - 1]``: the
    one validator of timesteps that index a schedule (weightings, ``NoiseSchedule``)."""
    if is_torch_tensor(t):
        if t.is_complex() or t.dtype == _torch().bool:
            raise TypeError(f"t: expected integer timesteps, got dtype {dtype_name(t)}")
        host = t.detach().to("cpu").double().numpy()
    else:
        host = np.asarray(t)
        if host.dtype.kind not in "iuf":
            raise TypeError(f"t: expected integer timesteps, got dtype {host.dtype}")
        host = host.astype(np.float64)
    if host.size and not np.all(np.isfinite(host) & (host == np.round(host))):
        bad = host[~(np.isfinite(host) & (host == np.round(host)))].ravel()[0]
        raise ValueError(f"t: expected integer-valued timesteps, got {bad}")
    idx = host.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= T):
        raise ValueError(f"t: expected timesteps in [0, {T - 1}], got min {idx.min()} max {idx.max()}")
    return idx


def flat_rows(x, B: int, N: int):
    """A ``[B, N]`` C-contiguous view of x (a copy only when x is not contiguous)."""
    if is_torch_tensor(x):
        return x.detach().contiguous().view(B, N) if N and B else x.detach().reshape(B, N)
    return np.ascontiguousarray(x).reshape(B, N)


def host_view(x2d):
    """A NumPy view of a contiguous CPU ``[B, N]`` array, plus its dtype name.

    bfloat16 tensors (which NumPy lacks) are viewed as uint16 bit patterns.
    """
    if is_torch_tensor(x2d):
        torch = _torch()
        if x2d.dtype == torch.bfloat16:
            return x2d.view(torch.uint16 if hasattr(torch, "uint16") else torch.int16).numpy(), "bfloat16"
        return x2d.numpy(), dtype_name(x2d)
    return x2d, x2d.dtype.name


def to_float64_numpy(x2d) -> np.ndarray:
    """Host float64 copy (for the reference path)."""
    if is_torch_tensor(x2d):
        return x2d.detach().to("cpu", dtype=_torch().float64).numpy()
    return np.asarray(x2d, dtype=np.float64)


def empty_like_rows(x2d):
    """Uninitialised ``[B, N]`` output with x's library, dtype and device."""
    if is_torch_tensor(x2d):
        return _torch().empty_like(x2d, memory_format=_torch().contiguous_format)
    return np.empty_like(x2d, order="C")


def from_numpy_like(values: np.ndarray, like, dtype=None):
    """Wrap a host NumPy array into ``like``'s library (and device, for torch)."""
    if is_torch_tensor(like):
        torch = _torch()
        out = torch.from_numpy(np.ascontiguousarray(values))
        target = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or out.dtype)
        return out.to(device=like.device, dtype=target)
    return values if dtype is None else values.astype(dtype)


def row_norms(y, B: int):
    """float64 ``[B]`` L2 norms of the samples of ``y`` (``[B, ...]``), in y's library and device."""
    rows = flat_rows(y, B, int(np.prod(y.shape[1:])))
    if is_torch_tensor(rows):
        return rows.double().pow(2).sum(1).sqrt()
    return np.sqrt(np.square(rows, dtype=np.float64).sum(1))
