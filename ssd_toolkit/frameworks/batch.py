"""The boundary of ``estimate``: three arrays, ``t`` and ``M`` validated once into a ``Batch``.

Every check here asks the arrays' backend (``registry.framework_of``) for what differs
between libraries (dtype names, devices); the rules themselves are written once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from .. import checks
from ..engine.dtypes import FLOAT_DTYPES, promote
from ..engine.maths import STAT_NAMES, stats_dict, warn_if_conventions_differ  # noqa: F401 - the backends' one import point
from .registry import framework_of
from .timestep_checks import host_timesteps

ARRAY_ARGS = ("eps_cond", "eps_uncond", "noise")


@dataclass
class Batch:
    """Validated inputs, the one object a backend's general path takes.

    ``framework`` is the arrays' backend (where the result goes back); the arrays are the
    caller's (NumPy arrays in native byte order). ``t`` is the caller's timesteps, ``t64``
    their float64 host ``[B]`` vector when the data live on the host (device data keep
    ``t`` for the device-aware glue), ``M`` the threshold as a float.
    """

    eps_cond: object
    eps_uncond: object
    noise: object
    framework: object
    device: str
    dtype: str
    shape: tuple
    B: int
    N: int
    t: object = None
    t64: object = None
    M: float = None

    @property
    def arrays(self):
        return self.eps_cond, self.eps_uncond, self.noise


def validate_arrays(eps_cond, eps_uncond, noise, names=ARRAY_ARGS) -> Batch:
    """Check that the three arrays agree in library, device and shape and have float dtypes.

    Raises:
        TypeError: an unsupported array type, mixed libraries, non-float dtypes.
        ValueError: 0-d inputs, mismatched shapes or devices.

    Mixed float dtypes are promoted (``engine.dtypes.promote``); the Batch holds the arrays in
    that dtype.
    """
    frameworks = [framework_of(a, name) for a, name in zip((eps_cond, eps_uncond, noise), names)]
    if len({f.name for f in frameworks}) > 1:
        raise TypeError(
            f"{', '.join(names)}: expected arrays from one library, got "
            + ", ".join(f"{n}={f.name}" for n, f in zip(names, frameworks))
        )
    framework = frameworks[0]
    arrays = [framework.checked(a, name) for a, name in zip((eps_cond, eps_uncond, noise), names)]
    for name, a in zip(names, arrays):
        dt = framework.dtype_name(a)
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a floating dtype in {FLOAT_DTYPES}, got {dt}")
        if len(a.shape) == 0:
            raise ValueError(f"{name}: expected shape [B, ...] with at least one dimension, got a 0-d array")
    ref = arrays[0]
    ref_shape, ref_device = tuple(ref.shape), framework.device(ref)
    for name, a in zip(names[1:], arrays[1:]):
        if tuple(a.shape) != ref_shape:
            raise ValueError(f"{name}: expected shape {list(ref_shape)} ({names[0]}'s), got {list(a.shape)}")
        if framework.device(a) != ref_device:
            raise ValueError(f"{name}: expected device {ref_device} ({names[0]}'s), got {framework.device(a)}")
    dtypes = [framework.dtype_name(a) for a in arrays]
    ref_dtype = promote(dtypes)  # mixed precision: the library's promotion, e.g. bf16 with fp32 -> fp32
    arrays = [a if dt == ref_dtype else framework.astype(a, ref_dtype) for a, dt in zip(arrays, dtypes)]
    B = int(ref_shape[0])
    N = 1
    for d in ref_shape[1:]:  # not math.prod(generator): Dynamo traces this loop
        N *= int(d)
    return Batch(*arrays, framework, ref_device, ref_dtype, ref_shape, B, N)


def prepare(eps_cond, eps_uncond, noise, t, M) -> Batch:
    """``estimate``'s arguments validated once into a ``Batch``.

    Warns (UserWarning) for one-element samples (likely a missing batch dimension: the
    rescaled branch of such a sample is 0) and, through the backend, for inputs that
    require grad (the result is detached).
    """
    batch = validate_arrays(eps_cond, eps_uncond, noise)
    batch.M = checks.threshold(M)
    batch.t = t
    if batch.framework.host_timesteps(batch):
        batch.t64 = host_timesteps(t, batch.B)
        warn_if_conventions_differ(batch.t64, batch.M, stacklevel=4)
    warn_one_element(batch, stacklevel=5)
    batch.framework.warn_if_differentiated(batch)
    return batch


def warn_one_element(batch, stacklevel):
    """Warns (UserWarning) for one-element samples: likely a missing batch dimension (the
    rescaled branch of such a sample is 0)."""
    if batch.N == 1 and batch.B > 0:
        warnings.warn(
            f"eps_cond: shape {list(batch.shape)} has one element per sample; dimension 0 is the batch "
            "(add a batch dimension, e.g. x[None], if this is one sample)",
            UserWarning,
            stacklevel=stacklevel,
        )


GRAD_WARNING = (
    "eps_cond, eps_uncond, noise: the estimator is not differentiable, so the result is detached "
    "(no autograd link); score distillation applies it as a constant gradient, see docs/api.md"
)
