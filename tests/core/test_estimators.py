"""Every estimator against a literal per-sample NumPy formula, NumPy and torch inputs."""

import numpy as np
import pytest

from ssd_toolkit import get_estimator, list_estimators
from ssd_toolkit.estimators import ESTIMATORS
import ssd_inputs
from optional_torch import requires_torch, torch
from tolerances import assert_close_to_reference, to_numpy64


SHAPE = (5, 3, 4, 7)
T = np.array([0, 150, 200, 201, 900])
CASES = [("numpy", "float64"), ("numpy", "float32"), ("numpy", "float16")] + [
    pytest.param("torch", dtype, marks=requires_torch) for dtype in ("float64", "float32", "float16", "bfloat16")
]


def make_inputs(library, dtype, seed=0):
    """cond (correlated with the noise, as in practice), uncond, noise, negative."""
    return ssd_inputs.make_inputs(SHAPE, dtype, library, seed, count=4, cond_noise_mix=(0.5, 0.6))


def rows(x):
    return to_numpy64(x).reshape(SHAPE[0], -1)


def ref_sds(c, u, n, t, s, cfg, vr):
    base = u if cfg == "standard" else c
    e = base + s * (c - u)
    return e - n if vr else e


def ref_nfsd(c, u, n, t, neg, s=7.5, thr=200):
    out = np.empty_like(c)
    for b in range(c.shape[0]):
        delta_d = u[b] if t[b] < thr else u[b] - neg[b]
        out[b] = delta_d + s * (c[b] - u[b])
    return out


def ref_ssd_family(c, u, n, t, M, variant):
    """Algorithm 1 with the Fig. 6 changes, one sample at a time."""
    out = np.empty_like(c)
    for b in range(c.shape[0]):
        cb, nb = c[b].ravel(), n[b].ravel()
        h = cb - u[b].ravel()
        if t[b] > M:
            out[b] = h.reshape(c.shape[1:])
            continue
        r = cb @ nb / (nb @ nb)
        d = {"ssd": cb - r * nb, "ssd-no-rescale": cb - r * nb, "ssd-no-vr": cb, "ssd-sds-vr": cb - nb}[variant]
        E = d if variant == "ssd-no-rescale" else np.linalg.norm(h) / np.linalg.norm(d) * d
        out[b] = E.reshape(c.shape[1:])
    return out


REFERENCES = {
    "sds": (dict(guidance_scale=7.5), lambda c, u, n, t, neg: ref_sds(c, u, n, t, 7.5, "standard", True)),
    "mode-seeking": ({}, lambda c, u, n, t, neg: c),
    "csd": (dict(scale=2.0), lambda c, u, n, t, neg: 2.0 * (c - u)),
    "nfsd": ({}, lambda c, u, n, t, neg: ref_nfsd(c, u, n, t, neg)),
    "ssd": (dict(M=200), lambda c, u, n, t, neg: ref_ssd_family(c, u, n, t, 200, "ssd")),
    "ssd-no-vr": (dict(M=200), lambda c, u, n, t, neg: ref_ssd_family(c, u, n, t, 200, "ssd-no-vr")),
    "ssd-sds-vr": (dict(M=200), lambda c, u, n, t, neg: ref_ssd_family(c, u, n, t, 200, "ssd-sds-vr")),
    "ssd-no-rescale": (dict(M=200), lambda c, u, n, t, neg: ref_ssd_family(c, u, n, t, 200, "ssd-no-rescale")),
    # DreamWaltz-G's csd at p = 0.3: c - (p/2) u - (1 - p/2) neg
    "csd-annealed": (dict(progress=0.3), lambda c, u, n, t, neg: c - 0.15 * u - 0.85 * neg),
    # SDS-Bridge's stage 2: scale (target - source); the source prediction is eps_negative
    "sds-bridge": (dict(scale=2.0), lambda c, u, n, t, neg: 2.0 * (c - neg)),
    # ISM at x_t, with its target eps_uncond(x_s, s) in the noise slot: CFG minus the target
    "ism": ({}, lambda c, u, n, t, neg: u + 7.5 * (c - u) - n),
}


def test_every_estimator_has_a_reference_and_declares_branches():
    assert set(list_estimators()) == set(REFERENCES)
    for name in list_estimators():
        est = get_estimator(name)
        assert est.name == name
        assert set(est.branches) <= {"cond", "uncond", "negative"} and "cond" in est.branches
    assert get_estimator("nfsd").branches == ("cond", "uncond", "negative")
    assert get_estimator("ssd").branches == ("cond", "uncond")
    assert get_estimator("mode-seeking").branches == ("cond",)


@pytest.mark.parametrize(("library", "dtype"), CASES)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_numpy_formula(name, library, dtype):
    params, ref = REFERENCES[name]
    c, u, n, neg = make_inputs(library, dtype)
    t = T if library == "numpy" else torch.from_numpy(T)
    E, stats = get_estimator(name, **params)(c, u, n, t, eps_negative=neg, return_stats=True)
    assert type(E) is type(c) and E.dtype == c.dtype and tuple(E.shape) == SHAPE
    # The reference sees the inputs as the estimator does (already rounded to dtype).
    expected = ref(*(to_numpy64(a) for a in (c, u, n)), T, to_numpy64(neg))
    assert_close_to_reference(E, expected, dtype, what=name)
    np.testing.assert_allclose(to_numpy64(stats["grad_norm"]), np.linalg.norm(expected.reshape(5, -1), axis=1), rtol=1e-5 if dtype != "float64" else 1e-10)


@requires_torch
@pytest.mark.parametrize("name", ["sds", "csd", "nfsd", "mode-seeking"])
def test_half_inputs_computed_in_float32(name):
    c, u, n, neg = make_inputs("torch", "float16")
    est = get_estimator(name)
    E = est(c, u, n, torch.from_numpy(T), eps_negative=neg)
    E32 = est(c.float(), u.float(), n.float(), torch.from_numpy(T), eps_negative=neg.float())
    assert E.dtype == torch.float16
    assert torch.equal(E, E32.half())  # one rounding, from the float32 result


@pytest.mark.parametrize("s", [0.0, 7.5, 100.0])
@pytest.mark.parametrize("vr", [True, False])
def test_cfg_conventions_scale_s_vs_s_plus_one(s, vr):
    c, u, n, _ = make_inputs("numpy", "float64")
    three = get_estimator("sds", guidance_scale=s, cfg="threestudio", variance_reduction=vr)(c, u, n, T)
    standard = get_estimator("sds", guidance_scale=s + 1, cfg="standard", variance_reduction=vr)(c, u, n, T)
    np.testing.assert_allclose(three, standard, rtol=1e-12, atol=1e-12 * s)
    np.testing.assert_allclose(standard, ref_sds(c, u, n, T, s + 1, "standard", vr), rtol=1e-13, atol=1e-13)


def test_sds_variance_reduction_is_minus_noise():
    c, u, n, _ = make_inputs("numpy", "float64")
    on = get_estimator("sds", guidance_scale=3.0)(c, u, n, T)
    off = get_estimator("sds", guidance_scale=3.0, variance_reduction=False)(c, u, n, T)
    np.testing.assert_allclose(off - on, n, rtol=1e-12, atol=1e-12)


def test_nfsd_threshold_per_sample():
    c, u, n, neg = make_inputs("numpy", "float64")
    E = get_estimator("nfsd", guidance_scale=0.0, t_threshold=200)(c, u, n, T, eps_negative=neg)
    np.testing.assert_array_equal(E[:2], u[:2])  # t = 0, 150 < 200: eps_u
    np.testing.assert_allclose(E[2:], u[2:] - neg[2:], rtol=0, atol=0)  # t = 200, 201, 900


def test_ssd_ablations_agree_with_ssd_where_they_should():
    c, u, n, _ = make_inputs("numpy", "float64")
    ssd = get_estimator("ssd", M=200)(c, u, n, T)
    for name in ("ssd-no-vr", "ssd-sds-vr", "ssd-no-rescale"):
        E = get_estimator(name, M=200)(c, u, n, T)
        np.testing.assert_allclose(E[3:], ssd[3:], rtol=1e-12, atol=0)  # t > M: h, untouched
        assert not np.allclose(E[:3], ssd[:3])  # t <= M: the ablated design
    # Rescaling off then on recovers SSD.
    raw, stats = get_estimator("ssd-no-rescale", M=200)(c, u, n, T, return_stats=True)
    h_norm = np.linalg.norm((c - u).reshape(5, -1), axis=1)
    rescaled = raw[:3] * (h_norm[:3] / stats["eps_tilde_norm"][:3])[:, None, None, None]
    np.testing.assert_allclose(rescaled, ssd[:3], rtol=1e-12)


def test_ssd_ablation_stats_and_degenerate_sample():
    c, u, n, _ = make_inputs("numpy", "float64")
    c[0] = n[0]  # eps_cond == noise: eps_cond - noise = 0, eps_tilde = 0
    for name in ("ssd-sds-vr", "ssd"):
        E, stats = get_estimator(name, M=200)(c, u, n, T, return_stats=True)
        np.testing.assert_array_equal(E[0], 0.0)
        assert stats["scale"][0] == 0.0 and stats["grad_norm"][0] == 0.0
        np.testing.assert_array_equal(stats["mode_seeking"], T <= 200)
    _, stats = get_estimator("ssd-no-vr")(c, u, n, T, return_stats=True)
    np.testing.assert_array_equal(stats["r"], 0.0)
    np.testing.assert_allclose(stats["eps_tilde_norm"], stats["eps_cond_norm"], rtol=0)


@requires_torch
def test_torch_stats_are_float64_on_the_input_device():
    c, u, n, _ = make_inputs("torch", "float32")
    for name in ("ssd", "ssd-no-vr", "sds"):
        _, stats = get_estimator(name)(c, u, n, torch.from_numpy(T), return_stats=True)
        assert stats["grad_norm"].dtype == torch.float64 and stats["grad_norm"].device == c.device
        if "mode_seeking" in stats:
            assert stats["mode_seeking"].dtype == torch.bool


def test_scalar_t_broadcasts():
    c, u, n, neg = make_inputs("numpy", "float64")
    np.testing.assert_array_equal(
        get_estimator("nfsd")(c, u, n, 500, eps_negative=neg), get_estimator("nfsd")(c, u, n, np.full(5, 500), eps_negative=neg)
    )


@pytest.mark.parametrize(
    ("make", "exc", "pattern"),
    [
        (lambda: get_estimator("nope"), ValueError, r"name: expected one of \[.*'ssd'.*\], got 'nope'"),
        (lambda: get_estimator("ssd", m=200), TypeError, r"unexpected keyword argument 'm'"),
        (lambda: get_estimator("ssd", M=float("inf")), ValueError, r"M: expected a finite real scalar, got inf"),
        (lambda: get_estimator("ssd", backend="gpu"), ValueError, r"backend: expected one of .*got 'gpu'"),
        (lambda: get_estimator("sds", cfg="diffusers"), ValueError, r"cfg: expected one of \('standard', 'threestudio'\), got 'diffusers'"),
        (lambda: get_estimator("sds", guidance_scale="7.5"), TypeError, r"guidance_scale: expected a finite real number, got str '7.5'"),
        (lambda: get_estimator("nfsd", t_threshold=float("nan")), ValueError, r"t_threshold: expected a finite real number, got nan"),
        (lambda: get_estimator("ssd-no-vr", M=None), TypeError, r"M: expected a finite real scalar"),
    ],
)
def test_construction_errors(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_call_errors():
    c, u, n, neg = make_inputs("numpy", "float32")
    with pytest.raises(ValueError, match=r"eps_negative: expected the negative-prompt branch .* got None"):
        get_estimator("nfsd")(c, u, n, T)
    with pytest.raises(ValueError, match=r"eps_negative: expected shape \[5, 3, 4, 7\]"):
        get_estimator("nfsd")(c, u, n, T, eps_negative=neg[:2])
    with pytest.raises(ValueError, match=r"t: expected a scalar or a vector of length B=5, got shape \[3\]"):
        get_estimator("sds")(c, u, n, T[:3])
    assert get_estimator("csd")(c, u.astype(np.float64), n, T).dtype == np.float64  # mixed dtypes promote
    if torch is not None:
        with pytest.raises(TypeError, match=r"expected arrays from one library"):
            get_estimator("ssd-no-rescale")(c, torch.from_numpy(u), n, T)
    for name in ESTIMATORS:
        with pytest.raises(ValueError, match=r"t: expected finite timesteps"):
            get_estimator(name)(c, u, n, np.array([1, 2, np.nan, 4, 5]), eps_negative=neg)
