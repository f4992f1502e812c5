"""The fused CUDA kernel (csrc/cuda/ssd_cuda.cu) and its Python routes.

Tests marked ``gpu`` need a CUDA device and a CUDA build and are skipped otherwise; the
others (build, backend choice, error paths, the custom op's fake implementation and its
torch.compile route) run everywhere.
"""

import os
import shutil
import types

import numpy as np
import pytest
import torch

import ssd_toolkit
from ssd_toolkit import frameworks
from ssd_toolkit.engine import dispatch as _dispatch
from ssd_toolkit.engine import extension as _extension
from ssd_toolkit.frameworks.torch import cuda as torch_cuda
from ssd_toolkit.frameworks.torch import op as torch_op
from ssd_toolkit.frameworks.torch import selftest
from ssd_toolkit.reference import STAT_NAMES, estimate_reference
from ssd_inputs import as_array, make_inputs
from tolerances import STATS_RTOL, TOLERANCES, assert_close_to_reference

M = 500.0
DTYPES = ("float16", "bfloat16", "float32", "float64")
PATHS = ("auto", "no_cluster", "split")
HAS_CUDA_BUILD = _extension.has_cuda_kernel()
HAS_GPU = torch.cuda.is_available() and HAS_CUDA_BUILD
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and a CUDA build of ssd_toolkit._C")


def _module():
    return _extension.load()


# --------------------------------------------------------------------- runs everywhere
@pytest.mark.skipif(
    shutil.which("nvcc") is None or os.environ.get("SSD_TOOLKIT_CUDA") == "0",
    reason="nvcc not on PATH (or SSD_TOOLKIT_CUDA=0): a CPU-only build is expected",
)
def test_build_has_cuda_when_nvcc_is_present():
    module = _module()
    assert module is not None, _extension.backends()["reason"]
    assert module.compiled_with_cuda()
    for name in ("estimate_cuda", "cuda_set_path", "cuda_launch_plan", "cuda_pointer_device"):
        assert hasattr(module, name), name


def test_cuda_data_without_cuda_build_raises(monkeypatch):
    monkeypatch.setattr(_extension, "has_cuda_kernel", lambda: False)
    with pytest.raises(RuntimeError, match=r"cuda:0 but ssd_toolkit was built without CUDA.*nvcc"):
        _dispatch.require_cuda_kernel("cuda:0")


class _ForeignCudaArray:
    """A __cuda_array_interface__ producer the glue cannot allocate for."""

    def __init__(self, shape):
        self.shape = shape

    @property
    def __cuda_array_interface__(self):  # a class property, as CuPy and Numba have it
        return {"shape": self.shape, "typestr": "<f4", "data": (0, False), "version": 3}


def test_unsupported_cuda_array_producer_is_rejected(monkeypatch):
    monkeypatch.setattr(_extension, "has_cuda_kernel", lambda: True)
    x = _ForeignCudaArray((2, 3))
    with pytest.raises(TypeError, match=r"__cuda_array_interface__ arrays from 'test_cuda' are not supported"):
        ssd_toolkit.estimate(x, _ForeignCudaArray((2, 3)), _ForeignCudaArray((2, 3)), 1.0, M)


def test_the_kernel_missing_policy_falls_back_under_auto_only(monkeypatch):
    """engine.dispatch.kernel_or_fallback: the library's own maths with a one-time warning under
    'auto', the build hint under 'compiled' or where a library has no fallback (CuPy)."""
    monkeypatch.setattr(_extension, "has_cuda_kernel", lambda: False)
    monkeypatch.setitem(_extension._state, "warned_torch", False)
    with pytest.warns(RuntimeWarning, match=r"the CUDA kernel is not available.*backend='torch'"):
        assert _dispatch.kernel_or_fallback("auto", "cuda:0", "torch") == "torch"
    with pytest.raises(RuntimeError, match=r"cuda:0 but ssd_toolkit was built without CUDA.*nvcc"):
        _dispatch.kernel_or_fallback("compiled", "cuda:0", "torch")
    with pytest.raises(RuntimeError, match=r"cuda but ssd_toolkit was built without CUDA"):
        _dispatch.kernel_or_fallback("auto", "cuda", None)
    monkeypatch.setattr(_extension, "has_cuda_kernel", lambda: True)
    assert _dispatch.kernel_or_fallback("compiled", "cuda:0", "torch") == "compiled"


def _torch_backend():
    return frameworks.framework_of(torch.zeros(1))


def test_host_scalar_timestep_needs_no_copy():
    timesteps = _torch_backend().timesteps
    t_dev, t_scalar = timesteps(np.float32(250.0), 4, torch.device("cuda:0"))
    assert t_dev is None and t_scalar == 250.0
    t_dev, t_scalar = timesteps(7, 4, torch.device("cuda:0"))
    assert t_dev is None and t_scalar == 7.0


def test_timestep_errors_before_any_device_work():
    timesteps = _torch_backend().timesteps
    with pytest.raises(ValueError, match=r"t: expected a scalar or a vector of length B=4, got shape \[3\]"):
        timesteps([1.0, 2.0, 3.0], 4, torch.device("cuda:0"))
    with pytest.raises(ValueError, match="t: expected finite timesteps"):
        timesteps(float("nan"), 4, torch.device("cuda:0"))
    with pytest.raises(ValueError, match=r"t: expected a host value or a tensor on cuda:0.*got meta"):
        timesteps(torch.zeros(4, device="meta"), 4, torch.device("cuda:0"))


@pytest.mark.skipif(not _extension.has_cpu_kernel(), reason="compiled CPU kernel not built")
@pytest.mark.parametrize("t", (300.0, 700, [1.0, 900.0, 2.0, 999.0], "tensor"), ids=("float", "int", "list", "tensor"))
@pytest.mark.parametrize("return_stats", (False, True))
def test_torch_glue_passes_the_binding_what_it_expects(t, return_stats, monkeypatch, rng):
    """The CUDA launch glue (``launch_torch``, behind the op's CUDA kernel where the op library
    is not built) on host tensors: the binding is replaced by one that runs the compiled CPU
    kernel on the very addresses and sizes the glue passes, so the argument order, output
    and stats wiring are all checked."""
    cpu_module = _module()
    calls = []

    def estimate_cuda(c, u, n, out, t_ptr, t_scalar, stats_ptr, B, N, dtype, M_, stream):
        calls.append((t_ptr, t_scalar, stream))
        t_host = np.full(B, t_scalar) if t_ptr == 0 else None
        cpu_module.estimate_cpu(c, u, n, out, t_ptr or t_host.ctypes.data, stats_ptr, B, N, dtype, M_)

    monkeypatch.setattr(_extension, "load", lambda: types.SimpleNamespace(estimate_cuda=estimate_cuda))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)  # host tensors: device index None
    monkeypatch.setattr(torch_cuda, "_raw_stream", lambda index: 1234)
    monkeypatch.setattr(selftest, "_RESULTS", {})
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_SELFTEST", "0")  # the first-use self-test has its own tests
    shape = (4, 3, 5)
    c = torch.from_numpy(rng.standard_normal((4, 3, 6)))[:, :, 1:]  # non-contiguous: copied
    u, n = (torch.from_numpy(rng.standard_normal(shape)) for _ in range(2))
    t_arg = torch.tensor([1.0, 900.0, 2.0, 999.0]) if t == "tensor" else t
    t_dev, t_scalar = _torch_backend().timesteps(t_arg, 4, c.device)
    rows = [x.contiguous().view(4, 15) for x in (c, u, n)]
    E = torch.empty_like(rows[0])
    stats_rows = torch.empty((6, 4), dtype=torch.float64) if return_stats else None
    torch_cuda.launch_torch(*rows, E, t_dev, t_scalar, M, stats_rows, 4, 15)
    E = E.view(shape)
    stats = None if stats_rows is None else frameworks.stats_dict(stats_rows, torch.from_numpy(np.broadcast_to(
        np.asarray(t_arg, dtype=np.float64) <= M, (4,)).copy()))
    t_np = np.asarray(t_arg, dtype=np.float64) if t != "tensor" else t_arg.numpy()
    E_ref, stats_ref = _reference(c, u, n, t_np)
    assert E.shape == shape and E.dtype == torch.float64
    assert_close_to_reference(E, E_ref, "float64")
    assert calls[-1][2] == 1234
    assert (calls[-1][0] == 0) == isinstance(t, (int, float)), calls  # a scalar travels as t_scalar
    if return_stats:
        for name in STAT_NAMES:
            np.testing.assert_allclose(stats[name].numpy(), stats_ref[name], rtol=1e-12, err_msg=name)
        np.testing.assert_array_equal(stats["mode_seeking"].numpy(), stats_ref["mode_seeking"])


@pytest.mark.skipif(not HAS_CUDA_BUILD, reason="CUDA kernel not compiled in")
def test_bindings_validate_before_launching():
    module = _module()
    with pytest.raises(ValueError, match="dtype: expected one of"):
        module.estimate_cuda(8, 8, 8, 8, 0, 0.0, 0, 1, 4, "int8", M, 0)
    with pytest.raises(ValueError, match="B, N: expected sizes >= 0, got B=-1"):
        module.estimate_cuda(8, 8, 8, 8, 0, 0.0, 0, -1, 4, "float32", M, 0)
    with pytest.raises(ValueError, match="expected device addresses, got 0"):
        module.estimate_cuda(0, 8, 8, 8, 0, 0.0, 0, 1, 4, "float32", M, 0)
    # out overlapping an input: the split path would re-read inputs it already overwrote.
    with pytest.raises(ValueError, match=r"out: expected memory that does not overlap noise \[0x1000, 0x1040\)"):
        module.estimate_cuda(0x2000, 0x3000, 0x1000, 0x1020, 0, 0.0, 0, 2, 8, "float32", M, 0)
    with pytest.raises(ValueError, match="stats: expected memory that does not overlap out"):
        module.estimate_cuda(0x2000, 0x3000, 0x1000, 0x4000, 0, 0.0, 0x4008, 2, 8, "float32", M, 0)
    with pytest.raises(ValueError, match="path: expected 'auto', 'no_cluster' or 'split', got 'fast'"):
        module.cuda_set_path("fast")
    assert module.cuda_get_path() == "auto"
    # an address off its element boundary (a CAI or byte-sliced buffer): a GPU would fault
    # (cudaErrorMisalignedAddress ends the context); rejected before any CUDA call.
    with pytest.raises(ValueError, match=r"eps_uncond: expected an address aligned to its float32 elements \(4 bytes\), "
                                         r"got 0x3002 \(2 bytes past a boundary\)"):
        module.estimate_cuda(0x2000, 0x3002, 0x1000, 0x4000, 0, 0.0, 0, 2, 8, "float32", M, 0)
    with pytest.raises(ValueError, match=r"t: expected an address aligned to its float64 elements \(8 bytes\)"):
        module.estimate_cuda(0x2000, 0x3000, 0x1000, 0x4000, 0x5004, 0.0, 0, 2, 8, "float16", M, 0)
    with pytest.raises(ValueError, match="variant: expected a comma-separated list"):
        module.cuda_set_variant("fastest")
    for variant in ("threads256", "relaxed_arrive", "threads256,relaxed_arrive", "default"):
        module.cuda_set_variant(variant)
        assert module.cuda_get_variant() == variant


@pytest.mark.skipif(not HAS_CUDA_BUILD or torch.cuda.is_available(), reason="needs a CUDA build on a machine without a GPU")
def test_launch_without_a_driver_names_the_cuda_error():
    with pytest.raises(RuntimeError, match=r"ssd_toolkit estimate_cuda: \w+ failed: cudaError\w+: .* \(cudaError_t \d+\)"):
        _module().estimate_cuda(0x1000, 0x2000, 0x3000, 0x4000, 0, 0.0, 0, 1, 4, "float32", M, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("return_stats", (False, True))
def test_fake_impl_shapes_and_dtypes(dtype, return_stats):
    from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: PLC0415

    with FakeTensorMode():
        c, u, n = (torch.empty(5, 37, dtype=getattr(torch, dtype)) for _ in range(3))
        E, stats = torch.ops.ssd_toolkit.estimate(c, u, n, None, 1.0, M, return_stats)
    assert E.shape == (5, 37) and E.dtype == c.dtype and E.is_contiguous()
    assert stats.shape == (6, 5 if return_stats else 0) and stats.dtype == torch.float64
    E, stats = torch.ops.ssd_toolkit.estimate(*(torch.empty(3, 4, device="meta") for _ in range(3)), None, 0.0, M, True)
    assert E.device.type == "meta" and E.shape == (3, 4) and stats.shape == (6, 3)


def test_torch_library_opcheck_cpu(rng):
    args = make_inputs((3, 10), "float64", "torch", seed=rng)
    torch.library.opcheck(torch_op.estimate_op(), (*args, torch.tensor([1.0, 900.0, 2.0], dtype=torch.float64), 0.0, M, True))
    torch.library.opcheck(torch_op.estimate_op(), (*args, None, 100.0, M, False))


def _compile_and_capture(fn):
    """``torch.compile(fn, fullgraph=True)`` with a backend that records the FX graphs."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return torch.compile(fn, fullgraph=True, backend=backend), graphs


def _reference(c, u, n, t):
    B = c.shape[0]
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (B,))
    return estimate_reference(*(frameworks.to_host_float64(x.reshape(B, -1)) for x in (c, u, n)), t, M)


def test_compile_fullgraph_calls_the_custom_op_cpu(rng):
    c, u, n = make_inputs((3, 2, 5), "float32", "torch", seed=rng)
    t = torch.tensor([100.0, 900.0, 400.0])

    def step(c, u, n, t):
        E, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
        return E * 1.0, stats["scale"], stats["mode_seeking"]

    compiled, graphs = _compile_and_capture(step)
    E, scale, mode_seeking = compiled(c, u, n, t)
    assert any("ssd_toolkit.estimate" in str(node.target) for gm in graphs for node in gm.graph.nodes)
    E_ref, stats_ref = _reference(c, u, n, t.numpy())
    assert_close_to_reference(E, E_ref, "float32")
    np.testing.assert_allclose(scale.numpy(), stats_ref["scale"], rtol=STATS_RTOL["float32"])
    np.testing.assert_array_equal(mode_seeking.numpy(), stats_ref["mode_seeking"])


def test_compile_fullgraph_scalar_t_and_torch_backend_cpu(rng):
    c, u, n = make_inputs((2, 7), "float64", "torch", seed=rng)
    compiled, _ = _compile_and_capture(lambda c, u, n, t: ssd_toolkit.estimate(c, u, n, t, M))
    assert_close_to_reference(compiled(c, u, n, 300.0), _reference(c, u, n, 300.0)[0], "float64")
    assert_close_to_reference(compiled(c, u, n, 700.0), _reference(c, u, n, 700.0)[0], "float64")
    eager_torch, _ = _compile_and_capture(lambda c, u, n: ssd_toolkit.estimate(c, u, n, [1.0, 900.0], M, backend="torch"))
    assert_close_to_reference(eager_torch(c, u, n), _reference(c, u, n, [1.0, 900.0])[0], "float64")


def test_compile_traced_validation_errors(rng):
    c = torch.zeros(2, 3)
    with pytest.raises(Exception, match=r"noise: expected shape \[2, 3\]"):
        _compile_and_capture(lambda c: ssd_toolkit.estimate(c, c, c[:, :2], 1.0, M))[0](c)
    with pytest.raises(Exception, match="M: under torch.compile expected a Python number"):
        _compile_and_capture(lambda c: ssd_toolkit.estimate(c, c, c, 1.0, torch.tensor(M)))[0](c)


# ------------------------------------------------------------------------ GPU only
@pytest.fixture(params=PATHS)
def path(request):
    module = _module()
    module.cuda_set_path(request.param)
    yield request.param
    module.cuda_set_path("auto")


def _make(rng, shape, dtype, device="cuda", scale=1.0):
    return as_array(rng.standard_normal(shape) * scale, dtype, "torch", device)


def _mixed_t(rng, B):
    t = np.empty(B)
    t[::2] = rng.uniform(0, M, t[::2].shape)
    t[1::2] = rng.uniform(M + 1, 1000, t[1::2].shape)
    return t


def _poison_allocator(nbytes, device="cuda"):
    """Leaves a NaN-filled block in torch's caching allocator, so an output element the
    kernel fails to write shows up as NaN instead of a lucky zero."""
    junk = torch.full((max(nbytes, 1) // 4 + 64,), float("nan"), dtype=torch.float32, device=device)
    del junk


def _check(c, u, n, t, dtype, stats_too=True):
    _poison_allocator(c.numel() * c.element_size())
    E, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
    assert E.device == c.device and E.dtype == c.dtype and E.shape == c.shape
    E_ref, stats_ref = _reference(c, u, n, t.cpu().numpy() if isinstance(t, torch.Tensor) else t)
    assert_close_to_reference(E, E_ref, dtype)
    if stats_too:
        rtol = STATS_RTOL[dtype]
        for name in STAT_NAMES:
            got, ref = stats[name].cpu().numpy(), stats_ref[name]
            assert stats[name].device == c.device and stats[name].dtype == torch.float64
            # eps_tilde_norm is a difference of sums: its error scales with ||eps_cond||.
            atol = rtol * stats_ref["eps_cond_norm"] if name == "eps_tilde_norm" else 0.0
            bad = ~(np.abs(got - ref) <= rtol * np.abs(ref) + atol)
            assert not bad.any(), f"{name} [{dtype}]: got {got[bad]}, reference {ref[bad]}"
        np.testing.assert_array_equal(stats["mode_seeking"].cpu().numpy(), stats_ref["mode_seeking"])
    return E, stats


SHAPES = [(1, 1), (7, 1), (1, 3), (5, 97), (64, 13), (3, 1025), (2, 4, 64, 64), (64, 4, 16, 16), (1, 4, 256, 256)]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_parity_with_reference(dtype, shape, path, rng):
    c, u, n = (_make(rng, shape, dtype) for _ in range(3))
    _check(c, u, n, _mixed_t(rng, shape[0]), dtype)


@gpu
@pytest.mark.parametrize("dtype", ("float16", "float32", "float64"))
def test_misaligned_and_strided_views(dtype, path, rng):
    B, N = 6, 4 * 33
    flat = [_make(rng, (B * N + 1,), dtype) for _ in range(3)]
    c, u, n = (x[1:].view(B, N) for x in flat)  # contiguous, off 16-byte alignment
    _check(c, u, n, _mixed_t(rng, B), dtype)
    base = [_make(rng, (B, 4, 34), dtype) for _ in range(3)]
    c, u, n = (x[:, :, 1:] for x in base)  # non-contiguous: flattened by a copy
    _check(c, u, n, _mixed_t(rng, B), dtype)


@gpu
def test_empty_batches_and_samples(rng):
    for shape in ((0, 5), (3, 0)):
        c = torch.zeros(shape, device="cuda")
        E, stats = ssd_toolkit.estimate(c, c, c, 1.0, M, return_stats=True)
        assert E.shape == shape
        assert stats["scale"].shape == (shape[0],)
        if shape[0]:
            assert torch.equal(stats["scale"].cpu(), torch.zeros(3, dtype=torch.float64))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_deterministic(dtype, path, rng):
    shape = (8, 4, 64, 64) if dtype != "float64" else (4, 3, 100, 101)
    c, u, n = (_make(rng, shape, dtype) for _ in range(3))
    t = _mixed_t(rng, shape[0])
    bits = {"float16": torch.int16, "bfloat16": torch.int16, "float32": torch.int32, "float64": torch.int64}[dtype]
    first, stats0 = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
    for _ in range(5):
        again, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
        assert torch.equal(first.view(bits), again.view(bits))
        for name in STAT_NAMES:
            assert torch.equal(stats0[name].view(torch.int64), stats[name].view(torch.int64)), name


@gpu
@pytest.mark.parametrize("dtype", ("float16", "float32"))
def test_non_finite_values_stay_in_their_sample(dtype, path, rng):
    c, u, n = (_make(rng, (4, 3000), dtype) for _ in range(3))
    c[1, 17] = float("inf")
    u[2, 5] = float("nan")
    t = np.array([100.0, 100.0, 900.0, 100.0])  # sample 2 follows h elementwise
    E, _ = _check(c, u, n, t, dtype, stats_too=False)
    assert torch.isnan(E[1]).all()
    assert torch.isnan(E[2, 5]) and torch.isfinite(E[2, :5]).all()
    assert torch.isfinite(E[0]).all() and torch.isfinite(E[3]).all()


@gpu
@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("gap", (1e-2, 1e-3, 3e-4, 1e-5))
def test_near_collinearity_accuracy(dtype, gap, path, rng):
    """eps_cond = 3 noise + gap w, so ||eps_tilde||^2 / ||eps_cond||^2 ~ (gap/3)^2 (1e-5 to
    1e-11), above the 1e-12 degeneracy threshold. ||eps_tilde||^2 = ||c||^2 - <c,n>^2/||n||^2
    must be accurate relative to ||c||^2: float32 sums would be off by ~1e-7 ||c||^2 (the
    whole of ||eps_tilde||^2 at gap 1e-3), float64 sums by ~1e-15 ||c||^2."""
    B, N = 3, 4 * 64 * 64
    n = _make(rng, (B, N), dtype)
    w = _make(rng, (B, N), dtype)
    c = (3.0 * n.double() + gap * w.double()).to(n.dtype)
    u = _make(rng, (B, N), dtype)
    t = np.full(B, 10.0)
    E, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
    E_ref, stats_ref = _reference(c, u, n, t)
    et2 = stats["eps_tilde_norm"].cpu().numpy() ** 2
    err = np.abs(et2 - stats_ref["eps_tilde_norm"] ** 2) / stats_ref["eps_cond_norm"] ** 2
    assert err.max() < 1e-13, err
    assert (stats["scale"].cpu().numpy() > 0).all()
    # E's relative error from summation order alone is ~1e-16 / (gap/3)^2: compare E where
    # that is well under the dtype's rtol (float32: gap >= 3e-4; float64: gap = 1e-2).
    if (gap / 3) ** 2 > 1e-15 / TOLERANCES[dtype][0]:
        assert_close_to_reference(E, E_ref, dtype)


@gpu
def test_exactly_collinear_sample_gives_zero(rng):
    n = _make(rng, (2, 5000), "float32")
    c = 2.0 * n
    E, stats = ssd_toolkit.estimate(c, torch.zeros_like(c), n, 1.0, M, return_stats=True)
    assert torch.equal(E, torch.zeros_like(E))
    assert torch.equal(stats["scale"].cpu(), torch.zeros(2, dtype=torch.float64))


@gpu
def test_runs_on_the_current_side_stream(path, rng):
    """The inputs are produced on a side stream after a long device sleep; only a launch
    ordered on that stream (the current one) reads them after they are written."""
    shape = (16, 4, 64, 64)
    sources = [_make(rng, shape, "float32") for _ in range(3)]
    t = _mixed_t(rng, shape[0])
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        c, u, n = (torch.full(shape, float("nan"), device="cuda") for _ in range(3))
        torch.cuda._sleep(100_000_000)
        for dst, src in zip((c, u, n), sources):
            dst.copy_(src)  # device-to-device: asynchronous on `side`
        E = ssd_toolkit.estimate(c, u, n, t, M)
    side.synchronize()
    assert_close_to_reference(E, _reference(*sources, t)[0], "float32")


@gpu
@pytest.mark.parametrize("t_kind", ("scalar", "device"))
def test_cuda_graph_capture_and_replay(t_kind, path, rng):
    shape = (8, 4, 64, 64)
    c, u, n = (_make(rng, shape, "float32") for _ in range(3))
    t_dev = torch.tensor(_mixed_t(rng, shape[0]), device="cuda")
    t = 100.0 if t_kind == "scalar" else t_dev
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: per-device facts are queried and cached
        ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        E, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
    for _ in range(2):
        for x in (c, u, n):
            x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        t_host = 100.0 if t_kind == "scalar" else t_dev.cpu().numpy()
        E_ref, stats_ref = _reference(c, u, n, t_host)
        assert_close_to_reference(E, E_ref, "float32")
        np.testing.assert_allclose(stats["h_norm"].cpu().numpy(), stats_ref["h_norm"], rtol=1e-6)


@gpu
@pytest.mark.parametrize("mode", ("default", "reduce-overhead"))
def test_torch_compile_fullgraph_on_cuda(mode, rng):
    shape = (8, 4, 64, 64)
    c, u, n = (_make(rng, shape, "float16") for _ in range(3))
    t = torch.tensor(_mixed_t(rng, shape[0]), device="cuda")

    def step(c, u, n, t):
        E, stats = ssd_toolkit.estimate(c, u, n, t, M, return_stats=True)
        return (E.float() * 2.0), stats["r"]

    recorded, graphs = _compile_and_capture(step)
    recorded(c, u, n, t)
    assert any("ssd_toolkit.estimate" in str(node.target) for gm in graphs for node in gm.graph.nodes)
    compiled = torch.compile(step, fullgraph=True, mode=mode)
    for _ in range(3):
        E2, r = compiled(c, u, n, t)
    E_ref, stats_ref = _reference(c, u, n, t.cpu().numpy())
    assert_close_to_reference(E2 / 2.0, E_ref, "float16")
    np.testing.assert_allclose(r.cpu().numpy(), stats_ref["r"], rtol=1e-6)


@gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_data_on_a_non_current_device_and_mixed_devices(rng):
    c, u, n = (_make(rng, (3, 1000), "float32", device="cuda:1") for _ in range(3))
    with torch.cuda.device(0):
        E = ssd_toolkit.estimate(c, u, n, 10.0, M)
    assert E.device == torch.device("cuda:1")
    assert_close_to_reference(E, _reference(c, u, n, 10.0)[0], "float32")
    with pytest.raises(ValueError, match="noise: expected device cuda:1"):
        ssd_toolkit.estimate(c, u, n.to("cuda:0"), 10.0, M)


@gpu
def test_launch_plan_uses_clusters_on_hopper():
    module = _module()
    major, _ = torch.cuda.get_device_capability()
    plan = module.cuda_launch_plan(4 * 64 * 64, "float32", True)
    if major >= 9:
        assert plan.startswith("resident cluster=8"), plan
    assert module.cuda_launch_plan(97, "float32", True).startswith("resident cluster=1")
    assert "split" in module.cuda_launch_plan(3 * 512 * 512, "float32", True)


@gpu
def test_cupy_inputs_on_cupys_current_stream(rng):
    cupy = pytest.importorskip("cupy")
    shape = (4, 4, 32, 32)
    host = make_inputs(shape, "float32", seed=rng)
    t = _mixed_t(rng, shape[0])
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        c, u, n = (cupy.asarray(x) for x in host)
        E, stats = ssd_toolkit.estimate(c, u, n, cupy.asarray(t), M, return_stats=True)
        E_scalar = ssd_toolkit.estimate(c, u, n, 10.0, M)
    stream.synchronize()
    assert isinstance(E, cupy.ndarray) and E.dtype == np.float32 and E.shape == shape
    assert isinstance(stats["scale"], cupy.ndarray)
    E_ref, stats_ref = _reference(*host, t)
    assert_close_to_reference(cupy.asnumpy(E), E_ref, "float32")
    assert_close_to_reference(cupy.asnumpy(E_scalar), _reference(*host, 10.0)[0], "float32")
    np.testing.assert_array_equal(cupy.asnumpy(stats["mode_seeking"]), stats_ref["mode_seeking"])


@gpu
@pytest.mark.parametrize("dtype", ("float16", "float32", "float64"))
def test_a_misaligned_address_is_a_value_error_and_the_context_survives(dtype, rng):
    """One byte past an element boundary: ValueError naming the argument, nothing launched,
    and the next call on the same device still works (no cudaErrorMisalignedAddress)."""
    module = _module()
    B, N = 2, 4 * 64 * 64
    bufs = [torch.zeros(B * N * 8 + 64, dtype=torch.uint8, device="cuda") for _ in range(4)]
    ptrs = [b.data_ptr() for b in bufs]
    stream = torch.cuda.current_stream().cuda_stream
    for i, name in enumerate(("eps_cond", "eps_uncond", "noise", "out")):
        bad = list(ptrs)
        bad[i] += 1
        with pytest.raises(ValueError, match=f"{name}: expected an address aligned to its {dtype} elements"):
            module.estimate_cuda(*bad, 0, 1.0, 0, B, N, dtype, M, stream)
    torch.cuda.synchronize()
    c, u, n = (_make(rng, (B, N), dtype) for _ in range(3))
    _check(c, u, n, _mixed_t(rng, B), dtype)


@gpu
@pytest.mark.parametrize("variant", ("threads256", "relaxed_arrive", "threads256,relaxed_arrive"))
def test_launch_plan_variants_match_the_reference_and_the_emulation(variant, rng):
    """The variants bench_cuda.py times beside today's plan (ssd_launch_plan.h) are correct
    on this GPU and take the emulation's plan; the relaxed arrive changes no bit."""
    import cuda_emulation_build  # noqa: PLC0415 - tests/ helper; builds the emulation

    emu = cuda_emulation_build.load()
    module = _module()
    props = torch.cuda.get_device_properties(0)
    device = {"major": props.major, "sms": props.multi_processor_count, "binary_version": 10 * props.major + props.minor,
              "ptx_version": 90 if props.major >= 9 else 10 * props.major + props.minor,
              "max_cluster": 16 if props.major >= 9 else 1}
    try:
        for dtype, shape in (("float32", (8, 4, 64, 64)), ("float32", (4, 4, 128, 128)), ("float16", (3, 4, 64, 64))):
            c, u, n = (_make(rng, shape, dtype) for _ in range(3))
            t = _mixed_t(rng, shape[0])
            module.cuda_set_variant("default")
            E0 = ssd_toolkit.estimate(c, u, n, t, M)
            module.cuda_set_variant(variant)
            N = int(np.prod(shape[1:]))
            plan, emulated = module.cuda_launch_plan(N, dtype, True), emu.plan(N, dtype, True, "auto", 0, device, variant)
            if "cluster=16" not in emulated:
                assert plan == emulated, (plan, emulated)
            E, _ = _check(c, u, n, t, dtype)
            if variant == "relaxed_arrive":
                assert torch.equal(E.view(torch.int16 if dtype == "float16" else torch.int32),
                                   E0.view(torch.int16 if dtype == "float16" else torch.int32))
    finally:
        module.cuda_set_variant("default")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_agrees_with_the_cpu_emulation(dtype, path, rng):
    """The kernels on this GPU and their CPU emulation (tests/kernels/test_cuda_emulation.py) take
    the same launch plan and give the same bits: nvcc builds with --fmad=false and the
    emulation with -ffp-contract=off, so neither fuses a*b+c that the source does not
    (test_sass.py reads the SASS); fma() in the source is an FMA on both."""
    import cuda_emulation_build  # noqa: PLC0415 - tests/ helper; builds the emulation

    emu = cuda_emulation_build.load()
    props = torch.cuda.get_device_properties(0)
    arch = 10 * props.major + props.minor
    device = {"major": props.major, "sms": props.multi_processor_count, "binary_version": arch,
              "ptx_version": arch if props.major < 9 else 90, "max_cluster": 16 if props.major >= 9 else 1}
    bits = {"float16": np.int16, "bfloat16": np.int16, "float32": np.int32, "float64": np.int64}[dtype]
    for shape in ((5, 97), (2, 4 * 64 * 64), (1, 4 * 64 * 128), (2, 3 * 8192 + 1234)):
        N = shape[1]
        plan = _module().cuda_launch_plan(N, dtype, True)
        emulated_plan = emu.plan(N, dtype, True, path, 0, device)
        if "cluster=16" not in emulated_plan:  # 16 depends on what the occupancy query allows
            assert plan == emulated_plan, (plan, emulated_plan)
        c, u, n = (_make(rng, shape, dtype) for _ in range(3))
        t = _mixed_t(rng, shape[0])
        E = ssd_toolkit.estimate(c, u, n, t, M)
        host = [x.cpu().view(torch.int16).numpy() if dtype == "bfloat16" else x.cpu().numpy() for x in (c, u, n)]
        out = np.empty_like(host[0])
        t64 = np.ascontiguousarray(t, dtype=np.float64)
        emu.estimate(*(x.ctypes.data for x in host), out.ctypes.data, t64.ctypes.data, 0.0, 0, *shape, dtype, M,
                     path, 0, device)
        gpu_bits = (E.cpu().view(torch.int16).numpy() if dtype == "bfloat16" else E.cpu().numpy()).view(bits)
        ulps = np.abs(gpu_bits.astype(np.int64) - out.view(bits).astype(np.int64))
        assert ulps.max() == 0, (f"{dtype} {shape} {plan}: {int((ulps > 0).sum())} elements differ, up to "
                                 f"{int(ulps.max())} ulp")
