"""ISM, annealed CSD and SDS-Bridge in the toy's Eq. 3 loop with exact mixture scores."""

import numpy as np
import pytest

from ssd_toolkit import get_estimator, stable_diffusion_schedule
from ssd_toolkit.toy.mixture import GaussianMixture, paper_mixture
from ssd_toolkit.toy.optimize import distill, make_sampler

SCHEDULE = stable_diffusion_schedule()


def one_step(mixture, cond_mask, est, theta0, seed=3, neg_mask=None):
    res = distill(mixture, cond_mask, {"e": est}, theta0, schedule=SCHEDULE, steps=1, lr=1.0, seed=seed,
                  record_every=1, neg_mask=neg_mask)  # fmt: skip
    return res.theta[0] - theta0


def test_ism_with_exact_scores_of_a_point_mass_is_sds_and_stays_put():
    """Data = one tight Gaussian at theta: the exact denoiser is the oracle, DDIM inversion
    is forward noising and ISM's target is the noise, so u - target ~ 0 (c = u here)."""
    mu = np.array([[0.7, -0.3]] * 4)
    mixture = GaussianMixture([1.0], mu[:1], 1e-10)
    step = one_step(mixture, np.array([True]), get_estimator("ism"), mu)
    assert np.abs(step).max() < 1e-4
    # the same start under SDS with the same draws also stays: the two agree
    np.testing.assert_allclose(step, one_step(mixture, np.array([True]), get_estimator("sds", guidance_scale=7.5), mu),
                               atol=1e-4)  # fmt: skip


def test_ism_step_uses_its_inverted_point():
    """On the paper's mixture ISM's step differs from SDS's at the same draws (its x_t and
    target come from DDIM inversion), and matches the estimator on the inverted point."""
    mixture, mask = paper_mixture()
    theta0 = np.tile([1.2, 0.8], (5, 1))
    ism, sds = get_estimator("ism"), get_estimator("sds", guidance_scale=7.5)
    d_ism, d_sds = one_step(mixture, mask, ism, theta0), one_step(mixture, mask, sds, theta0)
    assert np.abs(d_ism - d_sds).max() > 1e-3
    # replay: the same t and noise as distill draws them (sampler, then the seed's rng)
    t = make_sampler(1, seed=3).sample(5, 0)
    noise = np.random.default_rng(3).standard_normal((5, 2))
    logw = mixture.log_weights(mask, 5)

    def eps_u(x, tt):
        return mixture.eps_hat_pair(x, SCHEDULE.alpha(tt), SCHEDULE.sigma(tt), logw)[1]

    x_t, target, _ = ism.at_step(0, 1).noisy_input(eps_u, theta0, noise, t, SCHEDULE.alphas_cumprod)
    c, u = mixture.eps_hat_pair(x_t, SCHEDULE.alpha(t), SCHEDULE.sigma(t), logw)
    np.testing.assert_allclose(d_ism, -(u + 7.5 * (c - u) - target), rtol=1e-10, atol=1e-12)


def test_negative_branch_uses_neg_mask_and_is_required():
    mixture, mask = paper_mixture()
    theta0 = np.tile([1.5, 1.0], (3, 1))
    est = get_estimator("csd-annealed")
    with pytest.raises(ValueError, match=r"neg_mask: expected the negative prompt's components"):
        one_step(mixture, mask, est, theta0)
    d = one_step(mixture, mask, est, theta0, neg_mask=~mask)
    # at step 0 of 1 (p = 0): c - neg, with neg the singular component's eps at the same x_t
    t = make_sampler(1, seed=3).sample(3, 0)
    noise = np.random.default_rng(3).standard_normal((3, 2))
    x_t = SCHEDULE.alpha(t)[:, None] * theta0 + SCHEDULE.sigma(t)[:, None] * noise
    c, _ = mixture.eps_hat_pair(x_t, SCHEDULE.alpha(t), SCHEDULE.sigma(t), mixture.log_weights(mask, 3))
    neg, _ = mixture.eps_hat_pair(x_t, SCHEDULE.alpha(t), SCHEDULE.sigma(t), mixture.log_weights(~mask, 3))
    np.testing.assert_allclose(d, -(c - neg), rtol=1e-10, atol=1e-12)
