"""Helpers shared by the estimators: validation of the branches an estimator reads, the
half-precision compute dtype, the result and its stats, argument checks."""

from __future__ import annotations

from .. import checks, frameworks


def prepare_branches(eps_cond, eps_uncond, noise, t, eps_negative=None, needs=("cond", "uncond")):
    """Validate the branches an estimator reads and ``t``; returns (batch, t64, negative)."""
    ref = eps_cond
    batch = frameworks.validate_arrays(ref, eps_uncond if "uncond" in needs else ref, noise if noise is not None else ref)
    negative = None
    if "negative" in needs:
        if eps_negative is None:
            raise ValueError("eps_negative: expected the negative-prompt branch [B, ...] (this estimator needs it), got None")
        frameworks.validate_arrays(ref, ref, eps_negative, names=("eps_cond", "eps_cond", "eps_negative"))
        negative = eps_negative
    t64 = frameworks.host_timesteps(t, batch.B)
    return batch, t64, negative


def is_half(x):
    return frameworks.dtype_name(x) in ("float16", "bfloat16")


def up(x):
    """x in its compute dtype: float32 for half inputs, itself otherwise."""
    return frameworks.astype(x, "float32") if is_half(x) else x


def down(y, like):
    """y back in like's dtype."""
    return frameworks.astype(y, frameworks.dtype_name(like))


def where_rows(mask, a, b):
    """Per-sample select: ``a_b`` where ``mask_b`` else ``b_b``; mask is a host bool [B]."""
    shape = (mask.shape[0],) + (1,) * (len(a.shape) - 1)
    return frameworks.namespace(a).where(frameworks.from_host(mask.reshape(shape), a), a, b)


def finish(E, like, B, return_stats, stats=None):
    out = down(E, like)
    if not return_stats:
        return out
    stats = dict(stats or {})
    stats["grad_norm"] = frameworks.row_norms(E, B)
    return out, stats


def check_step(train_step, max_iteration):
    checks.real("train_step", train_step)
    if max_iteration is not None:
        checks.real("max_iteration", max_iteration, positive=True)
