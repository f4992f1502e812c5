"""Experiment internals: the digits metrics and mixture, the Sec. 11 statistics at a few t."""

import numpy as np
import pytest

from ssd_toolkit import stable_diffusion_schedule
from ssd_toolkit.toy.digits import image_metrics, load_digit_mixture
from ssd_toolkit.toy.score_statistics import statistics_at, statistics_mixture


@pytest.fixture(scope="module")
def digits():
    return load_digit_mixture()


def test_digit_mixture_is_the_pixel_mapped_training_set(digits):
    mixture, images, labels = digits
    assert images.shape == (1797, 64) and mixture.num_components == 1797
    assert images.min() == -1.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))


def test_image_metrics_on_known_images(digits):
    _, images, labels = digits
    classes = np.array([labels[0], labels[1]])
    means = np.stack([images[labels == c].mean(0) for c in classes])
    m = image_metrics(np.stack([images[0], means[1]]), images, labels, classes)
    assert m["dist_nearest_same_class"][0] == 0.0  # a training image of its class
    assert m["dist_class_mean"][1] == pytest.approx(0.0, abs=1e-12)
    assert m["nearest_is_right_class"][0]
    np.testing.assert_array_equal(m["frac_pixels_outside_range"], [0.0, 0.0])
    saturated = np.clip(images[:2] * 1.3, -1.3, 1.3)  # background -1 -> -1.3: beyond one grey level
    frac = image_metrics(saturated, images, labels, labels[:2])["frac_pixels_outside_range"]
    np.testing.assert_allclose(frac, np.mean(np.abs(images[:2]) * 1.3 > 1.125, axis=1))


def test_digit_conditional_score_pulls_towards_its_class(digits):
    """At small t, from a noisy copy of a training image, the class-conditional eps_hat of that
    image's class denoises towards it: Tweedie's x0_hat = (x_t - sigma eps_hat) / alpha lands
    far nearer the image than x_t / alpha."""
    mixture, images, labels = digits
    schedule = stable_diffusion_schedule()
    t = 100
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    rng = np.random.default_rng(0)
    idx = np.arange(0, 1797, 180)
    x_t = a * images[idx] + s * rng.standard_normal((len(idx), 64))
    eps_c, _ = mixture.eps_hat_pair(x_t, a, s, labels[None, :] == labels[idx][:, None])
    x0_hat = (x_t - s * eps_c) / a  # Tweedie's denoised estimate
    before = np.linalg.norm(x_t / a - images[idx], axis=1)
    after = np.linalg.norm(x0_hat - images[idx], axis=1)
    assert np.all(after < 0.01 * before)  # measured: at most 0.0012 (the posterior is on the source image)


def test_statistics_facts_at_three_timesteps():
    mixture, mask = statistics_mixture(dim=64, seed=0)
    schedule = stable_diffusion_schedule()
    rng = np.random.default_rng(1)
    x = mixture.subset(mask).sample(1, rng)[0][0]
    rows = {t: statistics_at(mixture, mask, x, t, schedule, 2048, rng) for t in (1, 487, 999)}
    # measured with 8192 noises: var(eps_hat - eps) 59.7 vs var(eps_hat) 0.07 at t = 1; c(487) 0.975
    assert rows[1]["var_minus_eps"] > 100 * rows[1]["var_eps_hat"]
    assert abs(rows[487]["c"] - 1.0) < 0.1
    for r in rows.values():
        assert r["r_min"] <= r["c"] <= r["r_max"]
        assert r["h_norm"] < 0.1 * r["eps_hat_norm"]
    assert rows[1]["eps_hat_norm"] < rows[487]["eps_hat_norm"] < rows[999]["eps_hat_norm"]


def test_digits_read_without_scikit_learn_are_its_load_digits():
    """The bundled file read directly: the published set's class counts and first image
    (sklearn.datasets.load_digits's documentation), with no scikit-learn import."""
    import sys

    from ssd_toolkit.toy.digits import load_digits_arrays

    had_sklearn = "sklearn" in sys.modules
    pixels, labels = load_digits_arrays()
    assert had_sklearn or "sklearn" not in sys.modules
    assert pixels.shape == (1797, 64) and pixels.min() == 0 and pixels.max() == 16
    np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    np.testing.assert_array_equal(pixels[0, :16], [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0])
    assert labels[:10].tolist() == list(range(10))


def test_image_metrics_take_the_distances_in_parts(digits):
    """200 results against the 1797 images: the [200, 1797, 64] differences at once took
    184 MB (0.5 GB at --per-class 60 in a digits run); a few results at a time, with the
    nearest-image distance and class of a direct per-result computation."""
    import tracemalloc

    _, images, labels = digits
    rng = np.random.default_rng(3)
    theta = images[rng.integers(0, len(images), 200)] + rng.normal(0, 0.3, (200, 64))
    classes = rng.integers(0, 10, 200)
    tracemalloc.start()
    try:
        m = image_metrics(theta, images, labels, classes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    for i in range(0, 200, 7):
        d = np.sqrt(np.sum((images - theta[i]) ** 2, axis=1))
        assert m["dist_nearest_same_class"][i] == pytest.approx(d[labels == classes[i]].min(), rel=1e-12)
        assert m["nearest_is_right_class"][i] == (labels[np.argmin(d)] == classes[i])
