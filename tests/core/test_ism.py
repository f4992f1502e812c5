"""ISM: the DDIM inversion against a per-sample loop written from LucidDreamer's description,
the oracle-denoiser property (inversion with the true noise is forward noising), the call
count and the interval annealing."""

import math

import numpy as np
import pytest

from ssd_toolkit import get_estimator, stable_diffusion_schedule

ABAR = stable_diffusion_schedule().alphas_cumprod
SHAPE = (4, 3, 5, 5)


def toy_denoiser(x, t):
    """A smooth, t-dependent stand-in for an unconditional UNet (same on NumPy rows)."""
    tt = np.asarray(t, dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.tanh(0.7 * x + 1e-3 * tt) - 0.1 * x


def reference(x0, noise, t, s, interval=200, steps=5):
    """One sample at a time, one timestep at a time, as the algorithm reads."""
    xt, target = np.empty_like(x0), np.empty_like(x0)
    for b in range(len(x0)):
        cur = max(s[b] - interval * steps, 0)
        x = math.sqrt(ABAR[cur]) * x0[b] + math.sqrt(1 - ABAR[cur]) * noise[b]
        for _ in range(steps):
            e = toy_denoiser(x[None], [cur])[0]
            nxt = min(cur + interval, s[b])
            pred_x0 = (x - math.sqrt(1 - ABAR[cur]) * e) / math.sqrt(ABAR[cur])
            x = math.sqrt(ABAR[nxt]) * pred_x0 + math.sqrt(1 - ABAR[nxt]) * e
            cur = nxt
            if cur == s[b]:
                break
        e_s = toy_denoiser(x[None], [s[b]])[0]
        pred_x0 = (x - math.sqrt(1 - ABAR[s[b]]) * e_s) / math.sqrt(ABAR[s[b]])
        xt[b] = math.sqrt(ABAR[t[b]]) * pred_x0 + math.sqrt(1 - ABAR[t[b]]) * e_s
        target[b] = e_s
    return xt, target


def inputs():
    rng = np.random.default_rng(5)
    return rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)


def test_inversion_matches_the_per_sample_loop():
    x0, noise = inputs()
    t = np.array([20, 250, 500, 980])
    est = get_estimator("ism")
    xt, target, calls = est.noisy_input(toy_denoiser, x0, noise, t, ABAR)
    ref_xt, ref_target = reference(x0, noise, t, np.maximum(t - 80, 0))
    np.testing.assert_allclose(xt, ref_xt, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(target, ref_target, rtol=1e-12, atol=1e-12)
    assert calls == math.ceil(900 / 200) + 1  # the longest inversion (s = 900) sets the batch's calls


@pytest.mark.parametrize(("t", "calls"), [(20, 2), (80, 2), (280, 2), (281, 3), (481, 4), (999, 6)])
def test_oracle_denoiser_gives_forward_noising_and_call_count(t, calls):
    """With eps = the true noise of x given x0, DDIM inversion is exact: x_t = sqrt(a) x0 +
    sqrt(1 - a) n and the target is n, so ISM reduces to SDS."""
    x0, noise = inputs()
    tt = np.full(len(x0), t)

    def oracle(x, ts):
        a = ABAR[ts].reshape(-1, 1, 1, 1)
        return (x - np.sqrt(a) * x0) / np.sqrt(1 - a)

    xt, target, n_calls = get_estimator("ism").noisy_input(oracle, x0, noise, tt, ABAR)
    a = ABAR[t]
    np.testing.assert_allclose(xt, math.sqrt(a) * x0 + math.sqrt(1 - a) * noise, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(target, noise, rtol=1e-9, atol=1e-9)
    assert n_calls == calls


def test_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    x0, noise = inputs()
    t = np.array([30, 300, 600, 900])
    est = get_estimator("ism", xs_delta_t=150, xs_inv_steps=3)

    def torch_denoiser(x, ts):
        return torch.from_numpy(toy_denoiser(x.numpy(), ts.numpy()))

    got = est.noisy_input(torch_denoiser, torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t),
                          torch.from_numpy(ABAR))
    want = est.noisy_input(toy_denoiser, x0, noise, t, ABAR)
    np.testing.assert_allclose(got[0].numpy(), want[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1].numpy(), want[1], rtol=1e-12, atol=1e-12)
    assert got[2] == want[2] == 3 + 1


def test_float_timesteps_are_refused():
    x0, noise = inputs()
    with pytest.raises(TypeError, match=r"t: expected integer timesteps \[B\] .* got float64"):
        get_estimator("ism").noisy_input(toy_denoiser, x0, noise, np.full(4, 300.0), ABAR)


def test_interval_annealing():
    est = get_estimator("ism")
    assert est.interval == 80
    assert [est.at_step(k, 5000).interval for k in (0, 1, 750, 1499, 1500, 4000)] == [100, 100, 90, 81, 80, 80]
    assert est.at_step(7, None).interval == 80


@pytest.mark.parametrize(
    ("params", "pattern"),
    [({"xs_inv_steps": 0}, r"xs_inv_steps: expected an integer >= 1, got 0"),
     ({"delta_t": 8.5}, r"delta_t: expected an integer >= 0, got 8.5")],
)
def test_errors(params, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_estimator("ism", **params)
