"""Helpers shared by the estimators: validation of the branches an estimator reads, the
half-precision compute dtype, the result and its stats, argument checks."""

from __future__ import annotations

from .. import checks, frameworks
from ..engine.dtypes import HALF_DTYPES, compute_dtype


def prepare_branches(eps_cond, eps_uncond, noise, t, eps_negative=None, needs=("cond", "uncond")):
    """Validate the branches an estimator reads and ``t``; returns ``(batch, t_vec, negative)``
    with ``t_vec`` the float64 ``[B]`` timesteps in the arrays' library and device."""
    ref = eps_cond
    batch = frameworks.validate_arrays(ref, eps_uncond if "uncond" in needs else ref, noise if noise is not None else ref)
    negative = None
    if "negative" in needs:
        if eps_negative is None:
            raise ValueError("eps_negative: expected the negative-prompt branch [B, ...] (this estimator needs it), got None")
        frameworks.validate_arrays(ref, ref, eps_negative, names=("eps_cond", "eps_cond", "eps_negative"))
        negative = eps_negative
    t_vec = frameworks.timestep_vector(t, batch.B, batch.eps_cond)
    return batch, t_vec, negative


def up(x):
    """x in its compute dtype: float32 for half inputs, itself otherwise."""
    name = frameworks.dtype_name(x)
    return frameworks.astype(x, compute_dtype(name)) if name in HALF_DTYPES else x


def down(y, dtype):
    """y in ``dtype`` (a name: the batch's, promoted from the inputs')."""
    return frameworks.astype(y, dtype)


def where_rows(mask, a, b):
    """Per-sample select: ``a_b`` where ``mask_b`` else ``b_b``; ``mask`` a bool ``[B]`` in a's library."""
    shape = (mask.shape[0],) + (1,) * (len(a.shape) - 1)
    return frameworks.namespace(a).where(frameworks.reshape(mask, shape), a, b)


def finish(E, dtype, B, return_stats, stats=None):
    """The result in ``dtype`` and, with ``return_stats``, ``grad_norm`` of the unrounded E."""
    out = down(E, dtype)
    if not return_stats:
        return out
    stats = dict(stats or {})
    stats["grad_norm"] = frameworks.row_norms(E, B)
    return out, stats


def check_step(train_step, max_iteration):
    checks.real("train_step", train_step)
    if max_iteration is not None:
        checks.real("max_iteration", max_iteration, positive=True)
