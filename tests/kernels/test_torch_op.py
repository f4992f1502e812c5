"""``torch.ops.ssd_toolkit.estimate`` registered from C++ (csrc/torch/, docs/kernels.md "The torch op").

The op library must be loaded before anything defines an op of the same name, so the tests
run in a fresh interpreter: ``test_torch_op_in_a_fresh_process`` (re)builds the library and
runs this file's tests not marked ``gpu`` again there (``SSD_TOOLKIT_TORCH_OP_CHILD=1``), where
it is loaded first; ``test_torch_op_on_a_gpu_in_a_fresh_process`` (marked ``gpu``, so
``pytest -m gpu`` selects it) runs the ``gpu`` ones, which need a CUDA device and a CUDA build
of ``ssd_toolkit._C``.
"""

import os
import shutil
import subprocess
import sys

import pytest

CHILD = os.environ.get("SSD_TOOLKIT_TORCH_OP_CHILD") == "1"

if not CHILD:

    def run_child(marks):
        """Builds the library (ninja: only what changed) and runs this file's tests selected by
        ``marks`` in a fresh interpreter; asserts they passed."""
        pytest.importorskip("torch")
        from ssd_toolkit.engine import torch_op_build  # noqa: PLC0415

        torch_op_build.build(quiet=True)
        env = {**os.environ, "SSD_TOOLKIT_TORCH_OP_CHILD": "1"}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-m", marks, __file__]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

    def test_torch_op_in_a_fresh_process():
        run_child("not gpu")

    def test_the_library_links_only_torchs_stable_c_abi():
        """No C++ symbol of c10/ATen/torch (those tie a binary to one torch version), and the
        CUDA-only shim function is looked up at run time, so a CPU-only torch loads it."""
        pytest.importorskip("torch")
        if shutil.which("nm") is None:
            pytest.skip("needs nm (binutils)")
        from ssd_toolkit.engine import torch_op_build  # noqa: PLC0415

        path = torch_op_build.build(quiet=True)
        listing = subprocess.run(["nm", "-D", "--undefined-only", str(path)], capture_output=True, text=True,
                                 check=True).stdout  # fmt: skip
        names = {line.split()[-1].split("@")[0] for line in listing.splitlines() if line.strip()}
        cxx = sorted(n for n in names if n.startswith(("_ZN3c10", "_ZNK3c10", "_ZN2at", "_ZNK2at", "_ZN5torch")))
        assert not cxx, cxx
        assert {"torch_call_dispatcher", "torch_library_impl", "aoti_torch_empty_strided"} <= names
        assert "aoti_torch_get_current_cuda_stream" not in names

    @pytest.mark.gpu
    def test_torch_op_on_a_gpu_in_a_fresh_process():
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        run_child("gpu")

else:
    import numpy as np
    import torch

    from ssd_toolkit.engine import torch_op_build
    from ssd_toolkit.reference import STAT_NAMES, estimate_reference
    from ssd_inputs import make_inputs
    from tolerances import STATS_RTOL, assert_close_to_reference

    # torch.compile's tracing imports torch.jit code that warns about its own deprecation
    pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    LOADED = torch_op_build.load()  # before anything imports ssd_toolkit.frameworks.torch
    M = 500.0
    DTYPES = ("float16", "bfloat16", "float32", "float64")
    HAS_GPU = torch.cuda.is_available()
    gpu = pytest.mark.gpu

    def op(*args):
        return torch.ops.ssd_toolkit.estimate(*args)

    def test_library_loads():
        assert LOADED, torch_op_build.reason()

    def reference(c, u, n, t):
        """The float64 reference on the rows of the (rounded) inputs; t: [B] float64."""
        rows = [x.detach().cpu().double().reshape(x.shape[0], -1).numpy() for x in (c, u, n)]
        return estimate_reference(*rows, t, M)

    def check(E, stats, c, u, n, t64, dtype, return_stats=True):
        E_ref, named = reference(c, u, n, t64)
        assert E.shape == c.shape and E.dtype == c.dtype and E.device == c.device
        assert_close_to_reference(E.cpu(), E_ref, dtype)
        assert stats.dtype == torch.float64 and stats.device == c.device
        if not return_stats:
            assert stats.shape == (6, 0)
            return
        assert stats.shape == (6, c.shape[0])
        got = stats.cpu().numpy()
        rtol = STATS_RTOL[dtype]
        for row, name in enumerate(STAT_NAMES):  # eps_tilde_norm: a difference of sums (docs/kernels.md)
            atol = rtol * float(named["eps_cond_norm"].max()) if name == "eps_tilde_norm" else 0.0
            np.testing.assert_allclose(got[row], named[name], rtol=rtol, atol=atol, err_msg=name)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", [(3, 4, 5, 6), (4, 33), (5,)])
    def test_vector_t_matches_reference(dtype, shape):
        c, u, n = make_inputs(shape, dtype, "torch", seed=1, cond_noise_mix=(0.6, 0.8))
        t = torch.tensor([100, 900, 500, 501, 3][: shape[0]])  # both branches and t == M; int64
        E, stats = op(c, u, n, t, 0.0, M, True)
        check(E, stats, c, u, n, t.double().numpy(), dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("t_scalar", [10.0, 900.0])
    def test_scalar_t_matches_reference(dtype, t_scalar):
        c, u, n = make_inputs((2, 4, 8, 8), dtype, "torch", seed=2)
        for return_stats in (True, False):
            E, stats = op(c, u, n, None, t_scalar, M, return_stats)
            check(E, stats, c, u, n, np.full(2, t_scalar), dtype, return_stats)

    @pytest.mark.parametrize("t_dtype", [torch.int32, torch.uint8, torch.float16, torch.float32, torch.float64])
    def test_t_of_any_real_dtype_is_read_as_float64(t_dtype):
        c, u, n = make_inputs((3, 40), "float32", "torch", seed=3)
        t = torch.tensor([10, 250, 200], dtype=t_dtype)
        E, _ = op(c, u, n, t, 0.0, 200.0, True)
        E_ref, _ = estimate_reference(*(x.double().numpy() for x in (c, u, n)), t.double().numpy(), 200.0)
        assert_close_to_reference(E, E_ref, "float32")
        assert torch.equal(E, op(c, u, n, t.double(), 0.0, 200.0, True)[0])

    def test_non_contiguous_inputs_are_read_as_their_values():
        c, u, n = (x.transpose(1, 2) for x in make_inputs((2, 6, 5), "float32", "torch", seed=4))
        t = torch.tensor([10.0, 20.0, 900.0, 30.0])[::2]  # strided t
        assert not c.is_contiguous() and not t.is_contiguous()
        E, stats = op(c, u, n, t, 0.0, M, True)
        E2, stats2 = op(*(x.contiguous() for x in (c, u, n)), t.contiguous(), 0.0, M, True)
        assert E.shape == c.shape and E.is_contiguous()
        assert torch.equal(E, E2) and torch.equal(stats, stats2)

    def test_empty_batch_and_empty_rows():
        for shape in [(0, 7), (3, 0)]:
            c, u, n = (torch.zeros(shape) for _ in range(3))
            E, stats = op(c, u, n, None, 1.0, M, True)
            assert E.shape == shape and stats.shape == (6, shape[0])

    C, U, N = (torch.ones(2, 3) for _ in range(3))
    BAD = {
        "uncond smaller (issue 34 C)": ((C, torch.ones(1, 3), N, None, 1.0, M, False),
                                        r"^eps_uncond: expected shape \[2, 3\] \(eps_cond's\), got \[1, 3\]$"),
        "noise longer rows": ((C, U, torch.ones(2, 4), None, 1.0, M, False),
                              r"^noise: expected shape \[2, 3\] \(eps_cond's\), got \[2, 4\]$"),
        "same numel, other shape": ((C, torch.ones(3, 2), N, None, 1.0, M, False),
                                    r"^eps_uncond: expected shape \[2, 3\] \(eps_cond's\), got \[3, 2\]$"),
        "dtype mismatch": ((C, U, N.double(), None, 1.0, M, False),
                           r"^noise: expected dtype float32 \(eps_cond's\), got float64$"),
        "integer data": ((C.long(), U, N, None, 1.0, M, False),
                         r"^eps_cond: expected a floating dtype in \('float16', 'bfloat16', 'float32', 'float64'\), "
                         r"got int64$"),
        "complex data": ((C, U.to(torch.complex64), N, None, 1.0, M, False),
                         r"^eps_uncond: expected a floating dtype in .*, got complex64$"),
        "0-d": ((torch.tensor(1.0), U, N, None, 1.0, M, False),
                r"^eps_cond: expected shape \[B, \.\.\.\] with at least one dimension, got a 0-d tensor$"),
        "device mismatch": ((C, U, N.to("meta"), None, 1.0, M, False),
                            r"^noise: expected device cpu \(eps_cond's\), got meta$"),
        "sparse": ((C.to_sparse(), U, N, None, 1.0, M, False), r"^eps_cond: expected a dense \(strided\) tensor"),
        "t too short": ((C, U, N, torch.ones(1), 0.0, M, False),
                        r"^t: expected shape \[2\] \(eps_cond's batch size\), got \[1\]$"),
        "t 0-d": ((C, U, N, torch.tensor(3.0), 0.0, M, False),
                  r"^t: expected shape \[2\] \(eps_cond's batch size\), got \[\]$"),
        "t 2-d": ((C, U, N, torch.ones(2, 1), 0.0, M, False),
                  r"^t: expected shape \[2\] \(eps_cond's batch size\), got \[2, 1\]$"),
        "t bool": ((C, U, N, torch.ones(2, dtype=torch.bool), 0.0, M, False),
                   r"^t: expected a real \(integer or floating\) dtype, got bool$"),
        "t complex": ((C, U, N, torch.ones(2, dtype=torch.complex64), 0.0, M, False),
                      r"^t: expected a real \(integer or floating\) dtype, got complex64$"),
        "t elsewhere": ((C, U, N, torch.ones(2, device="meta"), 0.0, M, False),
                        r"^t: expected device cpu \(eps_cond's\), got meta$"),
        "M nan": ((C, U, N, None, 1.0, float("nan"), False), r"^M: expected a finite number, got nan$"),
        "t nan (CPU)": ((C, U, N, torch.tensor([1.0, float("nan")]), 0.0, M, False),
                        r"^t: expected finite timesteps, got t\[1\]=nan$"),
        "t_scalar inf": ((C, U, N, None, float("inf"), M, False), r"^t_scalar: expected a finite number, got inf$"),
    }

    @pytest.mark.parametrize("case", list(BAD))
    def test_bad_input_raises_one_line_naming_the_argument(case):
        args, message = BAD[case]
        with pytest.raises(ValueError, match=message):
            op(*args)

    @pytest.mark.parametrize("case", ["uncond smaller (issue 34 C)", "t too short", "dtype mismatch"])
    def test_bad_input_raises_on_meta_and_fake_tensors(case):
        from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: PLC0415

        args, message = BAD[case]
        meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(ValueError, match=message):
            op(*meta)
        with FakeTensorMode() as mode:
            fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            with pytest.raises(ValueError, match=message):
                op(*fake)

    def test_meta_and_fake_tensors_get_the_output_shapes():
        from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode  # noqa: PLC0415

        c, u, n = (torch.empty(3, 4, 5, dtype=torch.bfloat16, device="meta") for _ in range(3))
        E, stats = op(c, u, n, torch.empty(3, device="meta"), 0.0, M, True)
        assert (E.shape, E.dtype, E.device.type) == ((3, 4, 5), torch.bfloat16, "meta")
        assert (stats.shape, stats.dtype) == ((6, 3), torch.float64)
        assert op(c, u, n, None, 1.0, M, False)[1].shape == (6, 0)
        with FakeTensorMode() as mode:
            fc, fu, fn = (mode.from_tensor(torch.empty(2, 7)) for _ in range(3))
            E, stats = op(fc, fu, fn, None, 1.0, M, True)
            assert isinstance(E, FakeTensor) and E.shape == (2, 7) and stats.shape == (6, 2)

    def test_compile_fullgraph_matches_eager():
        torch._dynamo.reset()

        def step(c, u, n, t):
            E, stats = torch.ops.ssd_toolkit.estimate(c, u, n, t, 0.0, M, True)
            return (E * 2.0).sum(), stats

        c, u, n = make_inputs((2, 4, 8, 8), "float32", "torch", seed=5)
        t = torch.tensor([10.0, 900.0])
        compiled = torch.compile(step, fullgraph=True)
        loss, stats = compiled(c, u, n, t)
        loss_e, stats_e = step(c, u, n, t)
        torch.testing.assert_close(loss, loss_e)
        assert torch.equal(stats, stats_e)

    def test_compile_fullgraph_bad_input_error_names_the_argument():
        torch._dynamo.reset()

        def bad(c, u, n):
            return torch.ops.ssd_toolkit.estimate(c, u[:1], n, None, 1.0, M, False)[0]

        with pytest.raises(Exception, match=r"eps_uncond: expected shape \[2, 3\] \(eps_cond's\), got \[1, 3\]"):
            torch.compile(bad, fullgraph=True)(C, U, N)

    def test_no_gradient_result_is_a_constant():
        c, u, n = (x.requires_grad_() for x in make_inputs((2, 9), "float32", "torch", seed=6))
        E, stats = op(c, u, n, torch.tensor([1.0, 900.0]), 0.0, M, True)
        assert E.grad_fn is None and not E.requires_grad and stats.grad_fn is None
        latents = torch.randn(2, 9, requires_grad=True)
        (E * latents).sum().backward()  # the SDS pattern: the estimate is a constant target
        assert torch.equal(latents.grad, E)
        assert c.grad is None and u.grad is None and n.grad is None
        grad = torch.func.grad(lambda x: (op(x, u, n, None, 1.0, M, False)[0] * x).sum())(c.detach())
        assert torch.equal(grad, op(c, u, n, None, 1.0, M, False)[0])

    def test_grad_mode_is_restored_after_an_error():
        assert torch.is_grad_enabled()
        with pytest.raises(ValueError):
            op(C, U[:1], N, None, 1.0, M, False)
        assert torch.is_grad_enabled()
        with torch.no_grad():
            op(C, U, N, None, 1.0, M, False)
            assert not torch.is_grad_enabled()

    def test_an_unbound_library_says_how_to_load_it():
        code = (
            "import torch\n"
            f"torch.ops.load_library({str(torch_op_build.library_path())!r})\n"
            "x = torch.ones(1, 2)\n"
            "try:\n    torch.ops.ssd_toolkit.estimate(x, x, x, None, 1.0, 2.0, False)\n"
            "except RuntimeError as e:\n    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
        assert "not bound to the compiled core; load it with ssd_toolkit.engine.torch_op_build.load()" in out

    def test_an_op_of_the_same_name_defined_first_is_refused_not_fatal():
        code = (
            "import ctypes, torch\n"
            "@torch.library.custom_op('ssd_toolkit::estimate', mutates_args=())\n"
            "def f(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | None,\n"
            "      t_scalar: float, M: float, return_stats: bool) -> tuple[torch.Tensor, torch.Tensor]:\n"
            "    return eps_cond.clone(), eps_cond.new_empty(6, 0)\n"
            "import ssd_toolkit._C as core\n"
            "from ssd_toolkit.engine import torch_op_build as b\n"
            "print(b.load(), b.reason())\n"
            "torch.ops.load_library(str(b.library_path()))  # past the check: the registration fails, kept\n"
            "bind = ctypes.CDLL(str(b.library_path())).ssd_toolkit_torch_op_bind\n"
            "bind.argtypes, bind.restype = [ctypes.c_void_p], ctypes.c_char_p\n"
            "print(bind(core.core_table()).decode())\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        first, second = result.stdout.splitlines()[-2:]
        assert first == "False an op ssd_toolkit::estimate is already defined in this process (load the library first)"
        assert second.startswith("registering ssd_toolkit ops failed at def estimate (is an op ssd_toolkit::estimate "
                                 "already defined")

    def test_load_keeps_the_reason_when_the_library_is_missing(monkeypatch, tmp_path):
        monkeypatch.setattr(torch_op_build, "library_path", lambda: tmp_path / "_torch_ops.so")
        ok, why = torch_op_build._load()
        assert not ok and why == "_torch_ops.so is not built (python -m ssd_toolkit.engine.torch_op_build)"

    # ------------------------------------------------------------------ needs a GPU
    @gpu
    @pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_cuda_matches_reference_on_the_current_stream(dtype):
        import ssd_toolkit._C as core  # noqa: PLC0415

        if not core.compiled_with_cuda():
            pytest.skip("ssd_toolkit._C was built without CUDA")
        c, u, n = make_inputs((3, 4, 16, 16), dtype, "torch", seed=7, device="cuda", cond_noise_mix=(0.6, 0.8))
        t = torch.tensor([10, 900, 500], device="cuda")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            E, stats = op(c, u, n, t, 0.0, M, True)
            E_s, _ = op(c, u, n, None, 900.0, M, False)
        stream.synchronize()
        check(E, stats, c, u, n, np.array([10.0, 900.0, 500.0]), dtype)
        check(E_s, torch.empty(6, 0, dtype=torch.float64, device="cuda"), c, u, n, np.full(3, 900.0), dtype, False)
        strided = [x.transpose(2, 3) for x in (c, u, n)]
        E_t, _ = op(*strided, t, 0.0, M, False)
        check(E_t, torch.empty(6, 0, dtype=torch.float64, device="cuda"), *strided, np.array([10.0, 900.0, 500.0]),
              dtype, False)

    @gpu
    @pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
    def test_cuda_checks_and_compile():
        c, u, n = (torch.ones(2, 3, device="cuda") for _ in range(3))
        with pytest.raises(ValueError, match=r"^t: expected device cuda:0 \(eps_cond's\), got cpu$"):
            op(c, u, n, torch.ones(2), 0.0, M, False)
        with pytest.raises(ValueError, match=r"^noise: expected device cuda:0 \(eps_cond's\), got cpu$"):
            op(c, u, n.cpu(), None, 1.0, M, False)
        with pytest.raises(ValueError, match=r"^eps_uncond: expected shape \[2, 3\] \(eps_cond's\), got \[1, 3\]$"):
            op(c, u[:1], n, None, 1.0, M, False)
        torch._dynamo.reset()
        f = torch.compile(lambda c, u, n: op(c, u, n, None, 1.0, M, True), fullgraph=True)
        E, stats = f(*make_inputs((2, 4, 8, 8), "float32", "torch", seed=8, device="cuda"))
        assert E.device.type == "cuda" and stats.shape == (6, 2)
