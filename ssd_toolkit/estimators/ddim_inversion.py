"""ISM's noisy input (LucidDreamer, Liang et al. 2024): deterministic DDIM inversion from the
clean latent to ``x_s``, then one DDIM step ``s -> t``. Array-generic (any library
``ssd_toolkit.frameworks`` takes): the denoiser is a callable and the arithmetic is plain
operators.

With ``abar`` the cumulative alphas, a DDIM step (eta = 0) from timestep ``a`` to ``b`` with
noise prediction ``e`` is ``sqrt(abar_b) (x - sqrt(1 - abar_a) e) / sqrt(abar_a) +
sqrt(1 - abar_b) e``; inversion runs it towards larger t.
"""

from __future__ import annotations

from .. import frameworks


def _lib(x):
    return frameworks.namespace(x).lib


def _at(alphas_cumprod, t, like):
    """``abar_t`` per sample, shaped ``[B, 1, ...]`` to broadcast against ``like``."""
    a = alphas_cumprod[t]
    return a.reshape((-1,) + (1,) * (like.ndim - 1))


def ddim_step(x, eps, a_from, a_to):
    """One deterministic DDIM step between two noise levels (per-sample ``abar`` arrays)."""
    lib = _lib(x)
    x0 = (x - lib.sqrt(1 - a_from) * eps) / lib.sqrt(a_from)
    return lib.sqrt(a_to) * x0 + lib.sqrt(1 - a_to) * eps


def ism_noisy_input(eps_uncond, x0, noise, t, s, alphas_cumprod, interval=200, max_steps=5):
    """``x_t`` and ISM's target ``eps_uncond(x_s, s)`` by DDIM inversion.

    ``x_start = sqrt(abar) x0 + sqrt(1 - abar) noise`` at ``start = max(s - interval *
    max_steps, 0)``; then DDIM inversion steps of ``interval`` (the last one shortened to
    land on ``s``; at least one, at most ``max_steps``), each from an unconditional
    prediction; then ``eps_s = eps_uncond(x_s, s)`` and one DDIM step ``s -> t``.

    Args:
        eps_uncond: ``eps_uncond(x, timesteps) -> eps``, the unconditional denoiser on a
            ``[B, ...]`` batch with per-sample integer timesteps ``[B]``.
        x0, noise: ``[B, ...]``.
        t, s: per-sample integer timesteps ``[B]`` (same library as ``x0``), ``s <= t``.
        alphas_cumprod: ``[T]``, same library and device as ``x0``.
        interval, max_steps: LucidDreamer's ``xs_delta_t`` (200) and ``xs_inv_steps`` (5).

    Returns:
        ``(x_t, eps_s, calls)``: calls is the number of denoiser calls on the batch.
    """
    lib = _lib(x0)
    start = s - interval * max_steps
    start = frameworks.namespace(start).where(start < 0, 0, start)
    a = _at(alphas_cumprod, start, x0)
    x = lib.sqrt(a) * x0 + lib.sqrt(1 - a) * noise
    cur, calls = start, 0
    for _ in range(max_steps):
        eps = eps_uncond(x, cur)
        calls += 1
        nxt = lib.minimum(cur + interval, s)
        x = ddim_step(x, eps, _at(alphas_cumprod, cur, x), _at(alphas_cumprod, nxt, x))
        cur = nxt
        if bool((cur == s).all()):
            break
    eps_s = eps_uncond(x, s)
    calls += 1
    x_t = ddim_step(x, eps_s, _at(alphas_cumprod, s, x), _at(alphas_cumprod, t, x))
    return x_t, eps_s, calls
