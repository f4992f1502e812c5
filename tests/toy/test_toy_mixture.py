"""Property-based tests of the toy's exact diffused Gaussian mixture (ssd_toolkit.toy.mixture)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ssd_toolkit.toy.mixture import GaussianMixture, paper_mixture
from ssd_toolkit.toy.modes import find_modes, is_mode_consistent

from ssd_toolkit import stable_diffusion_schedule

SCHEDULE = stable_diffusion_schedule()


@st.composite
def mixtures(draw, max_dim=3, max_components=4):
    """A random mixture: isotropic shared, isotropic per component, or diagonal covariances."""
    d = draw(st.integers(1, max_dim))
    K = draw(st.integers(1, max_components))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["shared", "isotropic", "diagonal"]))
    rng = np.random.default_rng(seed)
    means = rng.uniform(-2, 2, size=(K, d))
    weights = rng.uniform(0.1, 1.0, size=K)
    if kind == "shared":
        var = float(rng.uniform(0.02, 1.0))
    elif kind == "isotropic":
        var = rng.uniform(0.02, 1.0, size=K)
    else:
        var = rng.uniform(0.02, 1.0, size=(K, d))
    mask = rng.random(K) < 0.5
    mask[rng.integers(K)] = True
    return GaussianMixture(weights, means, var), mask, rng


@given(mixtures(), st.integers(0, 999), st.booleans())
def test_score_is_finite_difference_gradient_of_log_density(mix_mask_rng, t, conditional):
    mixture, mask, rng = mix_mask_rng
    mask = mask if conditional else None
    a, s = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
    x = rng.uniform(-3, 3, size=(5, mixture.dim))
    h = 1e-5
    fd = np.zeros_like(x)
    for j in range(mixture.dim):
        e = np.zeros(mixture.dim)
        e[j] = h
        fd[:, j] = (mixture.log_prob(x + e, a, s, mask) - mixture.log_prob(x - e, a, s, mask)) / (2 * h)
    score = mixture.score(x, a, s, mask)
    # central differences: O(h^2) truncation plus ~1e-16 |log p| / h rounding
    tol = 1e-5 * (1.0 + np.abs(score)) + 1e-10 * (1.0 + np.abs(mixture.log_prob(x, a, s, mask)))[:, None] / h
    np.testing.assert_array_less(np.abs(score - fd), tol)


def test_log_density_integrates_to_one_in_1d():
    mixture = GaussianMixture([0.3, 0.7], [[-1.0], [1.5]], [0.05, 0.2])
    grid = np.linspace(-8, 8, 200001)[:, None]
    for t in (0, 300, 999):
        a, s = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
        p = np.exp(mixture.log_prob(grid, a, s))
        assert abs(np.trapezoid(p, grid[:, 0]) - 1.0) < 1e-6


@given(mixtures(max_dim=2, max_components=3), st.integers(250, 999))
def test_eps_hat_is_posterior_mean_of_the_noise(mix_mask_rng, t):
    """E[eps | x_t] by self-normalised importance sampling with the data as proposal:
    x_i ~ p, w_i = N(x_t; alpha x_i, sigma^2 I), E[eps | x_t] = sum w_i (x_t - alpha x_i) / sigma / sum w_i.
    Tolerance: 6 delta-method standard errors of the ratio estimate, plus 1e-3."""
    mixture, _, rng = mix_mask_rng
    a, s = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
    n = 200_000
    x, _ = mixture.sample(n, rng)
    for x_t in (a * mixture.means[0] + 0.3 * s, np.full(mixture.dim, -0.5 * s)):
        logw = -0.5 * np.sum((x_t - a * x) ** 2, axis=1) / s**2
        w = np.exp(logw - logw.max())
        ess = w.sum() ** 2 / np.sum(w**2)
        assert ess > 2000, f"importance sampling degenerate (ESS {ess:.0f}); choose larger t"
        eps = (x_t - a * x) / s
        wn = w / w.sum()
        mc = wn @ eps
        se = np.sqrt(np.sum(wn[:, None] ** 2 * (eps - mc) ** 2, axis=0))
        exact = mixture.eps_hat(x_t[None], a, s)[0]
        np.testing.assert_array_less(np.abs(exact - mc), 6 * se + 1e-3)


@given(mixtures(), st.booleans())
def test_sec10_limit_pure_noise_eps_hat_is_x_t(mix_mask_rng, conditional):
    """alpha_T = 0, sigma_T = 1: p_T = N(0, I) whatever the data, so eps_hat(x_T) = x_T exactly,
    and close to it at alpha = 1e-4 (error below 1e-3 (1 + |x|))."""
    mixture, mask, rng = mix_mask_rng
    mask = mask if conditional else None
    x = rng.normal(size=(7, mixture.dim)) * 2
    np.testing.assert_allclose(mixture.eps_hat(x, 0.0, 1.0, mask), x, rtol=0, atol=1e-12)
    a = 1e-4
    err = np.abs(mixture.eps_hat(x, a, np.sqrt(1 - a * a), mask) - x)
    np.testing.assert_array_less(err, 1e-3 * (1 + np.abs(x)))


@given(mixtures())
def test_sec10_limit_no_noise_is_the_data_score(mix_mask_rng):
    """sigma -> 0: the diffused score tends to the data score and eps_hat = -sigma score -> 0."""
    mixture, _, rng = mix_mask_rng
    x = rng.uniform(-2, 2, size=(6, mixture.dim))
    data_score = mixture.score(x, 1.0, 0.0)
    s = 1e-6
    near = mixture.score(x, np.sqrt(1 - s * s), s)
    np.testing.assert_allclose(near, data_score, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_less(
        np.abs(mixture.eps_hat(x, np.sqrt(1 - s * s), s)), 1e-6 * (1 + np.abs(data_score)) + 1e-12
    )


def test_single_gaussian_matches_closed_form():
    mixture = GaussianMixture([1.0], [[0.5, -1.0]], [[0.2, 0.05]])
    x = np.array([[0.0, 0.0], [1.0, -2.0]])
    for t in (0, 500, 999):
        a, s = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
        var = a**2 * np.array([0.2, 0.05]) + s**2
        np.testing.assert_allclose(mixture.score(x, a, s), -(x - a * np.array([0.5, -1.0])) / var, rtol=1e-12)


def test_paper_mixture_is_mode_consistent():
    mixture, mask = paper_mixture()
    holds, cond, uncond = is_mode_consistent(mixture, mask)
    assert holds
    np.testing.assert_allclose(cond, [[1.0, 1.0], [2.0, 1.0]], atol=1e-3)
    assert uncond.shape == (3, 2)
    np.testing.assert_allclose(uncond[0], [0.0, 0.0], atol=1e-3)  # the singular mode


def test_mode_consistency_check_can_fail():
    """cond = N(0, 0.1); uncond adds N(0.3, 0.1): the two merge into one mode near 0.15, so the
    conditional mode 0 is not an unconditional mode."""
    mixture = GaussianMixture([0.5, 0.5], [[0.0], [0.3]], 0.1)
    holds, cond, uncond = is_mode_consistent(mixture, np.array([True, False]))
    assert not holds
    assert uncond.shape == (1, 1) and abs(uncond[0, 0] - 0.15) < 1e-3


def test_transient_mode_of_the_paper_mixture():
    """At t = 350 the induced modes alpha [1,1] and alpha [2,1] have melted into one mode,
    the transient mode alpha [1.5, 1]; at t = 100 there are still two."""
    mixture, mask = paper_mixture()
    a, s = float(SCHEDULE.alpha(350)), float(SCHEDULE.sigma(350))
    modes = find_modes(mixture, a, s, mask)
    assert modes.shape == (1, 2)
    np.testing.assert_allclose(modes[0] / a, [1.5, 1.0], atol=1e-3)
    assert find_modes(mixture, float(SCHEDULE.alpha(100)), float(SCHEDULE.sigma(100)), mask).shape == (2, 2)


def test_eps_hat_pair_matches_separate_calls():
    mixture, mask = paper_mixture()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 2))
    a, s = rng.uniform(0.1, 1, 9), rng.uniform(0.1, 1, 9)
    c, u = mixture.eps_hat_pair(x, a, s, mask)
    np.testing.assert_allclose(c, mixture.eps_hat(x, a, s, mask), rtol=1e-12)
    np.testing.assert_allclose(u, mixture.eps_hat(x, a, s), rtol=1e-12)
    np.testing.assert_allclose(c, mixture.subset(mask).eps_hat(x, a, s), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[1.0], means=[0.0, 1.0], variances=1.0), "means: expected a \\[K, d\\]"),
        (dict(weights=[1.0, -1.0], means=[[0.0], [1.0]], variances=1.0), "weights: expected 2 positive"),
        (dict(weights=[1.0, 1.0], means=[[0.0], [1.0]], variances=[1.0, 0.0]), "variances: expected a positive"),
    ],
)
def test_invalid_mixtures_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_empty_condition_is_rejected():
    mixture, _ = paper_mixture()
    with pytest.raises(ValueError, match="mask: expected at least one True"):
        mixture.score(np.zeros((1, 2)), mask=np.zeros(3, dtype=bool))


@given(st.integers(0, 2**31 - 1), st.integers(1, 999), st.integers(2, 6))
def test_many_components_grouped_by_condition_match_separate_calls(seed, t, conditions):
    """The many-component path (rows grouped by condition, conditional branch on that
    condition's components, shared-variance logits, masked exp) against ``eps_hat`` per
    branch, which evaluates every component of every row."""
    rng = np.random.default_rng(seed)
    K, d = GaussianMixture.GROUP_MIN_COMPONENTS + 6, 3
    labels = rng.integers(0, conditions, K)
    labels[:conditions] = np.arange(conditions)  # every condition has a component
    mixture = GaussianMixture(np.ones(K), rng.uniform(-1, 1, (K, d)), float(rng.choice([1e-4, 0.05])))
    rows = rng.integers(0, conditions, 11)
    mask = labels[None, :] == rows[:, None]
    a, s = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
    x = a * mixture.means[rng.integers(0, K, 11)] + s * rng.standard_normal((11, d)) * 1.5
    c, u = mixture.eps_hat_pair(x, a, s, mixture.log_weights(mask, 11))
    np.testing.assert_allclose(c, mixture.eps_hat(x, a, s, mask), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(u, mixture.eps_hat(x, a, s), rtol=1e-9, atol=1e-9)


def test_exp_of_shifted_log_weights_is_bit_for_bit_exp():
    from ssd_toolkit.toy.mixture import _exp_shifted

    rng = np.random.default_rng(0)
    for spread in (5.0, 800.0, 1e5):  # none, some, most entries below exp's underflow
        logj = -rng.uniform(0, spread, (40, 300))
        np.testing.assert_array_equal(_exp_shifted(logj.copy()), np.exp(logj))
