"""The CUDA kernels (csrc/cuda/ssd_kernels.cuh) and their launch logic, run on the CPU.

The same kernel source, compiled by the host compiler against the emulation header
(csrc/cuda/emulation/), runs every launch path and both access widths for a pretend
device (an H100 by default), and is compared with the float64 NumPy reference under the
tolerance table. Runs in every CI job, GPU or not; .ci/run also runs the tests named
``smoke`` on a build with AddressSanitizer and UBSan (SSD_TOOLKIT_EMULATION_SANITIZE=1).
"""

import os
import shutil

import numpy as np
import pytest

from ssd_toolkit.reference import STAT_NAMES, estimate_reference
from tolerances import STATS_RTOL, assert_close_to_reference

pytest.importorskip("pybind11")
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++").split()[0]) is None, reason="no C++ compiler")

M = 500.0
DTYPES = ("float16", "bfloat16", "float32", "float64")
PATHS = ("auto", "no_cluster", "split")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
H100 = {"major": 9, "sms": 132, "binary_version": 90, "ptx_version": 90, "max_cluster": 16}
A100 = {"major": 8, "sms": 108, "binary_version": 80, "ptx_version": 80, "max_cluster": 1}
H100_PTX_JIT = {**H100, "ptx_version": 89}  # SSD_TOOLKIT_CUDA_ARCHS="80;86;89" on an H100


@pytest.fixture(scope="module")
def emu():
    import cuda_emulation_build  # noqa: PLC0415 - tests/ helper

    return cuda_emulation_build.load(sanitize=os.environ.get("SSD_TOOLKIT_EMULATION_SANITIZE") == "1")


# ------------------------------------------------------------------------- helpers
def _storage(dtype):
    return np.uint16 if dtype == "bfloat16" else np.dtype(dtype)


def _to_bfloat16_bits(x):
    """float64 -> bfloat16 bit patterns, round to nearest even via float32 (exact for the
    test data, which is rounded to bfloat16 first)."""
    f = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype(np.uint16)


def _as_float64(a, dtype):
    if dtype == "bfloat16":
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def _empty(shape, dtype, misalign=0):
    """An array whose data starts `misalign` elements after a 16-byte boundary and, where
    the allocator returns 16-byte-aligned blocks, ends where its allocation ends (so
    AddressSanitizer reports any access past it)."""
    itemsize = ITEMSIZE[dtype]
    nbytes = int(np.prod(shape)) * itemsize
    offset = misalign * itemsize % 16
    raw = np.empty(offset + nbytes, dtype=np.uint8)
    if raw.ctypes.data % 16:  # an unaligned allocator: leave slack instead
        raw = np.empty(nbytes + 32, dtype=np.uint8)
        offset += (-raw.ctypes.data) % 16
    data = raw[offset : offset + nbytes].view(_storage(dtype)).reshape(shape)
    assert data.ctypes.data % 16 == misalign * itemsize % 16
    return data


def _data(rng, shape, dtype, misalign=0, scale=1.0):
    x = rng.standard_normal(shape) * scale
    a = _empty(shape, dtype, misalign)
    a[...] = _to_bfloat16_bits(x) if dtype == "bfloat16" else x
    return a


def _mixed_t(rng, B):
    t = np.empty(B)
    t[::2] = rng.uniform(0, M, t[::2].shape)
    t[1::2] = rng.uniform(M + 1, 1000, t[1::2].shape)
    if B > 2:
        t[2] = M  # t == M is mode seeking
    return t


def _run(emu, c, u, n, t, dtype, path="auto", cluster=0, device=H100, misalign_out=None, schedule="forward",
         variant=""):
    """Runs the emulated estimate; returns (E as float64 [B, N], stats [6, B], result dict)."""
    B, N = c.shape
    out = _empty(c.shape, dtype, 0 if misalign_out is None else misalign_out)
    out.view(np.uint8)[...] = 0xFF  # NaN everywhere: an element never written shows
    stats = np.full((6, B), np.nan)
    t_arr = np.ascontiguousarray(t, dtype=np.float64) if np.ndim(t) else None
    result = emu.estimate(
        c.ctypes.data, u.ctypes.data, n.ctypes.data, out.ctypes.data, 0 if t_arr is None else t_arr.ctypes.data,
        0.0 if t_arr is not None else float(t), stats.ctypes.data, B, N, dtype, M, path, cluster, dict(device),
        schedule, variant,
    )
    return _as_float64(out, dtype), stats, result


def _same_bits(a, b, what):
    """Equal bit patterns (NaN payloads included) of two (E, stats, result) runs."""
    for x, y, name in ((a[0], b[0], "E"), (a[1], b[1], "stats")):
        assert np.array_equal(x.view(np.int64), y.view(np.int64)), (
            f"{name} differs between schedules ({what}, {a[2]['plan']}): a missing barrier or a race"
        )


# Each _check also runs the threads last to first: with the default (first to last) order,
# every hazard between the threads of a block is exposed in one of the two (docs/kernels.md).
CHECK_SCHEDULES = ("forward", "reverse")


def _check(emu, c, u, n, t, dtype, schedules=CHECK_SCHEDULES, **kwargs):
    E, stats, result = first = _run(emu, c, u, n, t, dtype, schedule=schedules[0], **kwargs)
    for schedule in schedules[1:]:
        _same_bits(first, _run(emu, c, u, n, t, dtype, schedule=schedule, **kwargs), f"{schedules[0]} vs {schedule}")
    B = c.shape[0]
    E_ref, stats_ref = estimate_reference(
        *(_as_float64(x, dtype) for x in (c, u, n)), np.broadcast_to(np.asarray(t, dtype=np.float64), (B,)), M
    )
    assert_close_to_reference(E, E_ref, dtype, what=f"E ({result['plan']})")
    rtol = STATS_RTOL[dtype]
    for i, name in enumerate(STAT_NAMES):
        ref = stats_ref[name]
        # eps_tilde_norm is a difference of sums: its error scales with ||eps_cond||.
        atol = rtol * stats_ref["eps_cond_norm"] if name == "eps_tilde_norm" else 0.0
        ok = (stats[i] == ref) | (np.abs(stats[i] - ref) <= rtol * np.abs(ref) + atol)
        assert ok.all(), f"{name} [{dtype}, {result['plan']}]: got {stats[i]}, reference {ref}"
    return E, stats, result


# ------------------------------------------------------------------------- parity grid
# (B, N): tiny samples (resident only), odd sizes, the benchmark shapes (fp32 resident at
# 1, 2 and 4 packs per thread with clusters of 8 on an H100; fp64 at clusters of 16) and a
# multi-chunk split whose last chunk is uneven for every dtype.
SHAPES = [(3, 1), (5, 97), (2, 1025), (2, 4 * 64 * 64), (2, 4 * 64 * 128), (1, 4 * 128 * 128), (2, 3 * 8192 + 1234)]


@pytest.mark.parametrize("misalign", (0, 1), ids=("aligned", "misaligned"))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parity_with_reference(emu, dtype, shape, path, misalign):
    rng = np.random.default_rng(hash((dtype, shape, path, misalign)) % 2**32)
    c, u, n = (_data(rng, shape, dtype, misalign) for _ in range(3))
    _, _, result = _check(emu, c, u, n, _mixed_t(rng, shape[0]), dtype, path=path)
    plan = result["plan"]
    assert plan.endswith("vec=scalar" if misalign or shape[1] % (16 // ITEMSIZE[dtype]) else "vec=16B"), plan
    if path == "split" and shape[1] * ITEMSIZE[dtype] >= 64:
        assert plan.startswith("split"), plan
    if path == "no_cluster":
        assert "cluster=1 " in plan or plan.startswith("split"), plan


def test_grid_covers_every_path_and_the_review_gaps(emu):
    """The plans the parity grid reaches on an H100 include the cases no test compared with
    the reference before: fp32 resident at 2 and 4 packs per thread, scalar (misaligned)
    kernels in clusters, and the multi-chunk split with an uneven last chunk."""
    plans = {
        (dtype, N, path, aligned): emu.plan(N, dtype, aligned, path, 0, H100)
        for dtype in DTYPES for _, N in SHAPES for path in PATHS for aligned in (True, False)
    }
    reached = set(plans.values())
    for expected in (
        "resident cluster=8 vpt=2 threads=512 vec=16B",
        "resident cluster=8 vpt=4 threads=512 vec=16B",
        "resident cluster=8 vpt=4 threads=512 vec=scalar",
        "resident cluster=16 vpt=4 threads=512 vec=16B",
        "resident cluster=1 vpt=4 threads=512 vec=16B",
    ):
        assert expected in reached, expected
    assert plans[("float32", 4 * 128 * 128, "auto", True)] == "resident cluster=8 vpt=4 threads=512 vec=16B"
    assert plans[("float32", 4 * 64 * 128, "auto", True)] == "resident cluster=8 vpt=2 threads=512 vec=16B"
    for dtype in DTYPES:
        for aligned in (True, False):
            plan = plans[(dtype, 3 * 8192 + 1234, "split", aligned)]
            chunk, nchunks = (int(x.split("=")[1]) for x in plan.split()[1:3])
            assert nchunks >= 3 and (3 * 8192 + 1234) - (nchunks - 1) * chunk > chunk, plan  # uneven last chunk


def test_smoke_every_path_width_and_dtype(emu):
    """A compact pass over every path, both access widths and every dtype (the subset CI
    also runs under AddressSanitizer and UBSan), under the forward, reverse and two shuffled
    schedules: the same bits under each."""
    rng = np.random.default_rng(1)
    for dtype in DTYPES:
        for shape, path in (((3, 2 * 64 * 64), "auto"), ((3, 1000), "no_cluster"), ((2, 3 * 8192 + 7), "split")):
            for misalign in (0, 1):
                c, u, n = (_data(rng, shape, dtype, misalign) for _ in range(3))
                _check(emu, c, u, n, _mixed_t(rng, shape[0]), dtype, path=path,
                       schedules=("forward", "reverse", "shuffle:1", "shuffle:2"))


@pytest.mark.parametrize("variant", ("threads256", "relaxed_arrive", "threads256,relaxed_arrive"))
def test_smoke_launch_plan_variants(emu, variant):
    """The launch-plan variants that bench_cuda.py measures beside today's plan on a GPU
    (ssd_launch_plan.h): 256-thread resident blocks (twice the cluster size) and the relaxed
    "done reading" arrive give the same bits as the default plan wherever the reduction
    shape is unchanged, and pass the reference everywhere."""
    rng = np.random.default_rng(21)
    for dtype, N in (("float32", 4 * 64 * 64), ("float32", 4 * 128 * 128), ("float16", 1000), ("float64", 4 * 64 * 64)):
        c, u, n = (_data(rng, (3, N), dtype) for _ in range(3))
        t = _mixed_t(rng, 3)
        E, stats, result = _check(emu, c, u, n, t, dtype, variant=variant)
        plan, default_plan = result["plan"], emu.plan(N, dtype, True, "auto", 0, H100)
        assert plan == emu.plan(N, dtype, True, "auto", 0, H100, variant)
        if "threads256" in variant and plan.startswith("resident"):
            assert "threads=512" not in plan, plan
        if "relaxed" in variant and "cluster=1 " not in plan and plan.startswith("resident"):
            assert plan.endswith("arrive=relaxed vec=16B"), plan
        if variant == "relaxed_arrive":  # same blocks, same sums: the same bits
            assert plan.replace(" arrive=relaxed", "") == default_plan
            _same_bits((E, stats, result), _run(emu, c, u, n, t, dtype), "relaxed vs release arrive")


def test_an_unknown_variant_is_a_value_error(emu):
    """(Not a smoke test: under the AddressSanitizer build a C++ throw aborts the process.)"""
    with pytest.raises(ValueError, match="variant: expected a comma-separated list"):
        emu.plan(1000, "float32", True, "auto", 0, H100, "threads128")


@pytest.mark.parametrize("dtype,N", [("float32", 4 * 64 * 64), ("float16", 4 * 64 * 128), ("float64", 4 * 128 * 128)])
def test_smoke_cluster_blocks_wait_for_their_readers(emu, dtype, N):
    """Last-to-first scheduling lets a block run to its end while the rest of its cluster
    has not read its sums yet: only the wait before exit keeps the result (and the bits)."""
    rng = np.random.default_rng(13)
    c, u, n = (_data(rng, (3, N), dtype) for _ in range(3))
    t = _mixed_t(rng, 3)
    forward = _run(emu, c, u, n, t, dtype)
    backward = _check(emu, c, u, n, t, dtype, schedules=("reverse",))
    assert "cluster=1 " not in backward[2]["plan"], backward[2]["plan"]
    assert np.array_equal(forward[0].view(np.int64), backward[0].view(np.int64))
    assert np.array_equal(forward[1].view(np.int64), backward[1].view(np.int64))


# ------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("path", PATHS)
def test_smoke_bitwise_deterministic(emu, path):
    rng = np.random.default_rng(2)
    shape = (3, 3 * 4096 + 100)
    c, u, n = (_data(rng, shape, "float32") for _ in range(3))
    t = _mixed_t(rng, 3)
    first = _run(emu, c, u, n, t, "float32", path=path)
    again = _run(emu, c, u, n, t, "float32", path=path)
    assert np.array_equal(first[0].view(np.int64), again[0].view(np.int64))
    assert np.array_equal(first[1].view(np.int64), again[1].view(np.int64))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ("float16", "float32"))
def test_non_finite_values_stay_in_their_sample(emu, dtype, path):
    rng = np.random.default_rng(3)
    c, u, n = (_data(rng, (4, 3000), dtype) for _ in range(3))
    c[1, 17] = np.inf
    u[2, 5] = np.nan
    t = np.array([100.0, 100.0, 900.0, 100.0])  # sample 2 follows h elementwise
    E, stats, _ = _run(emu, c, u, n, t, dtype, path=path)
    assert np.isnan(E[1]).all()
    assert np.isnan(E[2, 5]) and np.isfinite(np.delete(E[2], 5)).all()
    assert np.isfinite(E[0]).all() and np.isfinite(E[3]).all()
    assert np.isfinite(stats[:, [0, 3]]).all()


@pytest.mark.parametrize("path", PATHS)
def test_t_equal_to_M_is_mode_seeking_and_branches_mix(emu, path):
    rng = np.random.default_rng(4)
    c, u, n = (_data(rng, (4, 5000), "float64") for _ in range(3))
    t = np.array([M, np.nextafter(M, np.inf), 0.0, 1000.0])
    E, _, _ = _check(emu, c, u, n, t, "float64", path=path)
    np.testing.assert_array_equal(E[1], c[1] - u[1])  # h, exactly
    np.testing.assert_array_equal(E[3], c[3] - u[3])
    assert not np.allclose(E[0], c[0] - u[0])
    E_scalar, _, _ = _run(emu, c, u, n, M, "float64", path=path)  # t_ptr 0: t_scalar for every sample
    np.testing.assert_array_equal(E_scalar[0], E[0])


def test_degenerate_and_empty_samples(emu):
    rng = np.random.default_rng(5)
    n = _data(rng, (2, 5000), "float32")
    c = (2.0 * n).astype(np.float32)  # exactly collinear
    u = np.zeros_like(c)
    E, stats, _ = _run(emu, c, u, n, 1.0, "float32")
    assert (E == 0).all() and (stats[5] == 0).all()
    zero = _empty((3, 0), "float32")
    _, stats, result = _run(emu, zero, zero, zero, 1.0, "float32")
    assert (stats[5] == 0).all() and result["launches"] == [(3, 32, 1)]


def test_float64_scale_equivariance_over_1e150(emu):
    """||eps_tilde||^2 is formed without <c,n>^2, so 1e-150- and 1e150-scaled float64 data
    give the same E up to the scale (and the same scale factor)."""
    rng = np.random.default_rng(6)
    c, u, n = (_data(rng, (2, 4000), "float64") for _ in range(3))
    E1, s1, _ = _run(emu, c, u, n, 1.0, "float64")
    for k in (1e-150, 1e150):
        Ek, sk, _ = _run(emu, c * k, u * k, n * k, 1.0, "float64")
        np.testing.assert_allclose(Ek / k, E1, rtol=1e-12, atol=1e-12 * np.abs(E1).max())
        np.testing.assert_allclose(sk[5], s1[5], rtol=1e-12)


# ------------------------------------------------------------------------- the review's fixes
def test_ptx_jit_build_on_hopper_does_not_launch_clusters(emu):
    """sm_90 code JIT-compiled from compute_89 PTX reports binaryVersion 90, but its body
    was compiled with __CUDA_ARCH__ 890 (no cluster code: __trap()). Deciding on
    binaryVersion alone launched clusters into the trap."""
    rng = np.random.default_rng(7)
    c, u, n = (_data(rng, (2, 4 * 64 * 64), "float32") for _ in range(3))
    _, _, result = _check(emu, c, u, n, _mixed_t(rng, 2), "float32", device=H100_PTX_JIT)
    assert "cluster=" not in result["plan"] or "cluster=1 " in result["plan"], result["plan"]
    assert all(csize == 1 for _, _, csize in result["launches"])
    assert emu.plan(4 * 64 * 64, "float32", True, "auto", 0, H100).startswith("resident cluster=8")
    assert emu.plan(4 * 64 * 64, "float32", True, "auto", 0, A100).startswith("split")


@pytest.mark.parametrize("fail_queries", (True, False))
@pytest.mark.parametrize("path", ("auto", "split"))
@pytest.mark.parametrize("prior", (0, 700))
def test_the_callers_error_state_is_neither_cleared_nor_read(emu, prior, path, fail_queries):
    """A failed cluster query must not leave its error behind, nor clear an earlier one;
    and an earlier error must not fail the launches (they check their own return value)."""
    rng = np.random.default_rng(8)
    c, u, n = (_data(rng, (2, 4 * 64 * 64), "float32") for _ in range(3))
    device = {**H100, "fail_queries": fail_queries, "last_error": prior}
    _, _, result = _check(emu, c, u, n, 1.0, "float32", path=path, device=device)
    assert (result["last_error"] != 0) == (prior != 0)
    if not fail_queries:
        assert result["last_error"] == prior


@pytest.mark.parametrize("victim", ("eps_cond", "eps_uncond", "noise"))
def test_out_overlapping_an_input_is_rejected(emu, victim):
    rng = np.random.default_rng(9)
    arrays = {k: _data(rng, (2, 1000), "float32") for k in ("eps_cond", "eps_uncond", "noise")}
    before = {k: v.copy() for k, v in arrays.items()}
    ptrs = [arrays[k].ctypes.data for k in ("eps_cond", "eps_uncond", "noise")]
    out = arrays[victim].ctypes.data + 4 * 512  # a shifted alias (the split path corrupted it)
    with pytest.raises(ValueError, match=f"out: expected memory that does not overlap {victim} "):
        emu.estimate(*ptrs, out, 0, 1.0, 0, 2, 1000, "float32", M, "split", 0, H100)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[k])


@pytest.mark.parametrize("victim,offset", [("eps_cond", 1), ("eps_uncond", 2), ("noise", 3), ("out", 1), ("t", 4),
                                           ("stats", 2)])
@pytest.mark.parametrize("dtype", ("float16", "float32", "float64"))
def test_a_pointer_off_its_element_boundary_is_rejected_before_any_launch(emu, dtype, victim, offset):
    """An address a few bytes past an element boundary (a __cuda_array_interface__ or a
    byte-sliced buffer) would fault on a GPU (cudaErrorMisalignedAddress, which ends the CUDA
    context): it is a ValueError naming the argument, and nothing is launched."""
    itemsize = ITEMSIZE[dtype]
    if victim not in ("t", "stats") and offset % itemsize == 0:
        offset = 1
    B, N = 2, 1000
    bufs = {k: np.zeros(B * N * itemsize + 64, np.uint8) for k in ("eps_cond", "eps_uncond", "noise", "out")}
    bufs["t"] = np.zeros(B * 8 + 64, np.uint8)
    bufs["stats"] = np.zeros(6 * B * 8 + 64, np.uint8)
    addr = {k: v.ctypes.data + (-v.ctypes.data) % 16 for k, v in bufs.items()}
    addr[victim] += offset
    kind = dtype if victim not in ("t", "stats") else "float64"
    align = itemsize if victim not in ("t", "stats") else 8
    match = f"{victim}: expected an address aligned to its {kind} elements \\({align} bytes\\), got 0x[0-9a-f]+ \\({offset % align} bytes"
    for path in PATHS:
        with pytest.raises(ValueError, match=match):
            emu.estimate(addr["eps_cond"], addr["eps_uncond"], addr["noise"], addr["out"], addr["t"], 0.0, addr["stats"],
                         B, N, dtype, M, path, 0, H100)
    assert not any(bufs["out"]) and not any(bufs["stats"])


@pytest.mark.parametrize("prior", (0, 700))
@pytest.mark.parametrize("path", ("auto", "split"))
def test_a_failed_launch_raises_and_clears_only_its_own_error(emu, path, prior):
    """cudaLaunchKernelEx's error is raised (RuntimeError naming the call) and cleared from
    the thread's last-error state, so the caller's next unrelated launch check does not
    report it; an error the caller had before is not cleared."""
    rng = np.random.default_rng(14)
    c, u, n = (_data(rng, (2, 4 * 64 * 64), "float32") for _ in range(3))
    out = _empty(c.shape, "float32")
    device = {**H100, "fail_launch": 1, "last_error": prior}
    after = "0" if prior == 0 else "[1-9][0-9]*"  # a prior error is not cleared (the launch's own may replace it)
    with pytest.raises(RuntimeError, match=rf"cudaLaunchKernelEx failed: .*cudaError_t 1\) \[last-error state after the call: {after}\]"):
        emu.estimate(c.ctypes.data, u.ctypes.data, n.ctypes.data, out.ctypes.data, 0, 1.0, 0, 2, c.shape[1], "float32",
                     M, path, 0, device)


@pytest.mark.parametrize(
    "path,N,max_grid,slices",
    [("no_cluster", 97, 3, [3, 3, 1]), ("split", 3 * 4096 + 5, 7, [2, 2, 2, 1]), ("auto", 4 * 64 * 64, 17, [2, 2, 2, 1])],
)
def test_batches_beyond_the_grid_limit_run_in_slices(emu, path, N, max_grid, slices):
    rng = np.random.default_rng(10)
    B = sum(slices)
    c, u, n = (_data(rng, (B, N), "float32") for _ in range(3))
    _, _, result = _check(emu, c, u, n, _mixed_t(rng, B), "float32", path=path, device={**H100, "max_grid_x": max_grid})
    per_launch = 3 if path == "split" else 1
    grids = [g for g, _, _ in result["launches"]][::per_launch]
    per_row = grids[0] // slices[0]
    assert grids == [rows * per_row for rows in slices]


def test_a_sample_larger_than_a_grid_is_refused_not_looped(emu):
    """nchunks > max grid made the rows per launch 0 and the batch loop endless."""
    with pytest.raises(ValueError, match="N: expected a sample that fits one grid \\(2 blocks\\), got one needing 3"):
        emu.estimate(1 << 20, 2 << 20, 3 << 20, 4 << 20, 0, 1.0, 0, 1, 3 * 4096 + 5, "float32", M, "split", 0, {"max_grid_x": 2})
    with pytest.raises(ValueError, match="needing 4294967296 blocks"):
        emu.rows_per_launch(2**32, 2**31 - 1)
    assert emu.rows_per_launch(3, 2**31 - 1) == (2**31 - 1) // 3


# ------------------------------------------------------------------------- 64-bit index maths
def test_index_maths_past_2_to_31():
    """The kernels' index helpers on sizes past 2^31 (nothing is allocated)."""
    import cuda_emulation_build  # noqa: PLC0415

    emu = cuda_emulation_build.load(sanitize=os.environ.get("SSD_TOOLKIT_EMULATION_SANITIZE") == "1")
    N = 2**31 + 12344
    chunk = 4096
    nchunks = N // chunk
    assert emu.sample_of_block(5, 2**31 - 2, 3) == 5 + (2**31 - 2) // 3
    assert emu.chunk_begin(nchunks - 1, chunk) == (nchunks - 1) * chunk
    assert emu.chunk_end(nchunks - 1, chunk, nchunks, N) == N
    assert emu.chunk_end(nchunks - 2, chunk, nchunks, N) == (nchunks - 1) * chunk
    base = 0x7F00_0000_0000
    for b, k, esize in ((3, nchunks - 1, 2), (7, 12345, 4), (2**20, 1, 8)):
        expected = base + (b * N + k * chunk) * esize
        assert emu.chunk_slot_address(base, b, k, N, chunk, esize) == (expected + 7) // 8 * 8
    assert emu.resident_elem(2**20, 4, 3, 512, 511, 8) == ((2**20 * 4 + 3) * 512 + 511) * 8
    big = emu.plan(N, "float32", True, "auto", 0, H100)
    assert big == f"split chunk=4096 nchunks={nchunks} vec=16B"


# ------------------------------------------------------------------------- the emulation itself
def test_double_to_half_rounds_like_numpy(emu):
    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.standard_normal(3000) * 10.0 ** rng.integers(-9, 6, 3000),
        [0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0000001, 2.0**-14, np.inf],
        (np.arange(1, 2049) + 0.5) * 2.0**-10,  # ties to even
    ])
    got = np.array([emu.double_to_half_bits(v) for v in x], dtype=np.uint16)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, x.astype(np.float16).view(np.uint16))
    assert emu.double_to_half_bits(np.nan) & 0x7C00 == 0x7C00 and emu.double_to_half_bits(np.nan) & 0x3FF


def test_double_to_bfloat16_rounds_once_from_double(emu):
    """Direct rounding (not via float32, which rounds twice), checked with exact integers."""
    rng = np.random.default_rng(12)
    for v in np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000), [1 + 2**-8 + 2**-30]]):
        bits = emu.double_to_bfloat16_bits(float(v))
        mantissa, exponent = np.frexp(abs(v))  # |v| = mantissa 2^exponent, mantissa in [0.5, 1)
        q = round(mantissa * 256)  # 8 significant bits, ties to even (exact for these values)
        expected = float(np.ldexp(q / 256, exponent)) * np.sign(v)
        got = float((np.array([bits], dtype=np.uint32) << 16).view(np.float32)[0])
        assert got == expected, (v, got, expected)


def test_emulated_warp_shuffles_and_the_rules_it_enforces(emu):
    """The emulation runs the real warp reduction, and turns each broken rule that a GPU
    would punish (a hang, garbage, a sticky error) into an error naming it."""
    assert emu.selftest("warp_sum")[:2] == [496.0, 496.0]
    for name, message in (
        ("divergent_barrier", "deadlock: 16 threads wait"),
        ("partial_warp_shuffle", r"full mask in a partial warp \(blockDim.x 48\)"),
        ("read_departed_block", "block 0 thread 0: map_shared_rank: block rank 1 has exited"),
        ("misaligned_load", "__ldcs: misaligned 16-byte access"),
    ):
        with pytest.raises(RuntimeError, match=message):
            emu.selftest(name)
