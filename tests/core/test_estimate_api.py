"""``ssd_toolkit.estimate``: semantics against a literal Algorithm 1, edge cases, errors.

Every test runs on each available host backend (the NumPy reference, the compiled CPU
kernel when built, PyTorch eager for torch inputs), so a kernel inherits the whole suite.
"""

import math
import warnings

import numpy as np
import pytest

import ssd_toolkit
from optional_torch import requires_torch, torch, torch_param
from ssd_inputs import make_inputs
from tolerances import assert_close_to_reference, to_numpy64

BACKENDS = ["reference"] + (["torch"] if torch else []) + (["compiled"] if ssd_toolkit.backends()["cpu"] else [])
LIBRARIES = ["numpy", torch_param("torch")]


def algorithm1(c, u, n, t, M):
    """Algorithm 1 written literally, one sample at a time, in float64 (independent oracle)."""
    c, u, n = (np.asarray(a, dtype=np.float64) for a in (c, u, n))
    out = np.empty_like(c)
    with np.errstate(all="ignore"):  # degenerate samples give inf/NaN here; the tests say what they expect
        for b in range(c.shape[0]):
            out[b] = _algorithm1_sample(c[b], u[b], n[b], t[b] if np.ndim(t) else t, M)
    return out


def _algorithm1_sample(c, u, n, tb, M):
    h = c - u
    if tb > M:
        return h
    r = np.sum(c * n) / np.sum(n**2)
    eps_tilde = c - r * n
    return np.linalg.norm(h) / np.linalg.norm(eps_tilde) * eps_tilde


def run(backend, c, u, n, t, M, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ssd_toolkit.estimate(c, u, n, t, M, backend=backend, **kw)


def backends_for(library):
    return [b for b in BACKENDS if library == "torch" or b != "torch"]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_matches_algorithm1(library, dtype):
    if dtype == "bfloat16" and library == "numpy":
        pytest.skip("NumPy has no bfloat16")
    c, u, n = make_inputs((6, 4, 5, 3), dtype, library)
    t = [10, 999, 200, 201, 0, 500]
    ref = algorithm1(*(to_numpy64(x) for x in (c, u, n)), t, 200)
    for backend in backends_for(library):
        E = run(backend, c, u, n, t, 200)
        assert type(E) is type(c) and tuple(E.shape) == tuple(c.shape)
        assert str(E.dtype).replace("torch.", "") == dtype
        assert_close_to_reference(E, ref, dtype, what=f"{backend}/{library}")


def test_branch_choice_includes_equality():
    c, u, n = make_inputs((3, 8))
    for backend in backends_for("numpy"):
        E, stats = run(backend, c, u, n, np.array([199.0, 200.0, 200.5]), 200.0, return_stats=True)
        assert stats["mode_seeking"].tolist() == [True, True, False]
        np.testing.assert_array_equal(E[2], c[2] - u[2])


def test_stats_are_the_per_sample_quantities():
    c, u, n = make_inputs((5, 7, 3), "float64")
    _, stats = run("reference", c, u, n, 0, 1000, return_stats=True)
    c2, u2, n2 = (a.reshape(5, -1) for a in (c, u, n))
    np.testing.assert_allclose(stats["r"], (c2 * n2).sum(1) / (n2 * n2).sum(1))
    np.testing.assert_allclose(stats["h_norm"], np.linalg.norm(c2 - u2, axis=1))
    np.testing.assert_allclose(stats["eps_cond_norm"], np.linalg.norm(c2, axis=1))
    np.testing.assert_allclose(stats["noise_norm"], np.linalg.norm(n2, axis=1))
    et = c2 - stats["r"][:, None] * n2
    np.testing.assert_allclose(stats["eps_tilde_norm"], np.linalg.norm(et, axis=1))
    np.testing.assert_allclose(stats["scale"], stats["h_norm"] / stats["eps_tilde_norm"])
    for backend in BACKENDS[1:]:
        lib = "torch" if backend == "torch" else "numpy"
        args = [torch.from_numpy(a) for a in (c, u, n)] if lib == "torch" else (c, u, n)
        _, other = run(backend, *args, 0, 1000, return_stats=True)
        for k in ("r", "h_norm", "eps_tilde_norm", "eps_cond_norm", "noise_norm", "scale"):
            np.testing.assert_allclose(np.asarray(other[k]), stats[k], rtol=1e-12, err_msg=f"{backend} {k}")


@requires_torch
def test_torch_stats_come_back_as_tensors():
    c, u, n = make_inputs((2, 3), "float32", "torch")
    for backend in backends_for("torch"):
        _, stats = run(backend, c, u, n, torch.tensor([1, 900]), 500, return_stats=True)
        assert all(isinstance(v, torch.Tensor) for v in stats.values())
        assert stats["r"].dtype == torch.float64 and stats["mode_seeking"].dtype == torch.bool
        assert stats["mode_seeking"].tolist() == [True, False]


def test_sdxl_fp16_latent_does_not_overflow():
    """4x128x128 fp16: sum of squares ~65k exceeds fp16's max (65504)."""
    c, u, n = make_inputs((2, 4, 128, 128), "float16", seed=3)
    ref = algorithm1(c, u, n, [0, 0], 500)
    for backend in backends_for("numpy"):
        E = run(backend, c, u, n, 0, 500)
        assert np.all(np.isfinite(np.asarray(E, dtype=np.float64)))
        assert_close_to_reference(E, ref, "float16", what=backend)


# ---- edge cases (docs/api.md "Edge cases") ----

def test_zero_noise_gives_r_zero():
    c, u, n = make_inputs((2, 6), "float64")
    n[1] = 0
    for backend in backends_for("numpy"):
        E, stats = run(backend, c, u, n, 0, 10, return_stats=True)
        assert stats["r"][1] == 0
        expected = np.linalg.norm(c[1] - u[1]) / np.linalg.norm(c[1]) * c[1]
        np.testing.assert_allclose(E[1], expected, rtol=1e-12)
        np.testing.assert_allclose(E[0], algorithm1(c, u, n, 0, 10)[0], rtol=1e-12)


def test_collinear_eps_cond_gives_zero():
    c, u, n = make_inputs((3, 50), "float64")
    c[0] = -2.5 * n[0]
    c[2] = 0.0
    for backend in backends_for("numpy"):
        E, stats = run(backend, c, u, n, 0, 10, return_stats=True)
        assert np.all(E[0] == 0) and np.all(E[2] == 0)
        assert stats["scale"][0] == 0 and stats["scale"][2] == 0
        np.testing.assert_allclose(E[1], algorithm1(c, u, n, 0, 10)[1], rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_non_finite_sample_is_isolated(bad, which):
    arrs = make_inputs((4, 3, 5), "float32")
    arrs[which][1, 2, 3] = bad
    t = np.array([0, 0, 0, 900])
    arrs_b = make_inputs((4, 3, 5), "float32")
    arrs_b[which][3, 0, 0] = bad
    for backend in backends_for("numpy"):
        E = run(backend, *arrs, t, 100)
        assert np.all(np.isnan(E[1])), "the whole rescaled sample becomes NaN"
        clean = algorithm1(*arrs, t, 100)
        for b in (0, 2, 3):
            assert_close_to_reference(E[b : b + 1], clean[b : b + 1], "float32", what=f"{backend} sample {b}")
        # in the h branch only the non-finite elements of h are non-finite
        Eb = run(backend, *arrs_b, t, 100)
        h = arrs_b[0][3] - arrs_b[1][3]
        np.testing.assert_array_equal(np.isfinite(Eb[3]), np.isfinite(h))


def test_empty_batch():
    c, u, n = make_inputs((0, 4, 8, 8))
    for backend in backends_for("numpy"):
        E, stats = run(backend, c, u, n, np.zeros(0), 10, return_stats=True)
        assert E.shape == (0, 4, 8, 8) and E.dtype == np.float32
        assert all(v.shape == (0,) for v in stats.values())


@pytest.mark.parametrize("shape", [(5,), (5, 1), (5, 1, 1)])
def test_one_element_samples(shape):
    c, u, n = make_inputs(shape, "float64")
    n.reshape(5)[3] = 0
    for backend in backends_for("numpy"):
        with pytest.warns(UserWarning, match=r"eps_cond: shape .* has one element per sample; dimension 0 is the batch"):
            E, stats = run(backend, c, u, n, np.array([0, 0, 0, 0, 999]), 10, return_stats=True)
        flat = E.reshape(5)
        assert np.all(flat[:3] == 0), "one element: eps_tilde = 0 when the noise is non-zero"
        hb = abs(c.reshape(5)[3] - u.reshape(5)[3])
        assert math.isclose(flat[3], math.copysign(hb, c.reshape(5)[3]), rel_tol=1e-12)
        assert flat[4] == c.reshape(5)[4] - u.reshape(5)[4]


def test_non_contiguous_inputs():
    base = make_inputs((4, 6, 10), "float32")
    views = [a[:, ::2, 1:] for a in base]
    assert not views[0].flags["C_CONTIGUOUS"]
    ref = algorithm1(*views, [0, 500, 0, 500], 200)
    for backend in backends_for("numpy"):
        assert_close_to_reference(run(backend, *views, [0, 500, 0, 500], 200), ref, "float32", what=backend)
    if torch is None:
        return
    tviews = [torch.from_numpy(a).transpose(1, 2) for a in base]
    tref = algorithm1(*[v.numpy() for v in tviews], [0, 500, 0, 500], 200)
    for backend in backends_for("torch"):
        assert_close_to_reference(run(backend, *tviews, [0, 500, 0, 500], 200), tref, "float32", what=backend)


def test_inputs_are_not_modified():
    arrs = make_inputs((3, 16))
    copies = [a.copy() for a in arrs]
    for backend in backends_for("numpy"):
        run(backend, *arrs, 0, 100)
        for a, b in zip(arrs, copies):
            np.testing.assert_array_equal(a, b)


def test_fallback_warns_once_without_compiled_module(monkeypatch):
    from ssd_toolkit.engine import extension as _extension

    monkeypatch.setattr(_extension, "cpu_kernel", lambda: None)
    monkeypatch.setitem(_extension._state, "warned", False)
    c, u, n = make_inputs((2, 3))
    with pytest.warns(RuntimeWarning, match="NumPy reference"):
        ssd_toolkit.estimate(c, u, n, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ssd_toolkit.estimate(c, u, n, 0, 1)


def test_backends_report():
    report = ssd_toolkit.backends()
    assert set(report) == {"reference", "cpu", "cuda", "cuda_device", "reason", "cuda_device_reason", "jax_ffi", "torch_op"}
    assert report["reference"] is True
    # A usable device needs the kernel compiled in; every False says why.
    assert not report["cuda_device"] or report["cuda"]
    assert report["cuda_device"] == (report["cuda_device_reason"] is None)
    assert torch is None or report["cuda_device"] == torch.cuda.is_available() or not report["cuda"]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_every_byte_order_gives_the_native_result(dtype, order):
    """Big-endian NumPy input is converted at the boundary (the kernel reads native order)."""
    native = make_inputs((3, 2, 5), dtype)
    c, u, n = (a.astype(np.dtype(dtype).newbyteorder(order)) for a in native)
    t = np.array([0, 999, 5], dtype=np.dtype("int64").newbyteorder(order))
    ref = algorithm1(*native, [0, 999, 5], 100)
    for backend in backends_for("numpy"):
        E, stats = run(backend, c, u, n, t, 100, return_stats=True)
        assert E.dtype.name == dtype and E.dtype.isnative
        assert_close_to_reference(E, ref, dtype, what=f"{backend} {order}{dtype}")
        np.testing.assert_array_equal(stats["mode_seeking"], [True, False, True])


@requires_torch
def test_requires_grad_inputs_warn_and_give_a_detached_result():
    c, u, n = make_inputs((2, 3, 4), library="torch")
    c.requires_grad_(True)
    ref = algorithm1(*(x.detach().numpy() for x in (c, u, n)), [0, 999], 100)
    for backend in backends_for("torch"):
        with pytest.warns(UserWarning, match="not differentiable, so the result is detached"):
            E = run(backend, c, u, n, [0, 999], 100)
        assert not E.requires_grad and E.grad_fn is None
        assert_close_to_reference(E, ref, "float32", what=backend)


T_FORMS = {
    "int": lambda t: int(t[0]),
    "float": lambda t: float(t[0]),
    "np.int64 scalar": lambda t: np.int64(t[0]),
    "int64 vector": lambda t: t,
    "int32 vector": lambda t: t.astype(np.int32),
    "float32 vector": lambda t: t.astype(np.float32),
    "float64 vector": lambda t: t.astype(np.float64),
    "torch int64": lambda t: torch.from_numpy(t),
    "torch 0-d": lambda t: torch.tensor(int(t[0])),
    "list": lambda t: t.tolist(),
}


@pytest.mark.parametrize("t_form", [torch_param(f) if f.startswith("torch") else f for f in sorted(T_FORMS)])
@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("return_stats", [False, True])
def test_every_timestep_form_gives_the_same_result(t_form, library, return_stats):
    """The fast paths (NumPy arrays / torch CPU tensors with int or float t) and the general
    path agree with the reference bit for bit on the choice of branch and to tolerance."""
    c, u, n = make_inputs((4, 3, 8), "float32", library)
    scalar = t_form in ("int", "float", "np.int64 scalar", "torch 0-d")
    t = np.array([150, 150, 150, 150]) if scalar else np.array([0, 999, 150, 151])
    host = [x.numpy() if library == "torch" else x for x in (c, u, n)]
    E_ref, stats_ref = ssd_toolkit.estimate(*host, t.astype(np.float64), 150, backend="reference", return_stats=True)
    out = ssd_toolkit.estimate(c, u, n, T_FORMS[t_form](t), 150, return_stats=return_stats)
    E, stats = out if return_stats else (out, None)
    assert type(E) is type(c) and tuple(E.shape) == (4, 3, 8)
    assert_close_to_reference(E, E_ref, "float32", what=t_form)
    if return_stats:
        np.testing.assert_array_equal(to_numpy64(stats["mode_seeking"]), t <= 150)
        np.testing.assert_allclose(to_numpy64(stats["r"]), stats_ref["r"], rtol=1e-10)


# ---- errors name the argument, the expected and the received value ----

@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda a: (a[0], a[1][:, :2], a[2]), ValueError, r"eps_uncond: expected shape \[3, 4\].*got \[3, 2\]"),
        (lambda a: (a[0].astype(np.int32), a[1], a[2]), TypeError, "eps_cond: expected a floating dtype.*got int32"),
        (lambda a: (a[0], a[1].astype(np.complex64), a[2]), TypeError, "eps_uncond: expected a floating dtype.*got complex64"),
        (lambda a: (a[0], a[1], a[2].tolist()), TypeError, "noise: expected a numpy.ndarray.*got builtins.list"),
        pytest.param(lambda a: (a[0], torch.from_numpy(a[1]), a[2]), TypeError, "one library.*eps_uncond=torch",
                     marks=requires_torch),
        (lambda a: (np.ones((), dtype=np.float32), a[1], a[2]), ValueError, "eps_cond: expected shape \\[B, ...\\].*0-d"),
    ],
)
def test_bad_arrays(mutate, exc, pattern):
    args = mutate(make_inputs((3, 4)))
    with pytest.raises(exc, match=pattern):
        ssd_toolkit.estimate(*args, 0, 100)


@pytest.mark.parametrize(
    "t, M, exc, pattern",
    [
        ([1, 2], 100, ValueError, r"t: expected a scalar or a vector of length B=3, got shape \[2\]"),
        (np.zeros((3, 1)), 100, ValueError, r"t: expected .* got shape \[3, 1\]"),
        ([1.0, np.nan, 3.0], 100, ValueError, r"t: expected finite timesteps, got t\[1\]=nan"),
        (np.array([1j, 2, 3]), 100, TypeError, "t: expected real timesteps"),
        ("500", 100, TypeError, "t: expected real timesteps"),
        (0, float("nan"), ValueError, "M: expected a finite real scalar, got nan"),
        (0, float("inf"), ValueError, "M: expected a finite real scalar, got inf"),
        (0, 10**400, ValueError, "M: expected a finite real scalar, got an integer of 401 digits"),
        (0, "200", TypeError, "M: expected a finite real scalar, got str"),
        (0, [200], TypeError, "M: expected a finite real scalar, got list"),
    ],
)
def test_bad_t_and_M(t, M, exc, pattern):
    with pytest.raises(exc, match=pattern):
        ssd_toolkit.estimate(*make_inputs((3, 4)), t, M)


@requires_torch
def test_tensor_threshold_and_timesteps_accepted():
    c, u, n = make_inputs((3, 4), "float32", "torch")
    E1 = ssd_toolkit.estimate(c, u, n, torch.tensor([0, 300, 600]), torch.tensor(300.0), backend="torch")
    E2 = ssd_toolkit.estimate(c, u, n, [0, 300, 600], 300, backend="torch")
    assert torch.equal(E1, E2)


@requires_torch
def test_bad_backend_and_mixed_devices():
    c, u, n = make_inputs((3, 4), "float32", "torch")
    with pytest.raises(ValueError, match="backend: expected one of .* got 'gpu'"):
        ssd_toolkit.estimate(c, u, n, 0, 1, backend="gpu")
    with pytest.raises(ValueError, match="backend: 'torch' needs torch tensors, got numpy"):
        ssd_toolkit.estimate(*make_inputs((3, 4)), 0, 1, backend="torch")
    meta = torch.empty((3, 4), device="meta")
    with pytest.raises(ValueError, match="noise: expected device cpu .* got meta"):
        ssd_toolkit.estimate(c, u, meta, 0, 1)


def test_cuda_input_without_cuda_build_is_a_clear_error(monkeypatch):
    """Device data never silently go through the host: a __cuda_array_interface__ array
    without a CUDA build says how to rebuild; backend='reference' says it reads host memory."""
    from ssd_toolkit.engine import extension as _extension

    class DeviceArray:  # the interface of a CuPy array, without a GPU
        shape, dtype = (2, 3), np.dtype("float32")
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False), "version": 3}

    monkeypatch.setattr(_extension, "has_cuda_kernel", lambda: False)
    arrays = [DeviceArray() for _ in range(3)]
    with pytest.raises(RuntimeError, match="built without CUDA.*nvcc"):
        ssd_toolkit.estimate(*arrays, 0, 1)
    with pytest.raises(ValueError, match="backend: 'reference' cannot read __cuda_array_interface__ arrays"):
        ssd_toolkit.estimate(*arrays, 0, 1, backend="reference")


@requires_torch
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_dynamo_traces_estimate_in_one_graph(backend):
    """Under torch.compile the call is one graph (custom op, or the shared maths in torch
    ops): fullgraph=True raises on any graph break. The eager backend keeps it fast."""
    c, u, n = make_inputs((4, 3, 8), "float32", "torch")
    t = torch.tensor([0, 999, 5, 600])
    step = torch.compile(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, 500.0, backend=backend) * 2,
                         fullgraph=True, backend="eager")
    torch.testing.assert_close(step(c, u, n, t), 2 * ssd_toolkit.estimate(c, u, n, t, 500.0), rtol=1e-6, atol=1e-6)


def test_package_modules_import_each_other_without_a_cycle():
    """No import circle inside ssd_toolkit (module-level or lazy imports alike)."""
    import ast
    import pathlib

    package = pathlib.Path(ssd_toolkit.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module] if node.module else [alias.name for alias in node.names])
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssd_toolkit."):
                deps.add(node.module.split(".")[1])
        graph[path.stem] = {d.split(".")[0] for d in deps} & {p.stem for p in package.glob("*.py")}
    state = {}

    def visit(name, stack):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join(stack + [name])
        state[name] = "open"
        for dep in sorted(graph[name]):
            visit(dep, stack + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


@pytest.mark.parametrize("library", ["numpy", pytest.param("torch", marks=requires_torch)])
def test_mixed_float_dtypes_promote_as_the_library_does(library):
    """Half-precision predictions with float32 noise (autocast's usual mix): the result has the
    promoted dtype and equals the call on inputs cast to it first; samples never mix."""
    c, u, n = make_inputs((3, 4, 5), "float32", seed=7)
    t = np.array([10, 500, 100])
    low = "bfloat16" if library == "torch" else "float16"
    if library == "torch":
        c, u, n = (torch.from_numpy(x) for x in (c, u, n))
        c_low, u_low = c.to(getattr(torch, low)), u.to(getattr(torch, low))
        expected = ssd_toolkit.estimate(c_low.float(), u_low.float(), n, t, 200)
        assert ssd_toolkit.estimate(c_low, u_low, n, t, 200).dtype == torch.float32
        assert torch.equal(ssd_toolkit.estimate(c_low, u_low, n, t, 200), expected)
        assert ssd_toolkit.estimate(c_low, u_low, n.half(), t, 200).dtype == torch.float32  # bf16 with fp16
    else:
        c_low, u_low = c.astype(low), u.astype(low)
        expected = ssd_toolkit.estimate(c_low.astype("float32"), u_low.astype("float32"), n, t, 200)
        got = ssd_toolkit.estimate(c_low, u_low, n, t, 200)
        assert got.dtype == np.float32 and np.array_equal(got, expected)
        assert ssd_toolkit.estimate(c_low, u_low, n.astype("float64"), t, 200).dtype == np.float64


@pytest.mark.parametrize("library", ["numpy", pytest.param("torch", marks=requires_torch)])
@pytest.mark.parametrize("t, M, pattern", [
    ([0.1, 0.9, 0.5], 200, r"t: every timestep is in \[0, 1\) while M=200 >= 1"),
    (0.3, 200, r"t: every timestep is in \[0, 1\) while M=200 >= 1"),
    ([100, 900, 5], 0.2, r"M: 0.2 is a fraction while every t is an integer step >= 1.*M=200"),
    ([-5, 100, 900], 200, r"t: expected timesteps >= 0, got min -5"),
])
def test_timesteps_and_M_of_other_conventions_are_warned_at_the_caller(library, t, M, pattern):
    """Each of these sends every sample down one branch without a word: warned, pointing at the call."""
    arrays = make_inputs((3, 4), "float32", library, seed=3)
    with pytest.warns(ssd_toolkit.engine.maths.TimestepConventionWarning, match=pattern) as record:
        ssd_toolkit.estimate(*arrays, np.asarray(t) if library == "numpy" else t, M)
    assert record[0].filename == __file__


@pytest.mark.parametrize("t, M", [([100, 900, 5], 200), ([0.1, 0.9, 0.5], 0.5), (0.3, 0.2), ([0, 999, 3], 200)])
def test_matching_conventions_are_not_warned(t, M):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ssd_toolkit.estimate(*make_inputs((3, 4), "float32", seed=3), np.asarray(t), M)


def test_a_negative_cfg_scale_is_refused():
    for name in ("sds", "nfsd"):
        with pytest.raises(ValueError, match=r"guidance_scale: expected a finite number >= 0.*got -3"):
            ssd_toolkit.get_estimator(name, guidance_scale=-3)
