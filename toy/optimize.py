"""Eq. 3 with an exact toy denoiser: ``theta <- theta - lr * w(t) * estimator``.

theta is the image itself (``x = g(theta) = theta``, so ``dx/dtheta = I``). Every
estimator runs on its own copy of theta for every seed, all in one batch: the
mixture is evaluated once per step for ``[n_estimators * n_seeds]`` points, then each
estimator (an ``ssd_toolkit`` estimator object) is called on its ``[n_seeds, ...]`` slice
with the seed as the batch axis. Seeds share t and the noise across estimators (common
random numbers), so the estimators are compared on the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd_toolkit.estimators import at_step
from ssd_toolkit.weighting import get_weighting

from .progress import bar


def make_sampler(steps, anneal=False, seed=0, t_range=(20, 980), late_t_max=500, anneal_fraction=1 / 3):
    """An ``ssd_toolkit.samplers`` sampler: uniform on ``t_range``, or the paper's annealing.

    Args:
        steps: the run's number of steps.
        anneal: False for uniform t on ``t_range`` throughout; True for the paper's
            schedule (Sec. 5.1), ``t_range`` for the first ``anneal_fraction`` of the steps
            (the paper: 5000 of 15000), then ``[t_range[0], late_t_max]``.
        seed: the sampler's seed.
    """
    from ssd_toolkit.samplers import get_sampler  # noqa: PLC0415

    lo, hi = t_range
    if not anneal:
        return get_sampler("uniform", seed=seed, t_min=lo, t_max=hi)
    anneal_step = int(round(anneal_fraction * steps))
    return get_sampler("paper", seed=seed, t_min=lo, t_max=hi, anneal_step=anneal_step, t_max_annealed=late_t_max)


@dataclass
class DistillResult:
    """The outcome of ``distill``.

    Attributes:
        names: estimator labels, ``n_est``.
        theta: final parameters ``[n_est, n_seeds, d]``.
        path: recorded parameters ``[n_est, n_records, n_seeds, d]`` (step 0 first).
        steps: the step index of each record ``[n_records]``.
    """

    names: list
    theta: np.ndarray
    path: np.ndarray
    steps: np.ndarray


def distill(
    mixture,
    cond_mask,
    estimators,
    theta0,
    *,
    schedule,
    steps,
    lr,
    sampler=None,
    weighting="uniform",
    seed=0,
    record_every=10,
    record_at=None,
    progress=False,
    neg_mask=None,
):
    """Optimise theta with each estimator in place of the SDS estimator (Eq. 3).

    Args:
        mixture: a ``GaussianMixture`` (the unconditional distribution).
        cond_mask: ``[K]`` or ``[n_seeds, K]`` booleans, the conditional components.
        estimators: ``{label: estimator}``; each is called as ``est(eps_cond, eps_uncond,
            noise, t)`` on ``[n_seeds, d]`` arrays with ``t`` ``[n_seeds]`` (plus
            ``eps_negative`` for a "negative" branch), after ``at_step(est, step, steps)``.
            A denoiser-aware estimator (ISM) gets its own ``x_t`` from ``est.noisy_input``
            with the exact unconditional ``eps_hat`` (DDIM inversion), and its target in
            the noise slot.
        theta0: ``[d]`` or ``[n_seeds, d]`` start, the same for every estimator.
        schedule: an ``ssd_toolkit.NoiseSchedule``.
        steps: number of updates.
        lr: a learning rate, ``{label: lr}`` per estimator, or an ``[n_seeds]`` array (one
            per row, e.g. configurations swept along the seed axis).
        sampler: an ``ssd_toolkit.samplers`` sampler (``sample(n, step)``); default
            ``make_sampler(steps, seed=seed)``, uniform on [20, 980]. Or a list of G
            samplers: the rows then form G equal groups, group g draws its t from
            ``sampler[g]`` and every group draws the same noise, as if each group were its
            own ``distill`` call with the same ``seed`` (the sweep runs its configurations
            so, in one loop). A sampler listed for several groups is drawn once per step,
            and those groups share its t, as equal samplers in separate calls would draw.
        weighting: a ``ssd_toolkit.weighting`` name: ``"uniform"`` (w = 1, the default)
            or ``"sds"`` (w = 1 - abar_t = sigma_t^2, DreamFusion).
        seed: seeds the timesteps and the noise.
        record_every: keep theta every this many steps.
        record_at: or keep theta after exactly these steps (overrides ``record_every``).
        progress: a progress bar's label (``True``: "distill"; shown on a terminal only).
        neg_mask: ``[K]`` booleans, the components of the "negative" (or SDS-Bridge's
            source) prompt; needed when an estimator reads that branch.

    Returns:
        A ``DistillResult``.
    """
    names = list(estimators)
    n_est = len(names)
    theta0 = np.atleast_2d(np.asarray(theta0, dtype=np.float64))
    cond_mask = np.asarray(cond_mask, dtype=bool)
    n_seeds = theta0.shape[0] if cond_mask.ndim == 1 else cond_mask.shape[0]
    theta = np.broadcast_to(theta0, (n_est, n_seeds, mixture.dim)).copy()
    if isinstance(lr, dict):
        lrs = np.array([lr[n] for n in names], dtype=np.float64)[:, None, None]
    else:  # a scalar, or one per row
        lrs = np.broadcast_to(np.asarray(lr, dtype=np.float64).reshape(1, -1, 1), (1, n_seeds, 1))
    mask_all = np.broadcast_to(cond_mask, (n_seeds, mixture.num_components))
    mask_all = np.broadcast_to(mask_all, (n_est, n_seeds, mixture.num_components)).reshape(-1, mixture.num_components)
    cond_logw = mixture.log_weights(mask_all, n_est * n_seeds)  # once, not every step
    rng = np.random.default_rng(seed)
    sampler = make_sampler(steps, seed=seed) if sampler is None else sampler
    groups = 1
    if isinstance(sampler, (list, tuple)):
        groups, sampler = len(sampler), _GroupedSampler(sampler, n_seeds)
    keep = (lambda done: done % record_every == 0) if record_at is None else set(record_at).__contains__
    # alpha_t, sigma_t and w(t) for every t once (the same values as per step, without the
    # per-call validation of t: the sampler's t are integers in range)
    all_t = np.arange(schedule.num_timesteps)
    alpha_of, sigma_of = schedule.alpha(all_t), schedule.sigma(all_t)
    w_at = get_weighting(weighting)(all_t, schedule.alphas_cumprod)
    records, record_steps = [theta.copy()], [0]
    iterator = range(steps)
    if progress:
        iterator = bar(iterator, "distill" if progress is True else progress)
    neg_logw = None if neg_mask is None else mixture.log_weights(neg_mask, n_est * n_seeds)
    E = np.empty_like(theta)
    for step in iterator:
        t = sampler.sample(n_seeds, step)
        noise = rng.standard_normal((n_seeds // groups, mixture.dim))
        noise = np.tile(noise, (groups, 1)) if groups > 1 else noise
        alpha, sigma = alpha_of[t], sigma_of[t]
        x_t = alpha[None, :, None] * theta + sigma[None, :, None] * noise[None]
        ests = [at_step(estimators[name], step, steps) for name in names]
        noises = [noise] * n_est
        for i, est in enumerate(ests):
            if getattr(est, "needs_denoiser", False):
                x_t[i], noises[i], _ = est.noisy_input(
                    _exact_uncond(mixture, alpha_of, sigma_of), theta[i], noise,
                    np.asarray(t, dtype=np.int64), schedule.alphas_cumprod,
                )
        a_all, s_all = np.tile(alpha, n_est), np.tile(sigma, n_est)
        eps_c, eps_u = mixture.eps_hat_pair(x_t.reshape(-1, mixture.dim), a_all, s_all, cond_logw)
        eps_c = eps_c.reshape(theta.shape)
        eps_u = eps_u.reshape(theta.shape)
        eps_n = [None] * n_est
        if any("negative" in est.branches for est in ests):
            if neg_logw is None:
                raise ValueError(
                    "neg_mask: expected the negative prompt's components (an estimator reads that branch), got None"
                )
            eps_n = mixture.eps_hat_pair(x_t.reshape(-1, mixture.dim), a_all, s_all, neg_logw)[0].reshape(theta.shape)
        for i, est in enumerate(ests):
            E[i] = est(eps_c[i], eps_u[i], noises[i], t, eps_negative=eps_n[i])
        theta -= lrs * w_at[t][None, :, None] * E
        if keep(step + 1) or step + 1 == steps:
            records.append(theta.copy())
            record_steps.append(step + 1)
    path = np.stack(records, axis=1)
    return DistillResult(names=names, theta=theta, path=path, steps=np.array(record_steps))


class _GroupedSampler:
    """t for rows in equal groups, each group's from its own sampler (see ``distill``)."""

    def __init__(self, samplers, n_rows):
        if not samplers or n_rows % len(samplers):
            raise ValueError(f"sampler: expected a list of samplers dividing the {n_rows} rows, got {len(samplers)}")
        self.samplers, self.size = list(samplers), n_rows // len(samplers)

    def sample(self, n, step):
        drawn = {}  # id(sampler) -> its t this step
        for s in self.samplers:
            if id(s) not in drawn:
                drawn[id(s)] = s.sample(self.size, step)
        return np.concatenate([drawn[id(s)] for s in self.samplers])


def _exact_uncond(mixture, alpha_of, sigma_of):
    """``eps_uncond(x, t)`` with integer ``t`` ``[n]``, from the exact mixture: one pass over
    the components for the unconditional branch alone (ISM's inversion reads nothing else).
    ``alpha_of``/``sigma_of``: the schedule's values at every t (looked up, not recomputed)."""

    def eps(x, t):
        return mixture.eps_hat(x, alpha_of[t], sigma_of[t])

    return eps
