"""The CUDA kernel's first-use self-test (ssd_toolkit/frameworks/torch/selftest.py) on the CPU.

The binding is replaced by the CPU emulation of the kernels (host tensors stand in for
device ones), as tests/kernels/test_cuda.py fakes launches; a planted error in the result
stands in for a broken kernel. The sizes are checked against the launch planner through the
emulation's ``plan`` for a pretend H100 (sm_90): the self-test must reach the 16-byte vector
path, the split path and more than one pack per thread.
"""

import contextlib
import ctypes
import types
import warnings

import numpy as np
import pytest
import torch

from ssd_toolkit import frameworks
from ssd_toolkit.engine import extension as _extension
from ssd_toolkit.frameworks.torch import cuda as torch_cuda
from ssd_toolkit.frameworks.torch import selftest
from ssd_toolkit.reference import STAT_NAMES, estimate_reference
from tolerances import assert_close_to_reference

M = 500.0
DTYPES = ("float16", "bfloat16", "float32", "float64")
SMALL_SIZES = (37, 4096)  # the emulation runs every launch on the CPU: small sizes for the policy tests


def _emulated_binding(emu, plant=None):
    """estimate_cuda backed by the CPU emulation; ``plant(out_ptr, B, N, dtype)`` may corrupt
    the result after the launch. Its cuda_launch_plan is the emulation's (a pretend H100)."""
    launches = []

    def estimate_cuda(c, u, n, out, t_ptr, t_scalar, stats_ptr, B, N, dtype, M_, stream):
        launches.append((B, N, dtype))
        emu.estimate(c, u, n, out, t_ptr, t_scalar, stats_ptr, B, N, dtype, M_)
        if plant is not None:
            plant(out, B, N, dtype)

    binding = types.SimpleNamespace(estimate_cuda=estimate_cuda, compiled_with_cuda=lambda: True,
                                    cuda_launch_plan=lambda N, dtype, aligned: emu.plan(N, dtype, aligned))
    return binding, launches


def _plant_float32(out, B, N, dtype):  # a wrong first element in every float32 result
    if dtype == "float32":
        ctypes.c_float.from_address(out).value += 1.0


@pytest.fixture
def emulated_device(monkeypatch):
    import cuda_emulation_build  # noqa: PLC0415 - tests/ helper

    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)  # host tensors: device index None
    monkeypatch.setattr(torch_cuda, "_raw_stream", lambda index: 0)
    monkeypatch.setattr(selftest, "stream", lambda device: 0)
    monkeypatch.setattr(selftest, "_RESULTS", {})
    monkeypatch.setattr(selftest, "_COVERED", [])
    monkeypatch.setattr(selftest, "SIZES", SMALL_SIZES)
    monkeypatch.delenv("SSD_TOOLKIT_CUDA_SELFTEST", raising=False)
    return cuda_emulation_build.load()


def _reference(c, u, n, t):
    B = c.shape[0]
    return estimate_reference(*(frameworks.to_host_float64(x.reshape(B, -1)) for x in (c, u, n)), t, M)


def _glue_call(rng, t=(1.0, 900.0, 2.0, 999.0)):
    """One launch through the glue (``launch_torch``, the self-test's call site) on [4, 15]
    float32 rows: ``((E, stats by name), inputs)``."""
    c, u, n = (torch.from_numpy(rng.standard_normal((4, 15))).float() for _ in range(3))
    out, stats = torch.empty_like(c), torch.empty((len(STAT_NAMES), 4), dtype=torch.float64)
    torch_cuda.launch_torch(c, u, n, out, torch.tensor(t, dtype=torch.float64), 0.0, M, stats, 4, 15)
    return (out, dict(zip(STAT_NAMES, stats))), (c, u, n)


@contextlib.contextmanager
def warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------------------------------ policy
def test_passes_on_the_emulated_kernel_runs_once_and_reports_what_it_covered(emulated_device, monkeypatch, rng):
    binding, launches = _emulated_binding(emulated_device)
    monkeypatch.setattr(_extension, "load", lambda: binding)
    with warnings_as_errors():
        (E, stats), (c, u, n) = _glue_call(rng)
        _glue_call(rng)
    tested = {(N, dtype) for B, N, dtype in launches if B == selftest.BATCH and N in SMALL_SIZES}
    assert tested == {(N, d) for N in SMALL_SIZES for d in DTYPES}  # once, every dtype and size
    assert len(launches) == len(tested) + 2  # then the two real calls
    E_ref, _ = _reference(c, u, n, np.array([1.0, 900.0, 2.0, 999.0]))
    assert_close_to_reference(E, E_ref, "float32")
    covered = selftest.covered()
    assert sorted((e["dtype"], e["N"]) for e in covered) == sorted((d, N) for d in DTYPES for N in SMALL_SIZES)
    for entry in covered:  # the plan each launch took, as the planner describes it
        assert entry["plan"] == emulated_device.plan(entry["N"], entry["dtype"], True), entry
        assert entry["device"] == "cpu" and entry["error"] <= selftest.TOLERANCE[getattr(torch, entry["dtype"])]
    assert {"vec=16B", "vec=scalar", "resident"} <= set(selftest.covered_paths())


def test_a_mismatch_warns_once_and_that_device_uses_eager_torch(emulated_device, monkeypatch, rng):
    binding, launches = _emulated_binding(emulated_device, _plant_float32)
    monkeypatch.setattr(_extension, "load", lambda: binding)
    with pytest.warns(RuntimeWarning, match=r"CUDA kernel disagrees with PyTorch eager on cpu \(float32, \[4, 37\], "
                                            r"plan resident.*backend='torch' from now on.*SSD_TOOLKIT_CUDA_SELFTEST=0"):
        (E, stats), (c, u, n) = _glue_call(rng)
    count = len(launches)
    with warnings_as_errors():  # once per device
        _glue_call(rng)
    assert len(launches) == count  # the kernel is not launched again on that device
    E_ref, stats_ref = _reference(c, u, n, np.array([1.0, 900.0, 2.0, 999.0]))
    assert_close_to_reference(E, E_ref, "float32")  # the eager result, not the planted one
    np.testing.assert_allclose(stats["scale"].numpy(), stats_ref["scale"], rtol=1e-6)


def test_strict_mode_makes_a_mismatch_an_error(emulated_device, monkeypatch, rng):
    """What the GPU check sets: a broken kernel fails the call instead of hiding behind eager ops."""
    binding, launches = _emulated_binding(emulated_device, _plant_float32)
    monkeypatch.setattr(_extension, "load", lambda: binding)
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_SELFTEST", "strict")
    with warnings_as_errors(), pytest.raises(selftest.SelfTestError, match=r"float32, \[4, 37\].*strict"):
        _glue_call(rng)
    assert ("float32", 37) in {(e["dtype"], e["N"]) for e in selftest.covered()}


def test_strict_mode_passes_a_correct_kernel(emulated_device, monkeypatch, rng):
    binding, launches = _emulated_binding(emulated_device)
    monkeypatch.setattr(_extension, "load", lambda: binding)
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_SELFTEST", "strict")
    with warnings_as_errors():
        (E, _), (c, u, n) = _glue_call(rng)
    assert len(launches) == len(DTYPES) * len(SMALL_SIZES) + 1
    assert_close_to_reference(E, _reference(c, u, n, np.array([1.0, 900.0, 2.0, 999.0]))[0], "float32")


def test_it_can_be_switched_off(emulated_device, monkeypatch, rng):
    binding, launches = _emulated_binding(emulated_device, lambda *a: None)
    monkeypatch.setattr(_extension, "load", lambda: binding)
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_SELFTEST", "0")
    _glue_call(rng)
    assert len(launches) == 1 and selftest.covered() == []


def test_an_unknown_mode_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(selftest, "_RESULTS", {})
    monkeypatch.setenv("SSD_TOOLKIT_CUDA_SELFTEST", "on")
    with pytest.raises(ValueError, match=r"^SSD_TOOLKIT_CUDA_SELFTEST: expected one of 1, strict, 0, got 'on'$"):
        selftest.passed(object(), torch.device("cpu"))


# ------------------------------------------------------------------------ the sizes
def test_the_sizes_reach_the_vector_split_and_multi_pack_paths_on_an_h100():
    """The launch planner (through the emulation, a pretend H100 with sm_90 code) for each
    self-test size: in every dtype the self-test runs the 16-byte vector path, the split path
    and a resident plan with more than one pack per thread, and the scalar path."""
    import cuda_emulation_build  # noqa: PLC0415 - tests/ helper

    emu = cuda_emulation_build.load()
    for dtype in DTYPES:
        plans = [emu.plan(N, dtype, True) for N in selftest.SIZES]
        assert any("vec=16B" in p for p in plans), (dtype, plans)
        assert any(p.startswith("split") for p in plans), (dtype, plans)
        assert any("vec=scalar" in p for p in plans), (dtype, plans)
        assert any(p.startswith("resident") and ("vpt=2" in p or "vpt=4" in p) for p in plans), (dtype, plans)
    entries = [{"plan": emu.plan(N, d, True)} for d in DTYPES for N in selftest.SIZES]
    assert set(selftest.covered_paths(entries)) == {"vec=16B", "vec=scalar", "split", "resident", "cluster", "packs>1"}
