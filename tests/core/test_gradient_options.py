"""Gradient options against NumPy formulas written from DreamWaltz-G's and threestudio's
descriptions (batch-RMS clamp, per-sample unit norm, nan_to_num, element clamp)."""

import numpy as np
import pytest

from optional_torch import requires_torch, torch

pytestmark = requires_torch


def gradient():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((3, 4, 5, 5))
    g[1] *= 40.0  # one sample far larger: the clamp bites there
    g[2, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    g[0, 1, 1, 1] = 0.0
    return g


def ref_clip(g, scale):
    finite = np.where(np.isfinite(g), g, 0.0)
    s = scale * np.sqrt((finite**2).sum() / np.count_nonzero(finite))
    out = np.clip(g, -s, s)
    return np.where(np.isnan(out), 0.0, out)


def ref_norm(g):
    finite = np.where(np.isfinite(g), g, 0.0)
    n = np.sqrt((finite.reshape(len(g), -1) ** 2).sum(axis=1))
    return finite / np.maximum(n, 1e-12)[:, None, None, None]


def run(g, **flags):
    from ssd_toolkit.gradient_options import apply_gradient_options

    return apply_gradient_options(torch.from_numpy(g), **flags).numpy()


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_grad_latent_clip(scale):
    g = gradient()
    out = run(g, grad_latent_clip=True, grad_latent_clip_scale=scale)
    np.testing.assert_allclose(out, ref_clip(g, scale), rtol=1e-12, atol=0)
    assert np.isfinite(out).all()


def test_grad_latent_norm_unit_per_sample():
    g = gradient()
    out = run(g, grad_latent_norm=True)
    np.testing.assert_allclose(out, ref_norm(g), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.linalg.norm(out.reshape(3, -1), axis=1), 1.0, rtol=1e-12)
    assert not run(np.zeros((2, 3)), grad_latent_norm=True).any()  # a zero sample stays 0


def test_nan_to_num_and_element_clip_and_order():
    g = gradient()
    out = run(g, grad_latent_nan_to_num=True)
    assert out[2, 0, 0, 0] == 0.0 and out[2, 0, 0, 1] == np.finfo(np.float64).max
    np.testing.assert_array_equal(run(g, grad_clip=0.25)[np.isfinite(g)], np.clip(g, -0.25, 0.25)[np.isfinite(g)])
    both = run(g, grad_latent_clip=True, grad_latent_norm=True, grad_latent_nan_to_num=True)
    np.testing.assert_allclose(both, ref_norm(ref_clip(g, 1.0)), rtol=1e-12, atol=0)  # clip, then norm
    np.testing.assert_array_equal(run(g), g)  # all off: untouched


@pytest.mark.parametrize(
    ("flags", "exc", "pattern"),
    [
        (dict(grad_latent_clip=1), TypeError, r"grad_latent_clip: expected a bool, got 1"),
        (dict(grad_latent_clip_scale=0.0), ValueError, r"grad_latent_clip_scale: expected a finite number > 0, got 0.0"),
        (dict(grad_clip=-1.0), ValueError, r"grad_clip: expected a finite number > 0, got -1.0"),
    ],
)
def test_errors(flags, exc, pattern):
    from ssd_toolkit.gradient_options import GradientOptions

    with pytest.raises(exc, match=pattern):
        GradientOptions(**flags)
