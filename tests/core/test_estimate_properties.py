"""Properties of the SSD estimator (hypothesis), checked on every available host backend."""

import pathlib
import re
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ssd_toolkit
from optional_torch import torch

BACKENDS = ["reference"] + (["torch"] if torch else []) + (["compiled"] if ssd_toolkit.backends()["cpu"] else [])

values = st.floats(-100, 100, allow_nan=False, allow_subnormal=False, width=64)


@st.composite
def batches(draw, dtype=np.float64, min_n=2):
    B = draw(st.integers(1, 6))
    N = draw(st.integers(min_n, 40))
    arr = lambda: draw(hnp.arrays(dtype, (B, N), elements=values.map(lambda v: float(dtype(v)))))  # noqa: E731
    c, u, n = arr(), arr(), arr()
    t = draw(hnp.arrays(np.int64, B, elements=st.integers(0, 1000)))
    M = draw(st.integers(0, 1000))
    return c, u, n, t, M


def run(backend, c, u, n, t, M, **kw):
    if backend == "torch":
        c, u, n = (torch.from_numpy(np.ascontiguousarray(a)) for a in (c, u, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = ssd_toolkit.estimate(c, u, n, t, M, backend=backend, **kw)
    if kw.get("return_stats"):
        E, stats = out
        return np.asarray(E), {k: np.asarray(v) for k, v in stats.items()}
    return np.asarray(out)


def well_conditioned(c, n):
    """Samples whose eps_tilde is far from the degenerate threshold and whose noise is non-zero."""
    nn = (n * n).sum(1)
    cc = (c * c).sum(1)
    et2 = cc - (c * n).sum(1) ** 2 / np.where(nn > 0, nn, 1)
    return bool(np.all(nn > 1e-6) and np.all(et2 > 1e-6 * cc) and np.all(cc > 1e-6))


@pytest.mark.parametrize("backend", BACKENDS)
@given(batches())
def test_rescaled_branch_is_orthogonal_to_noise_with_norm_of_h(backend, data):
    c, u, n, t, _ = data
    assume(well_conditioned(c, n))
    E = run(backend, c, u, n, t, M=1000)
    h_norm = np.linalg.norm(c - u, axis=1)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), h_norm, rtol=1e-9, atol=1e-12)
    cos = (E * n).sum(1) / (np.linalg.norm(n, axis=1) * np.maximum(np.linalg.norm(E, axis=1), 1e-300))
    assert np.all(np.abs(cos) < 1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@given(batches(), st.sampled_from([np.float64, np.float32]))
def test_h_branch_is_exactly_h(backend, data, dtype):
    c, u, n, t, _ = (a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in data)
    E = run(backend, c, u, n, np.full(len(c), 1000), M=999)
    np.testing.assert_array_equal(E, c - u)


@pytest.mark.parametrize("backend", BACKENDS)
@given(batches())
def test_batch_equals_stacked_single_samples(backend, data):
    c, u, n, t, M = data
    E = run(backend, c, u, n, t, M)
    singles = np.concatenate([run(backend, c[b : b + 1], u[b : b + 1], n[b : b + 1], t[b : b + 1], M) for b in range(len(c))])
    np.testing.assert_array_equal(E, singles)


@pytest.mark.parametrize("backend", BACKENDS)
@given(batches(), st.randoms(use_true_random=False))
def test_permuting_the_batch_permutes_the_output(backend, data, random):
    c, u, n, t, M = data
    perm = list(range(len(c)))
    random.shuffle(perm)
    E = run(backend, c, u, n, t, M)
    Ep = run(backend, c[perm], u[perm], n[perm], t[perm], M)
    np.testing.assert_array_equal(Ep, E[perm])


@pytest.mark.parametrize("backend", BACKENDS)
@given(batches(), st.floats(0.01, 100))
def test_scaling_predictions_scales_the_estimate(backend, data, k):
    c, u, n, t, M = data
    assume(well_conditioned(c, n))
    E = run(backend, c, u, n, t, M)
    Ek = run(backend, k * c, k * u, n, t, M)
    np.testing.assert_allclose(Ek, k * E, rtol=1e-9, atol=1e-9 * k * np.abs(E).max(initial=0))


@pytest.mark.parametrize("backend", BACKENDS)
@given(batches(), st.floats(0.01, 100))
def test_scaling_the_noise_leaves_the_estimate_unchanged(backend, data, k):
    c, u, n, t, M = data
    assume(well_conditioned(c, n))
    E = run(backend, c, u, n, t, M)
    Ek = run(backend, c, u, k * n, t, M)
    np.testing.assert_allclose(Ek, E, rtol=1e-9, atol=1e-9 * np.abs(E).max(initial=0))


@pytest.mark.parametrize("backend", BACKENDS)
@given(batches())
def test_stats_describe_the_output(backend, data):
    c, u, n, t, M = data
    E, stats = run(backend, c, u, n, t, M, return_stats=True)
    np.testing.assert_array_equal(stats["mode_seeking"], t <= M)
    np.testing.assert_allclose(stats["h_norm"], np.linalg.norm(c - u, axis=1), rtol=1e-12)
    rescaled = stats["mode_seeking"] & (stats["scale"] > 0)
    # ||E|| = scale ||c - r n|| with scale from ||eps_tilde||^2 = ||c||^2 - r <c, n>: a
    # difference of sums, whose relative error grows like ||c||^2 / ||eps_tilde||^2 (the
    # condition-number-aware rule of docs/kernels.md).
    cond = stats["eps_cond_norm"][rescaled] ** 2 / stats["eps_tilde_norm"][rescaled] ** 2
    err = np.abs(np.linalg.norm(E[rescaled], axis=1) - stats["h_norm"][rescaled])
    assert np.all(err <= (1e-12 + 1e-14 * cond) * stats["h_norm"][rescaled]), (err, cond)


def _assert_scaled(got, ref, factor, rtol, what):
    """got == factor * ref elementwise to rtol (got finite, nothing flushed to zero)."""
    got = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got)), f"{what}: non-finite values at scale {factor:g}"
    np.testing.assert_allclose(got / factor, ref, rtol=rtol, atol=rtol * np.abs(ref).max(), err_msg=what)


unit_scale = st.one_of(st.just(0.0), st.floats(0.5, 2.0), st.floats(-2.0, -0.5))


@st.composite
def unit_scale_batches(draw):
    """c, h, n with elements 0 or of magnitude 0.5..2 (so every sum of squares of the
    scaled data stays a normal float64), u = c - h."""
    B, N = draw(st.integers(1, 4)), draw(st.integers(2, 24))
    c, h, n = (draw(hnp.arrays(np.float64, (B, N), elements=unit_scale)) for _ in range(3))
    t = draw(hnp.arrays(np.int64, B, elements=st.integers(0, 1000)))
    return c, c - h, n, t, draw(st.integers(0, 1000))


@pytest.mark.parametrize("backend", BACKENDS)
@given(unit_scale_batches(), st.integers(-150, 150), st.integers(-150, 150))
def test_float64_estimate_is_scale_equivariant_from_1e_minus150_to_1e150(backend, data, exp_pred, exp_noise):
    """E(s c, s u, k n) = s E(c, u, n) and r scales by s / k, for s, k in 1e-150..1e150:
    ||eps_tilde||^2 must be formed without squaring <c, n> (which overflows from |x| ~ 1e77
    and underflows below ~1e-77)."""
    c, u, n, t, M = data
    assume(well_conditioned(c, n) and abs(exp_pred - exp_noise) <= 150)
    s, k = 10.0**exp_pred, 10.0**exp_noise
    E, stats = run(backend, c, u, n, t, M, return_stats=True)
    E_s, stats_s = run(backend, c * s, u * s, n * k, t, M, return_stats=True)
    _assert_scaled(E_s, E, s, 1e-9, "E")
    _assert_scaled(stats_s["r"], stats["r"], s / k, 1e-9, "r")
    for name in ("h_norm", "eps_tilde_norm", "eps_cond_norm"):
        _assert_scaled(stats_s[name], stats[name], s, 1e-9, name)
    _assert_scaled(stats_s["scale"], stats["scale"], 1.0, 1e-9, "scale")


def _cxx_constants(name_pattern):
    """Every ``<name> = <number>`` constant matching name_pattern in csrc/ (any file)."""
    root = pathlib.Path(__file__).resolve().parents[2] / "csrc"
    pattern = re.compile(r"\b(\w*" + name_pattern + r"\w*)\s*=\s*([0-9][0-9.]*(?:[eE][-+]?[0-9]+)?)", re.IGNORECASE)
    found = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in (".h", ".hpp", ".cuh", ".cpp", ".cu"):
            for match in pattern.finditer(path.read_text()):
                found[f"{path.relative_to(root)}:{match.group(1)}"] = float(match.group(2))
    return found


def test_degeneracy_threshold_is_one_constant_shared_with_the_kernels():
    from ssd_toolkit.engine import maths as _ssd_math

    found = _cxx_constants("collinear")
    assert found, "no collinearity threshold constant found under csrc/"
    assert all(value == _ssd_math.COLLINEAR_RTOL2 for value in found.values()), found
