"""Per-step logging dicts from an estimator's per-sample statistics (no pass over the data).

``step_diagnostics(stats, t, weights)`` takes the ``stats`` of
``est(..., return_stats=True)`` (or of ``ssd_toolkit.estimate(..., return_stats=True)``),
the timesteps and optionally ``w(t)``, and returns a flat ``{name: float}`` dict that any
logger takes (``wandb.log``, ``SummaryWriter.add_scalar`` per key, Lightning's
``log_dict``). All inputs are ``[B]`` vectors, so the cost is one device-to-host copy of
a few ``[B]`` vectors: the weighted gradient norm is ``|w_b| ||E_b||`` (w(t) is a
per-sample scalar), never recomputed from the gradient.

Keys (each present when its source statistic is):

- ``grad_norm``: mean over the batch of ``|w_b| ||E_b||`` (``||E_b||`` without weights);
  ``grad_norm/<b>`` per sample; ``grad_norm_unweighted`` when weights are given.
- ``r``, ``h_norm``, ``eps_tilde_norm``, ``eps_cond_norm``, ``noise_norm``, ``scale``:
  batch means (SSD family); ``<name>/<b>`` per sample for the names in ``per_sample``.
- ``frac_mode_seeking`` / ``frac_mode_disengaging``: fraction of the batch in each SSD
  branch (``t_b <= M`` / ``t_b > M``); ``frac_degenerate``: rescaled samples set to 0.
- ``frac_nonfinite``: fraction of samples whose gradient norm is not finite.
- ``t_min``, ``t_mean``, ``t_max``.

An empty batch gives NaN means and zero fractions.
"""

from __future__ import annotations

import math

import numpy as np

from . import frameworks
from .engine import maths
from .engine.array_ops import NUMPY_OPS

MEAN_STATS = ("r", "h_norm", "eps_tilde_norm", "eps_cond_norm", "noise_norm", "scale")


def _host(x, B, name):
    """x as a float64 host vector of length B (a scalar is broadcast)."""
    if not isinstance(x, (np.ndarray, np.generic, int, float, bool)) and frameworks.find(x) is not None:
        x = frameworks.to_host_float64(x)
    arr = np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray) or x.dtype != bool else x.astype(np.float64)
    if arr.ndim == 0:
        arr = np.full(B, float(arr))
    if arr.shape != (B,):
        raise ValueError(f"{name}: expected a scalar or shape [{B}] (the batch of stats), got {list(arr.shape)}")
    return arr


def _to_host_once(stats, B):
    """Device [B] stats copied to the host in one transfer (one sync on a GPU)."""
    arrays = {k: v for k, v in stats.items() if not isinstance(v, np.ndarray) and tuple(getattr(v, "shape", ())) == (B,)}
    if len(arrays) < 2:
        return dict(stats)
    first = next(iter(arrays.values()))
    backend = frameworks.find(first)
    if backend is None or any(frameworks.find(v) is not backend or backend.device(v) != backend.device(first)
                              for v in arrays.values()):
        return dict(stats)
    ops = backend.ops_for(first)
    stacked = backend.to_host_float64(ops.lib.stack([backend.astype(v, "float64") for v in arrays.values()]))
    return {**stats, **dict(zip(arrays, stacked))}


def _batch_size(stats):
    for key in ("grad_norm", "h_norm", "mode_seeking"):
        if key in stats:
            return int(stats[key].shape[0])
    raise ValueError(f"stats: expected 'grad_norm' or the SSD stats ('h_norm', 'scale', 'mode_seeking'), got keys {sorted(stats)}")


def _mean(x):
    return float(x.mean()) if x.size else math.nan


def step_diagnostics(stats, t, weights=None, per_sample=("grad_norm",)):
    """A flat ``{name: float}`` dict describing one training step (see the module docstring).

    Args:
        stats: ``{name: [B]}`` from an estimator with ``return_stats=True`` or from
            ``ssd_toolkit.estimate(..., return_stats=True)`` (then ``grad_norm`` is
            derived: ``||h_b||``, or 0 for a degenerate rescaled sample). NumPy or torch,
            any device.
        t: the timesteps, a scalar or ``[B]``.
        weights: ``w(t)``, a scalar or ``[B]``, or None.
        per_sample: names whose per-sample values are emitted as ``<name>/<b>``.

    Returns:
        dict of Python floats.

    Raises:
        ValueError: stats without a usable gradient norm, vectors of another length,
            an unknown name in ``per_sample``.
        TypeError: stats not a mapping.
    """
    if not hasattr(stats, "keys"):
        raise TypeError(f"stats: expected a dict of per-sample statistics, got {type(stats).__name__}")
    B = _batch_size(stats)
    host = {k: _host(v, B, f"stats[{k!r}]") for k, v in _to_host_once(stats, B).items()}
    if "grad_norm" not in host:
        missing = {"h_norm", "scale", "mode_seeking"} - set(host)
        if missing:
            raise ValueError(f"stats: expected 'grad_norm' or all of h_norm/scale/mode_seeking, missing {sorted(missing)}")
        host["grad_norm"] = maths.gradient_norm(NUMPY_OPS, host["h_norm"], host["scale"], host["mode_seeking"] > 0)
    out = {}
    grad_norm = host["grad_norm"]
    if weights is not None:
        out["grad_norm_unweighted"] = _mean(grad_norm)
        grad_norm = np.abs(_host(weights, B, "weights")) * grad_norm
    host["grad_norm"] = grad_norm
    out["grad_norm"] = _mean(grad_norm)
    for name in MEAN_STATS:
        if name in host:
            out[name] = _mean(host[name])
    for name in per_sample:
        if name not in host:
            raise ValueError(f"per_sample: expected names among {sorted(host)}, got {name!r}")
        for b, value in enumerate(host[name]):
            out[f"{name}/{b}"] = float(value)
    if "mode_seeking" in host:
        seeking = host["mode_seeking"] > 0
        out["frac_mode_seeking"] = float(seeking.mean()) if B else 0.0
        out["frac_mode_disengaging"] = float((~seeking).mean()) if B else 0.0
        if "scale" in host:
            out["frac_degenerate"] = float((seeking & (host["scale"] == 0)).mean()) if B else 0.0
    out["frac_nonfinite"] = float((~np.isfinite(grad_norm)).mean()) if B else 0.0
    t_host = _host(t, B, "t")
    out["t_min"] = float(t_host.min()) if B else math.nan
    out["t_mean"] = _mean(t_host)
    out["t_max"] = float(t_host.max()) if B else math.nan
    return out
