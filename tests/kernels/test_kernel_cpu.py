"""The compiled CPU kernel (backend="compiled") against the float64 NumPy reference."""

import os

import numpy as np
import pytest
import torch

import ssd_toolkit
from ssd_toolkit import frameworks
from ssd_toolkit.reference import COLLINEAR_RTOL2, STAT_NAMES, estimate_reference
from ssd_inputs import as_array, make_inputs
from tolerances import STATS_RTOL, assert_close_to_reference

pytestmark = pytest.mark.skipif(
    not ssd_toolkit.backends()["cpu"], reason=f"compiled module not built: {ssd_toolkit.backends()['reason']}"
)

M = 500.0
NUMPY_DTYPES = ("float16", "float32", "float64")
ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _C():
    import ssd_toolkit._C as module  # noqa: PLC0415 - only after the skip check

    return module


def make(rng, shape, dtype, library, scale=1.0):
    return as_array(rng.standard_normal(shape) * scale, dtype, library)


def mixed_t(rng, B):
    """Timesteps on both sides of M (both branches in one batch when B >= 2)."""
    t = rng.uniform(0, 1000, B)
    t[::2] = rng.uniform(0, M, t[::2].shape)
    t[1::2] = rng.uniform(M + 1, 1000, t[1::2].shape)
    return t


def reference_of(c, u, n, t):
    B = c.shape[0]
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (B,))
    return estimate_reference(*(frameworks.to_host_float64(x.reshape(B, -1)) for x in (c, u, n)), t, M)


def check(c, u, n, t, dtype):
    """Run the kernel and assert E and every stat agree with the reference."""
    E, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True, backend="compiled")
    assert type(E) is type(c) and tuple(E.shape) == tuple(c.shape)
    assert frameworks.dtype_name(E) == dtype
    E_ref, stats_ref = reference_of(c, u, n, t)
    assert_close_to_reference(E, E_ref, dtype)
    rtol = STATS_RTOL[dtype]
    for name in STAT_NAMES:
        got, ref = frameworks.to_host_float64(stats[name]), stats_ref[name]
        # eps_tilde_norm is a difference of sums: its error scales with ||eps_cond||.
        atol = rtol * stats_ref["eps_cond_norm"] if name == "eps_tilde_norm" else 0.0
        same_nan = np.isnan(got) == np.isnan(ref)
        with np.errstate(invalid="ignore"):
            close = (got == ref) | (np.abs(got - ref) <= rtol * np.abs(ref) + atol)
        assert same_nan.all() and (close | np.isnan(ref)).all(), f"{name} [{dtype}]: got {got}, reference {ref}"
    np.testing.assert_array_equal(np.asarray(stats["mode_seeking"]), stats_ref["mode_seeking"])
    return E, stats


GRID = [  # (sample shape, batch sizes): large samples get small batches to keep the suite fast
    ((1,), (1, 7, 64)),
    ((3,), (1, 5, 64)),
    ((97,), (1, 13, 64)),
    ((4, 64, 64), (1, 3)),
    ((4, 128, 128), (2,)),
]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("sample_shape,batches", GRID, ids=[str(s) for s, _ in GRID])
def test_matches_reference_torch(dtype, sample_shape, batches, rng):
    for B in batches:
        shape = (B, *sample_shape)
        check(*(make(rng, shape, dtype, "torch") for _ in range(3)), mixed_t(rng, B), dtype)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("sample_shape,batches", GRID, ids=[str(s) for s, _ in GRID])
def test_matches_reference_numpy(dtype, sample_shape, batches, rng):
    for B in batches:
        shape = (B, *sample_shape)
        check(*(make(rng, shape, dtype, "numpy") for _ in range(3)), mixed_t(rng, B), dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_scalar_t_each_branch(dtype, rng):
    arrays = [make(rng, (4, 300), dtype, "torch") for _ in range(3)]
    _, s_low = check(*arrays, 10.0, dtype)
    _, s_high = check(*arrays, 900.0, dtype)
    assert bool(s_low["mode_seeking"].all()) and not bool(s_high["mode_seeking"].any())


@pytest.mark.parametrize(
    "library,dtype", [("numpy", "float32"), ("numpy", "float16"), ("torch", "bfloat16"), ("torch", "float64")]
)
def test_non_contiguous_inputs(library, dtype, rng):
    B = 3
    base = [make(rng, (B, 64, 4, 65), dtype, library) for _ in range(3)]
    if library == "torch":
        views = [x.permute(0, 2, 1, 3)[..., :64] for x in base]
        assert not views[0].is_contiguous()
    else:
        views = [x.transpose(0, 2, 1, 3)[..., :64] for x in base]
        assert not views[0].flags.c_contiguous
    check(*views, mixed_t(rng, B), dtype)
    strided_batch = [x[::2] for x in base]  # every other sample
    check(*strided_batch, mixed_t(rng, 2), dtype)


def test_h_branch_is_bit_exact_difference(rng):
    """t > M: E = eps_cond - eps_uncond computed in the input dtype (float32, float64)."""
    for dtype in ("float32", "float64"):
        c, u, n = (make(rng, (3, 1000), dtype, "numpy", scale=1e3) for _ in range(3))
        E = ssd_toolkit.estimate(c, u, n, 900.0, M, backend="compiled")
        np.testing.assert_array_equal(E, c - u)


@pytest.mark.parametrize("simd", ["1", "0"], ids=["dispatched", "baseline"])
def test_float16_conversion_all_bit_patterns(simd, monkeypatch):
    """Every float16 pattern loads and stores unchanged; c - u rounds like NumPy (RNE).

    Run on the dispatched path (F16C instructions where the CPU has them) and on the
    portable conversion code (SSD_TOOLKIT_CPU_SIMD=0).
    """
    monkeypatch.setenv("SSD_TOOLKIT_CPU_SIMD", simd)
    bits = np.arange(1 << 16, dtype=np.uint16)
    c = bits.view(np.float16).reshape(1, -1)
    zeros = np.zeros_like(c)
    E = ssd_toolkit.estimate(c, zeros, zeros, 900.0, M, backend="compiled")
    finite = np.isfinite(c)
    np.testing.assert_array_equal(E.view(np.uint16)[finite], c.view(np.uint16)[finite])
    assert np.isnan(E[~np.isinf(c) & ~finite]).all()
    rng = np.random.default_rng(1)
    c2 = rng.choice(c[finite], 1 << 16).reshape(1, -1)
    u2 = rng.choice(c[finite], 1 << 16).reshape(1, -1)
    with np.errstate(over="ignore"):
        expected = (c2.astype(np.float32) - u2.astype(np.float32)).astype(np.float16)
    E2 = ssd_toolkit.estimate(c2, u2, zeros, 900.0, M, backend="compiled")
    np.testing.assert_array_equal(E2.view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("simd", ["1", "0"], ids=["dispatched", "baseline"])
def test_bfloat16_conversion_all_bit_patterns(simd, monkeypatch):
    """Every bfloat16 pattern round-trips; c - u rounds like torch's float -> bfloat16 (RNE)."""
    monkeypatch.setenv("SSD_TOOLKIT_CPU_SIMD", simd)
    bits = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).reshape(1, -1)
    zeros = torch.zeros_like(bits)
    E = ssd_toolkit.estimate(bits, zeros, zeros, 900.0, M, backend="compiled")
    finite = torch.isfinite(bits)
    assert torch.equal(E.view(torch.int16)[finite], bits.view(torch.int16)[finite])
    assert torch.isnan(E[~finite & ~torch.isinf(bits)]).all()
    g = torch.Generator().manual_seed(1)
    c2 = (torch.randn(1, 1 << 16, generator=g) * torch.exp(torch.randn(1, 1 << 16, generator=g) * 20)).bfloat16()
    u2 = (torch.randn(1, 1 << 16, generator=g) * 3).bfloat16()
    expected = (c2.float() - u2.float()).bfloat16()
    E2 = ssd_toolkit.estimate(c2, u2, zeros, 900.0, M, backend="compiled")
    assert torch.equal(E2.view(torch.int16), expected.view(torch.int16))


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_sdxl_float16_sums_exceed_float16_range(scale, rng):
    """4x128x128 fp16 latents: sums of squares >> 65504 must match the fp64 reference."""
    c, u, n = (make(rng, (2, 4, 128, 128), "float16", "numpy", scale=scale) for _ in range(3))
    E, stats = check(c, u, n, np.array([100.0, 100.0]), "float16")
    assert np.isfinite(E).all()
    assert (stats["h_norm"] ** 2 > float(np.finfo(np.float16).max)).all()


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_edge_cases(dtype, rng):
    """Zero noise, collinear eps_cond, eps_cond = 0, and a non-finite sample in each branch."""
    B, N = 6, 257
    c, u, n = (make(rng, (B, N), "float64", "numpy") for _ in range(3))
    n[0] = 0.0  # ||noise|| = 0: r = 0, eps_tilde = eps_cond
    c[1] = 0.5 * n[1]  # collinear: degenerate, E = 0, scale = 0
    c[2] = 0.0  # eps_cond = 0: degenerate
    c[3, 7] = np.inf  # non-finite, t <= M: whole sample NaN
    c[4, 9] = np.nan  # non-finite, t > M: h elementwise
    t = np.array([1.0, 1.0, 1.0, 1.0, 999.0, 1.0])
    arrays = [torch.from_numpy(x).to(getattr(torch, dtype)) for x in (c, u, n)]
    E, stats = check(*arrays, t, dtype)
    E = E.double().numpy()
    assert stats["r"][0] == 0 and stats["scale"][1] == 0 and stats["scale"][2] == 0
    assert (E[1] == 0).all() and (E[2] == 0).all()
    assert np.isnan(E[3]).all()
    assert np.isnan(E[4, 9]) and np.isfinite(np.delete(E[4], 9)).all()
    assert np.isfinite(E[[0, 1, 2, 5]]).all()  # other samples unaffected


def test_collinear_threshold_matches_reference():
    assert _C().COLLINEAR_RTOL2 == COLLINEAR_RTOL2


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_empty_batch_and_one_element_samples(library, rng):
    empty = [make(rng, (0, 5), "float32", library) for _ in range(3)]
    E, stats = ssd_toolkit.estimate(*empty, np.zeros(0), M, return_stats=True, backend="compiled")
    assert tuple(E.shape) == (0, 5) and all(len(v) == 0 for v in stats.values())
    ones = [make(rng, (8, 1), "float32", library) for _ in range(3)]
    E, stats = check(*ones, np.full(8, 1.0), "float32")
    assert (np.asarray(E) == 0).all()  # eps_tilde = 0 whenever noise != 0


def call_kernel(c, u, n, t, num_threads):
    """Direct call into _C with host pointers (no copies): (E, stats)."""
    B, N = c.shape
    out = np.empty_like(c)
    stats = np.empty((len(STAT_NAMES), B))
    _C().estimate_cpu(c.ctypes.data, u.ctypes.data, n.ctypes.data, out.ctypes.data, t.ctypes.data,
                      stats.ctypes.data, B, N, c.dtype.name, M, num_threads)
    return out, stats


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_deterministic_across_runs_threads_and_simd_paths(dtype, rng, monkeypatch):
    """Bitwise identical for any num_threads (either work split) and baseline, AVX2 and AVX-512 loops."""
    # (1, .): units split across threads; (3, .): units with 2 threads, whole samples with 3.
    for B, N in [(1, 400_003), (3, 131_072 + 17)]:
        c, u, n = make_inputs((B, N), dtype, seed=rng)
        t = mixed_t(rng, B)
        first = call_kernel(c, u, n, t, 1)
        for nt in (1, 2, 3, 0):
            again = call_kernel(c, u, n, t, nt)
            np.testing.assert_array_equal(again[0].view(np.uint8), first[0].view(np.uint8))
            np.testing.assert_array_equal(again[1], first[1])
        for simd in ("0", "avx2"):  # baseline loops; AVX2 where the dispatched path is AVX-512
            monkeypatch.setenv("SSD_TOOLKIT_CPU_SIMD", simd)
            baseline = call_kernel(c, u, n, t, 2)
            monkeypatch.delenv("SSD_TOOLKIT_CPU_SIMD")
            np.testing.assert_array_equal(baseline[0].view(np.uint8), first[0].view(np.uint8))
            np.testing.assert_array_equal(baseline[1], first[1])
        E_ref, _ = estimate_reference(c, u, n, t, M)
        assert_close_to_reference(first[0], E_ref, dtype)


def test_contiguous_inputs_reach_the_kernel_without_copies(rng):
    """The [B, N] views handed to C++ share memory with contiguous caller arrays."""
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    rows = frameworks.flat_rows(x, 4, 15)
    view, _ = frameworks.framework_of(x).host_view(rows)
    assert view.ctypes.data == x.ctypes.data
    for dtype in (torch.float16, torch.bfloat16, torch.float32):  # torch: the op reads these rows' memory
        tx = torch.randn(4, 3, 5).to(dtype)
        assert frameworks.flat_rows(tx, 4, 15).data_ptr() == tx.data_ptr()


def test_kernel_validates_its_arguments(rng):
    c = rng.standard_normal((2, 3))
    t = np.zeros(2)
    out = np.empty_like(c)
    p = c.ctypes.data
    with pytest.raises(ValueError, match="dtype: expected one of .* got 'int8'"):
        _C().estimate_cpu(p, p, p, out.ctypes.data, t.ctypes.data, 0, 2, 3, "int8", M)
    with pytest.raises(ValueError, match="B: expected >= 0, got -1"):
        _C().estimate_cpu(p, p, p, out.ctypes.data, t.ctypes.data, 0, -1, 3, "float64", M)
    with pytest.raises(ValueError, match="N: expected >= 0, got -3"):
        _C().estimate_cpu(p, p, p, out.ctypes.data, t.ctypes.data, 0, 2, -3, "float64", M)
    with pytest.raises(ValueError, match="noise: expected a data pointer, got null"):
        _C().estimate_cpu(p, p, 0, out.ctypes.data, t.ctypes.data, 0, 2, 3, "float64", M)
    with pytest.raises(ValueError, match="t_ptr: expected the address"):
        _C().estimate_cpu(p, p, p, out.ctypes.data, 0, 0, 2, 3, "float64", M)
    call_kernel(c, c, c, t, 1)  # stats_ptr and valid pointers: no error


@pytest.mark.parametrize("shift", [0, 8, -40])
@pytest.mark.parametrize("victim", ["eps_cond", "eps_uncond", "noise", "t"])
def test_out_overlapping_an_input_is_rejected(victim, shift, rng):
    """Any shared byte between out and an input is refused before any work (a shifted
    alias would read values the kernel already overwrote)."""
    buf = rng.standard_normal(160)  # inputs and t carved 256 bytes apart; out is 48 bytes
    args = {"eps_cond": buf[8:14], "eps_uncond": buf[40:46], "noise": buf[72:78], "t": buf[104:106]}
    before = buf.copy()
    victim_address = args[victim].ctypes.data
    out_address = victim_address + shift
    addresses = [args[k].ctypes.data for k in ("eps_cond", "eps_uncond", "noise")]
    with pytest.raises(ValueError, match=f"out: expected memory that does not overlap {victim} "):
        _C().estimate_cpu(*addresses, out_address, args["t"].ctypes.data, 0, 2, 3, "float64", M)
    np.testing.assert_array_equal(buf, before)  # nothing written


def test_stats_overlapping_out_is_rejected(rng):
    c, u, n = make_inputs((2, 3), "float64", seed=rng)
    out, t = np.empty((2, 3)), np.zeros(2)
    with pytest.raises(ValueError, match=r"stats: expected memory that does not overlap out \[0x"):
        _C().estimate_cpu(c, u, n, out.ctypes.data, t, out.ctypes.data + 40, 2, 3, "float64", M)
    stats = np.empty((6, 2))  # adjacent but disjoint ranges are fine
    _C().estimate_cpu(c, u, n, out, t, stats, 2, 3, "float64", M)


def _threaded_case(rng):
    c, u, n = make_inputs((4, 100_000), "float32", seed=rng)
    t = mixed_t(rng, 4)
    return (c, u, n, t), call_kernel(c, u, n, t, 1)


def test_concurrent_callers_get_correct_results(rng):
    """Two Python threads in the kernel at once (the GIL is released): both exact."""
    import threading  # noqa: PLC0415

    args, expected = _threaded_case(rng)
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(call_kernel(*args, 2))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors and len(results) == 60
    for out, stats in results:
        np.testing.assert_array_equal(out, expected[0])
        np.testing.assert_array_equal(stats, expected[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kernel_works_in_a_forked_child(rng):
    """The parked worker threads do not survive fork(); the child must not wait on them."""
    import time  # noqa: PLC0415

    args, expected = _threaded_case(rng)
    call_kernel(*args, 2)  # the parent's workers exist now
    pid = os.fork()
    if pid == 0:  # child: exit status 0 only if the result is exact
        ok = False
        try:
            out, stats = call_kernel(*args, 2)
            ok = np.array_equal(out, expected[0]) and np.array_equal(stats, expected[1])
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the kernel hung in a forked child")
