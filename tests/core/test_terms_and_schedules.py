"""Term-level API (Eqs. 6-8) and the noise schedule."""

import numpy as np
import pytest

import ssd_toolkit
from ssd_toolkit import schedules


def test_projection_ratio_and_variance_reduced(rng):
    c, n = rng.standard_normal((2, 5, 3, 4))
    r = ssd_toolkit.projection_ratio(c, n)
    c2, n2 = c.reshape(5, -1), n.reshape(5, -1)
    np.testing.assert_allclose(r, [np.dot(a, b) / np.dot(b, b) for a, b in zip(c2, n2)])
    et = ssd_toolkit.variance_reduced(c, n)
    assert et.shape == c.shape
    np.testing.assert_allclose((et.reshape(5, -1) * n2).sum(1), 0, atol=1e-12)
    # r minimises ||c - k n|| over k (Sec. 8)
    for k in (0.9, 1.1):
        worse = np.linalg.norm(c2 - (k * r)[:, None] * n2, axis=1)
        assert np.all(worse >= np.linalg.norm(et.reshape(5, -1), axis=1))


def test_terms_on_torch_keep_type_and_dtype():
    torch = pytest.importorskip("torch")
    c, u, n = (torch.randn(3, 8, dtype=torch.float16) for _ in range(3))
    assert ssd_toolkit.variance_reduced(c, n).dtype == torch.float16
    assert ssd_toolkit.projection_ratio(c, n).dtype == torch.float64
    assert torch.equal(ssd_toolkit.mode_disengaging(c, u), c - u)
    n[1] = 0
    assert ssd_toolkit.projection_ratio(c, n)[1] == 0


def test_optimal_coefficient_recovers_the_linear_part(rng):
    """eps_hat = a * eps + (something independent of eps): c = a (Eq. 8)."""
    K, d, a = 20000, 16, 0.37
    eps = rng.standard_normal((K, d))
    eps_hat = a * eps + rng.standard_normal((K, d)) * 2.0 + 5.0
    c = ssd_toolkit.optimal_coefficient(eps_hat, eps)
    # standard error of the cross-covariance trace / d is about 2 / sqrt(K d)
    assert abs(c - a) < 5 * 2.0 / np.sqrt(K * d)
    assert abs(ssd_toolkit.optimal_coefficient(eps_hat, eps, assume_standard_noise=False) - a) < 0.01
    with pytest.raises(ValueError, match="K >= 2"):
        ssd_toolkit.optimal_coefficient(eps_hat[:1], eps[:1])


def test_stable_diffusion_schedule_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    ours = ssd_toolkit.stable_diffusion_schedule()
    np.testing.assert_allclose(ours.alphas_cumprod, ref.double().numpy(), rtol=1e-5)
    assert ours.num_timesteps == 1000
    assert ours.alpha_bar(0) == pytest.approx(0.99915) and ours.alpha_bar(999) == pytest.approx(0.00466, abs=1e-5)
    t = np.array([0, 350, 999])
    np.testing.assert_allclose(ours.alpha(t) ** 2 + ours.sigma(t) ** 2, 1.0)


def test_schedule_rejects_out_of_range_timesteps():
    with pytest.raises(ValueError, match=r"t: expected timesteps in \[0, 999\], got min -1"):
        schedules.stable_diffusion_schedule().alpha([-1, 5])


def test_schedule_rejects_non_integer_timesteps():
    """A schedule is indexed by integer timesteps: 0.5 is an error, not rounded."""
    with pytest.raises(ValueError, match="t: expected integer-valued timesteps, got 0.5"):
        schedules.stable_diffusion_schedule().alpha([0.5, 5])
    np.testing.assert_array_equal(schedules.stable_diffusion_schedule().alpha(np.array([3.0, 5.0])),
                                  schedules.stable_diffusion_schedule().alpha([3, 5]))
