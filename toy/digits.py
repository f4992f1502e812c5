"""Experiment 4: an image-space toy with exact scores on real data (scikit-learn's 8x8 digits).

The 1797 bundled images (pixels 0..16 mapped to [-1, 1]) define an empirical mixture with
one isotropic component per image, variance ``COMPONENT_VARIANCE`` = 1e-4 (a pixel std of
0.01, far below the 0.125 quantisation step); diffused, it is a mixture with variance
``alpha_t^2 1e-4 + sigma_t^2``, so its score is exact. The condition y is the digit class
(the components of that class, weights renormalised); the unconditional is all images.
A 64-pixel image starts at mid-gray (0) for every class and follows Eq. 3 with each
estimator; the batch axis of the estimators is the class.
"""

from __future__ import annotations

import importlib.util
import os
import time

import numpy as np

import ssd_toolkit

from .estimator_sets import ssd_label, unscaled_ssd
from .mixture import GaussianMixture
from .optimize import distill, make_sampler
from .report import markdown_table, write_json, write_markdown

COMPONENT_VARIANCE = 1e-4
NUM_IMAGES, NUM_ESTIMATORS = 1797, 9  # the bundled images; ``digit_estimators()``'s defaults
# The size guard (``cost``): per optimised image, the conditional log weights and the
# [images x components] temporaries of one step (4 float64 arrays; measured 43 KB per image
# at --per-class 60); per image and step, the measured CPU time (9.4 s for the default
# 180 images x 1000 steps at load ~7).
BYTES_PER_ROW = 4 * 8 * NUM_IMAGES
SECONDS_PER_ROW_STEP = 5.0e-5
MEMORY_LIMIT = 2**30
SATURATION_MARGIN = 0.125  # one grey level (16 levels over [-1, 1]) beyond the data range


def _bundled_digits_file():
    """The path of scikit-learn's bundled ``digits.csv.gz`` (what ``load_digits`` reads), found
    without importing scikit-learn (its import took 2-6 s of a digits run here); None if absent."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    return None


def load_digits_arrays():
    """``(pixels [1797, 64] in 0..16, labels [1797])``: ``sklearn.datasets.load_digits``'s
    ``data`` and ``target``, read from its bundled file (or through it where the file moved)."""
    path = _bundled_digits_file()
    if path is None:
        from sklearn.datasets import load_digits  # noqa: PLC0415

        data = load_digits()
        return data.data, data.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def load_digit_mixture():
    """``(mixture, images [1797, 64] in [-1, 1], labels [1797])`` from scikit-learn's digits."""
    pixels, labels = load_digits_arrays()
    images = pixels.astype(np.float64) / 8.0 - 1.0
    return GaussianMixture(np.ones(len(images)), images, COMPONENT_VARIANCE), images, labels


def digit_estimators(cfg_scales=(7.5, 100.0), Ms=(200.0, 500.0, 800.0)):
    """SDS at each CFG scale, mode-seeking, h, SSD at each M, and the unscaled ablation at ``Ms[0]``."""
    ests = {f"SDS CFG {s:g}": ssd_toolkit.get_estimator("sds", guidance_scale=s) for s in cfg_scales}
    ests["mode-seeking"] = ssd_toolkit.get_estimator("mode-seeking")
    ests["mode-disengaging (h)"] = ssd_toolkit.get_estimator("csd")
    ests.update({ssd_label(M): ssd_toolkit.get_estimator("ssd", M=M) for M in Ms})
    ests[ssd_label(Ms[0], scaled=False)] = unscaled_ssd(Ms[0])
    return ests


def cost(per_class, steps, estimators=NUM_ESTIMATORS):
    """``(bytes, seconds)`` a digits run is expected to take: ``estimators x 10 x per_class``
    images optimised side by side against the 1797 components, ``steps`` times."""
    rows = estimators * 10 * per_class
    return rows * BYTES_PER_ROW, rows * steps * SECONDS_PER_ROW_STEP


def image_metrics(theta, images, labels, classes):
    """Per-image numbers for results ``theta`` ``[C, 64]`` targeting ``classes`` ``[C]``."""
    # [C, N] squared distances, a few results at a time ([C, N, 64] at once was 0.5 GB for 600)
    d2 = np.concatenate([np.sum((part[:, None, :] - images[None]) ** 2, axis=-1)
                         for part in np.array_split(theta, max(1, len(theta) // 16))])  # fmt: skip
    same = labels[None, :] == classes[:, None]
    means = np.stack([images[labels == c].mean(0) for c in classes])
    return {
        "dist_nearest_same_class": np.sqrt(np.where(same, d2, np.inf).min(1)),
        "dist_class_mean": np.linalg.norm(theta - means, axis=1),
        "frac_pixels_outside_range": np.mean(np.abs(theta) > 1.0 + SATURATION_MARGIN, axis=1),
        "nearest_is_right_class": labels[np.argmin(d2, axis=1)] == classes,
    }


def run(out="toy_out", seed=0, steps=1000, lr=0.01, weighting="uniform", per_class=2, progress=True):
    """Optimise ``per_class`` images per class (independent t and noise draws) with each
    estimator; write ``digits.{png,json,md}`` (the grid shows the first image of each class)."""
    from .plots import plot_digits  # noqa: PLC0415

    start = time.perf_counter()
    mixture, images, labels = load_digit_mixture()
    classes = np.repeat(np.arange(10), per_class)
    mask = labels[None, :] == classes[:, None]  # [10 per_class, 1797]
    ests = digit_estimators()
    res = distill(
        mixture,
        mask,
        ests,
        np.zeros(64),
        schedule=ssd_toolkit.stable_diffusion_schedule(),
        steps=steps,
        lr=lr,
        weighting=weighting,
        sampler=make_sampler(steps, seed=seed),
        seed=seed,
        record_every=steps,
        progress=progress and "digits",
    )
    seconds = time.perf_counter() - start
    per = {}
    for i, name in enumerate(res.names):
        m = image_metrics(res.theta[i], images, labels, classes)
        per[name] = {k: float(np.mean(v)) for k, v in m.items()} | {"per_class": m}
    # reference rows: what the metrics read for the class means and for a training image
    class_means = np.stack([images[labels == c].mean(0) for c in range(10)])
    ref_mean = image_metrics(class_means, images, labels, np.arange(10))
    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, "digits.png")
    shown = "the image" if per_class == 1 else f"the first of {per_class} images"
    title = (f"8x8 digits with exact scores: {shown} per class per estimator, from gray; {steps} steps, lr {lr:g}, "
             f"w(t) {weighting}, seed {seed}\nsaturated pixels (more than one grey level outside [-1, 1]) in colour; "
             "right: their share in the row")  # fmt: skip
    plot_digits(png, res.names, res.theta[:, ::per_class], class_means, title)
    summary = {
        "config": dict(
            steps=steps,
            lr=lr,
            per_class=per_class,
            weighting=weighting,
            seed=seed,
            start="gray (0)",
            component_variance=COMPONENT_VARIANCE,
            pixel_scale="0..16 -> [-1, 1]",
            t_range=[20, 980],
        ),
        "seconds": seconds,
        "estimators": per,
        "class_means_reference": {k: float(np.mean(v)) for k, v in ref_mean.items()},
    }
    write_json(os.path.join(out, "digits.json"), summary)
    rows = [
        (
            n,
            v["dist_nearest_same_class"],
            v["dist_class_mean"],
            v["frac_pixels_outside_range"],
            f"{v['nearest_is_right_class']:.0%}",
        )
        for n, v in per.items()
    ]
    rm = summary["class_means_reference"]
    rows.append(
        (
            "(class mean itself)",
            rm["dist_nearest_same_class"],
            0.0,
            rm["frac_pixels_outside_range"],
            f"{rm['nearest_is_right_class']:.0%}",
        )
    )
    write_markdown(
        os.path.join(out, "digits.md"),
        "8x8 digits with exact scores",
        [
            f"{per_class} images per class ({10 * per_class} in all, metrics averaged), {steps} steps, lr {lr}, "
            f"w(t) {weighting}, t ~ U{{20..980}}, start gray; component variance {COMPONENT_VARIANCE}; "
            f"{seconds:.1f} s. L2 distances in [-1, 1] pixel units (64 pixels; "
            "a per-pixel RMS is the distance / 8). Saturation counts pixels more than one grey level (0.125) outside "
            "the data range [-1, 1].",
            markdown_table(
                [
                    "estimator",
                    "dist. nearest same-class image (detail)",
                    "dist. class mean (smoothing)",
                    "pixels beyond [-1.125, 1.125] (saturation)",
                    "nearest image has the class",
                ],
                rows,
            ),
            f"![digits]({os.path.basename(png)})",
        ],
    )
    return summary
