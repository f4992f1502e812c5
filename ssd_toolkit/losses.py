"""From an estimator's gradient to something ``loss.backward()`` understands (PyTorch).

Two ways to apply a gradient ``g`` (``[B, ...]``, e.g. ``w(t) * E``) to the rendered
latents ``x`` (``[B, ...]``, in the graph of the 3D model's parameters):

- ``inject_gradient(x, g)``: a scalar whose backward gives ``dL/dx = g`` exactly. Its value
  is 0, so adding it to other losses never changes a logged loss.
- ``sds_loss(x, g)``: threestudio's convention, ``0.5 * ||x - stopgrad(x - g)||^2 / B``, so
  ``dL/dx = g / B`` and the value is ``0.5 * ||g||^2 / B``. It is built on the same
  injection rather than the literal expression: in floating point ``x - (x - g)`` loses
  the low bits of g when ``|x| >> |g|`` (all of g when ``|g|`` is below half an ulp of x),
  while here the gradient is exactly ``g / B``.

AMP: under ``torch.amp.GradScaler`` call ``scaler.scale(loss).backward()`` as for any loss.
The upstream gradient that reaches the injection is then the scale ``S``, and x receives
``S * g`` (``S * g / B``), which ``scaler.unscale_`` / ``scaler.step`` divide by S again;
an overflow of ``S * g`` in x's dtype shows up as inf and makes the scaler skip the step,
as it would for any loss. Do not multiply g by S yourself. (DreamWaltz's trainer calls
``latents.backward(gradient=g * S)`` by hand; ``inject_gradient`` does the same inside
autograd.)

Per-sample options, off by default, applied to g in this order:

- ``normalize=True``: ``g_b / ||g_b||`` (DreamWaltz's ``grad_norm``, on by default there).
  It erases the estimator's magnitude, including SSD's rescaling to ``||h||`` and w(t):
  only the direction survives.
- ``max_norm=c``: ``g_b * min(1, c / ||g_b||)``.
Zero samples stay zero; norms accumulate in float64.
"""

from __future__ import annotations

import numbers


from . import frameworks


def _torch():
    import torch  # noqa: PLC0415 - losses are PyTorch-only; import ssd_toolkit stays torch-free

    return torch


def _check_tensor(name, x):
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected shape [B, ...] with at least one dimension, got a 0-d tensor")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {frameworks.dtype_name(x)}")


def _per_sample_factor(g, factor):
    """``g_b * factor_b`` (factor float64 [B]) in g's dtype, the product in float32 or better."""
    shape = (g.shape[0],) + (1,) * (len(g.shape) - 1)
    name = frameworks.dtype_name(g)
    compute = frameworks.astype(g, "float32") if name in ("float16", "bfloat16") else g
    factor = frameworks.reshape(frameworks.astype(factor, frameworks.dtype_name(compute)), shape)
    return frameworks.astype(compute * factor, name)


def _validate_rows(name, g):
    frameworks.framework_of(g, name)
    if len(g.shape) == 0:
        raise ValueError(f"{name}: expected shape [B, ...] with at least one dimension, got a 0-d array")
    if frameworks.dtype_name(g) not in frameworks.FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype in {frameworks.FLOAT_DTYPES}, got {frameworks.dtype_name(g)}")


def normalize_per_sample(g):
    """``g_b / ||g_b||`` per sample (a zero sample stays zero).

    Args:
        g: ``[B, ...]`` NumPy array or torch tensor, float.

    Returns:
        g's shape, dtype, library and device.
    """
    _validate_rows("g", g)
    norms = frameworks.row_norms(g)
    xp = frameworks.namespace(norms)
    factor = xp.where(norms > 0, 1.0 / xp.where(norms > 0, norms, 1.0), 0.0)
    return _per_sample_factor(g, factor)


def clip_per_sample(g, max_norm):
    """``g_b * min(1, max_norm / ||g_b||)`` per sample.

    Args:
        g: ``[B, ...]`` NumPy array or torch tensor, float.
        max_norm: a positive finite number.

    Returns:
        g's shape, dtype, library and device.
    """
    _validate_rows("g", g)
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not (0 < max_norm < float("inf")):
        raise ValueError(f"max_norm: expected a positive finite number, got {max_norm!r}")
    norms = frameworks.row_norms(g)
    xp = frameworks.namespace(norms)
    over = norms > max_norm
    factor = xp.where(over, max_norm / xp.where(over, norms, 1.0), 1.0)
    return _per_sample_factor(g, factor)


def postprocess_gradient(g, *, normalize=False, max_norm=None):
    """The per-sample options of ``inject_gradient`` / ``sds_loss``: normalise, then clip."""
    if normalize:
        g = normalize_per_sample(g)
    if max_norm is not None:
        g = clip_per_sample(g, max_norm)
    return g


def _apply(x, grad, value):
    from .frameworks.torch.inject import InjectGradient  # noqa: PLC0415 - imports torch

    return InjectGradient.apply(x, grad, value)


def _prepare(x, grad, normalize, max_norm):
    _check_tensor("x", x)
    _check_tensor("grad", grad)
    if tuple(grad.shape) != tuple(x.shape):
        raise ValueError(f"grad: expected x's shape {list(x.shape)}, got {list(grad.shape)}")
    if grad.device != x.device:
        raise ValueError(f"grad: expected x's device {x.device}, got {grad.device}")
    grad = postprocess_gradient(grad.detach(), normalize=normalize, max_norm=max_norm)
    return grad.to(x.dtype)


def _loss_dtype(x):
    torch = _torch()
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def inject_gradient(x, grad, *, normalize=False, max_norm=None):
    """A zero-valued scalar whose backward adds ``grad`` to ``x.grad``.

    Args:
        x: ``[B, ...]`` float tensor in the autograd graph.
        grad: the gradient for x, same shape and device (any float dtype; cast to x's).
        normalize, max_norm: per-sample options (see the module docstring), off by default.

    Returns:
        A 0-d tensor (float32, float64 for float64 x) of value 0 on x's device;
        ``loss.backward()`` gives ``dL/dx = grad`` exactly, ``scaler.scale(loss).backward()``
        gives ``S * grad``.

    Raises:
        TypeError: non-tensor or non-float x/grad.
        ValueError: 0-d x, shape or device mismatch, bad max_norm.
    """
    g = _prepare(x, grad, normalize, max_norm)
    return _apply(x, g, _torch().zeros((), dtype=_loss_dtype(x), device=x.device))


def sds_loss(x, grad, *, normalize=False, max_norm=None):
    """threestudio's ``0.5 * ||x - stopgrad(x - grad)||^2 / B``; ``dL/dx = grad / B`` exactly.

    Args:
        x: ``[B, ...]`` float tensor in the autograd graph.
        grad: the gradient, same shape and device (cast to x's dtype).
        normalize, max_norm: per-sample options (see the module docstring), off by default.

    Returns:
        A 0-d tensor (float32, float64 for float64 x) on x's device with value
        ``0.5 * ||grad||^2 / B`` (after the options), accumulated in that dtype.

    Raises:
        TypeError / ValueError: as ``inject_gradient``.
    """
    g = _prepare(x, grad, normalize, max_norm)
    B = x.shape[0]
    value = 0.5 * g.to(_loss_dtype(x)).pow(2).sum() / max(B, 1)
    return _apply(x, g / max(B, 1), value)
