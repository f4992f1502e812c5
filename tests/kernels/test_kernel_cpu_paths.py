"""The CPU kernel's loop variants (csrc/ssd_cpu.cpp) and the bench's limit pass.

Each variant must give the bits of the baseline loops (SSD_TOOLKIT_CPU_SIMD=0, cached
stores), which are checked against the float64 reference: float16/bfloat16 converted in
AVX2 registers, non-temporal stores (SSD_TOOLKIT_CPU_STREAM_BYTES=0 streams every call;
aligned and misaligned outputs), and AVX-512 where the CPU has it (the "dispatched" case;
on a CPU without it that case runs AVX2). Pass 1 is skipped where its sums are unused:
a batch with every t > M and no stats never reads noise (an unreadable page proves it).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ssd_toolkit
from ssd_toolkit.engine.reference import STAT_NAMES, estimate_reference
from tolerances import STATS_RTOL, assert_close_to_reference

pytestmark = pytest.mark.skipif(
    not ssd_toolkit.backends()["cpu"], reason=f"compiled module not built: {ssd_toolkit.backends()['reason']}"
)

M = 500.0
DTYPES = ("float16", "bfloat16", "float32", "float64")
STORAGE = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "float64": np.float64}
SIMD = {"baseline": "0", "avx2": "avx2", "dispatched": None}  # dispatched: AVX-512 where present
STREAM = {"cached": str(1 << 62), "streamed": "0"}
# (B, N): unit split (B=1, 3 with 2 threads), whole samples, tails of every length class.
SIZES = [(1, 37), (5, 1000), (3, 2 * 8192 + 13), (8, 4096 + 7), (1, 3 * 8192 + 5)]


def _C():
    import ssd_toolkit._C as module  # noqa: PLC0415 - only after the skip check

    return module


def to_float64(x, dtype):
    with np.errstate(invalid="ignore"):  # NaN patterns
        if dtype == "bfloat16":
            return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return x.astype(np.float64)


def from_float64(x, dtype):
    """float64 -> dtype storage; bfloat16 bit patterns rounded to nearest even via float32."""
    if dtype != "bfloat16":
        return x.astype(STORAGE[dtype])
    f = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype(np.uint16)


def inputs(rng, B, N, dtype, offset=0):
    """c, u, n [B, N] and an output buffer starting `offset` elements into its allocation."""
    c, u, n = (from_float64(rng.standard_normal((B, N)) * 3, dtype) for _ in range(3))
    raw = np.zeros(B * N + offset, dtype=STORAGE[dtype])
    return c, u, n, raw[offset:].reshape(B, N)


def mixed_t(B):
    t = np.where(np.arange(B) % 2 == 0, 100.0, 900.0)
    if B > 2:
        t[2] = M  # t == M rescales
    return t


def run_kernel(c, u, n, out, t, stats, dtype, threads):
    B, N = c.shape
    out[...] = 0
    st = np.full((len(STAT_NAMES), B), np.nan) if stats else None
    _C().estimate_cpu(c, u, n, out.ctypes.data, t, st, B, N, dtype, M, threads)
    return out.copy(), st


@pytest.fixture
def variant(monkeypatch):
    def set_variant(simd, stream):
        if SIMD[simd] is None:
            monkeypatch.delenv("SSD_TOOLKIT_CPU_SIMD", raising=False)
        else:
            monkeypatch.setenv("SSD_TOOLKIT_CPU_SIMD", SIMD[simd])
        monkeypatch.setenv("SSD_TOOLKIT_CPU_STREAM_BYTES", STREAM[stream])

    return set_variant


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned_out", "out_one_element_off"])
def test_every_path_gives_the_baseline_bits(dtype, offset, variant, rng):
    """AVX2 (halves in registers) and the dispatched path, cached and streamed stores, 1 and 2
    threads, with and without stats: the bits of the baseline loops, which match the reference."""
    for B, N in SIZES:
        c, u, n, out = inputs(rng, B, N, dtype, offset)
        t = mixed_t(B)
        for stats in (False, True):
            variant("baseline", "cached")
            E0, s0 = run_kernel(c, u, n, out, t, stats, dtype, 1)
            E_ref, s_ref = estimate_reference(*(to_float64(x, dtype) for x in (c, u, n)), t, M)
            assert_close_to_reference(to_float64(E0, dtype), E_ref, dtype, what=f"baseline E {B}x{N}")
            if stats:
                for i, name in enumerate(STAT_NAMES):
                    atol = STATS_RTOL[dtype] * s_ref["eps_cond_norm"] if name == "eps_tilde_norm" else 0.0
                    bound = STATS_RTOL[dtype] * np.abs(s_ref[name]) + atol
                    assert (np.abs(s0[i] - s_ref[name]) <= bound).all(), f"{name}: {s0[i]} vs {s_ref[name]}"
            for simd in ("avx2", "dispatched"):
                for stream in STREAM:
                    variant(simd, stream)
                    for threads in (1, 2):
                        E, s = run_kernel(c, u, n, out, t, stats, dtype, threads)
                        where = f"{simd}, {stream}, {threads} threads, stats={stats}, {B}x{N}"
                        np.testing.assert_array_equal(E.view(np.uint8), E0.view(np.uint8), err_msg=where)
                        if stats:
                            np.testing.assert_array_equal(s.view(np.int64), s0.view(np.int64), err_msg=where)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_rounding_in_registers_every_pattern(dtype, variant, rng):
    """Both branches on random bit patterns (subnormals, infinities, NaNs, overflow of c - u):
    the AVX2 register conversions round as the portable code, NaN for NaN."""
    storage = STORAGE[dtype]
    bits = rng.integers(0, 1 << 16, size=(2, 1 << 16), dtype=np.uint16)
    c, u = bits.view(storage), np.ascontiguousarray(rng.permutation(bits, axis=1)).view(storage)
    n = from_float64(rng.standard_normal((2, 1 << 16)), dtype)
    finite = np.isfinite(to_float64(c, dtype)) & np.isfinite(to_float64(u, dtype))
    c_finite, u_finite = np.where(finite, c, c.dtype.type(0)), np.where(finite, u, u.dtype.type(0))
    out = np.zeros_like(c)
    # every pattern through c - u; finite patterns through the rescaled branch
    for c, u, t in ((c, u, np.array([900.0, 900.0])), (c_finite, u_finite, np.array([100.0, 100.0]))):
        results = {}
        for simd in ("baseline", "avx2"):
            for stream in STREAM:
                variant(simd, stream)
                results[simd, stream] = run_kernel(c, u, n, out, t, False, dtype, 1)[0].view(np.uint16)
        base = results["baseline", "cached"]
        nan = np.isnan(to_float64(base.view(storage), dtype))
        for key, got in results.items():
            np.testing.assert_array_equal(np.isnan(to_float64(got.view(storage), dtype)), nan, err_msg=str(key))
            np.testing.assert_array_equal(got[~nan], base[~nan], err_msg=str(key))


_NO_NOISE_READ = textwrap.dedent(
    """
    import ctypes, os, sys
    import numpy as np
    import ssd_toolkit._C as C
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    B, N, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    size = B * N * 4
    noise = libc.mmap(None, size, 0, 0x22, -1, 0)  # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS: any read faults
    assert noise not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    rng = np.random.default_rng(0)
    c, u = (rng.standard_normal((B, N)).astype(np.float32) for _ in range(2))
    t = np.full(B, 900.0)
    t[0] = np.nan  # a NaN t gives h, as in the reference
    out = np.empty_like(c)
    C.estimate_cpu(c, u, noise, out, t, None, B, N, "float32", 500.0, threads)
    sys.exit(0 if np.array_equal(out, c - u) else 3)
    """
)


@pytest.mark.parametrize("simd", list(SIMD))
@pytest.mark.parametrize("B,N,threads", [(1, 3 * 8192 + 5, 2), (4, 40_000, 2), (6, 1000, 1)])
def test_skipped_pass_never_reads_noise(simd, B, N, threads):
    """Every t > M (or NaN) and no stats: no sum is needed, so pass 1 does not run and noise is
    never read; here noise is an unreadable page, which faults at the first read."""
    env = dict(os.environ)
    env.pop("SSD_TOOLKIT_CPU_SIMD", None)
    if SIMD[simd] is not None:
        env["SSD_TOOLKIT_CPU_SIMD"] = SIMD[simd]
    proc = subprocess.run([sys.executable, "-c", _NO_NOISE_READ, str(B), str(N), str(threads)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode} (negative: killed by that signal): {proc.stderr[-2000:]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stream", list(STREAM))
def test_limit_pass_writes_the_xor_of_the_inputs(dtype, stream, monkeypatch, rng):
    """bench/bench_cpu.py's limit: out = c ^ u ^ n byte for byte, any size, alignment, threads."""
    monkeypatch.setenv("SSD_TOOLKIT_CPU_STREAM_BYTES", STREAM[stream])
    for B, N in SIZES:
        for offset in (0, 1):
            c, u, n, out = inputs(rng, B, N, dtype, offset)
            for threads in (1, 2):
                _C().cpu_limit_pass(c, u, n, out.ctypes.data, B, N, dtype, threads)
                want = c.view(np.uint8) ^ u.view(np.uint8) ^ n.view(np.uint8)
                np.testing.assert_array_equal(out.view(np.uint8), want, err_msg=f"{B}x{N}+{offset}, {threads}")


def test_limit_pass_validates_like_the_kernel(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="B: expected >= 0, got -1"):
        _C().cpu_limit_pass(x, x, x, np.empty_like(x), -1, 3, "float64")
    with pytest.raises(ValueError, match="out: expected a buffer of at least 48 bytes, got 40"):
        _C().cpu_limit_pass(x, x, x, np.empty(5), 2, 3, "float64")
    with pytest.raises(ValueError, match="out: expected memory that does not overlap eps_cond"):
        _C().cpu_limit_pass(x, x, x, x.ctypes.data, 2, 3, "float64")
