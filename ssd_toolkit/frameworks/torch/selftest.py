"""The CUDA kernel's first-use self-test (a guard for an architecture it has not run on).

The first launch on each device first runs, for every dtype and every size in ``SIZES``, a
random batch through the kernel and compares it with PyTorch eager (float64 sums) within the
dtype's tolerance, relative to each sample's rms. The sizes reach the kernel's launch paths
on an H100-class device (csrc/cuda/ssd_launch_plan.h, csrc/cuda/NOTES.md):

* 37 (odd): scalar access, one block per sample;
* 65536 (4x128x128): 16-byte vector access, 4 packs per thread in fp32 and 2 in fp16/bf16,
  clusters of 8 (fp64: 4 packs, clusters of 16 where the device allows them, else split);
* 786432 (3x512x512): the split path in every dtype (no resident plan holds it), vector access.

``SSD_TOOLKIT_CUDA_SELFTEST`` picks what a failure does:
  ``1`` (default)  warn once with the numbers; that device uses eager PyTorch from then on;
  ``strict``       raise ``SelfTestError`` (the GPU check sets it: nothing may be masked);
  ``0``            no self-test (the kernel is always used).
``covered()`` lists the launch plans the self-tests of this process ran (the check prints it).
"""

from __future__ import annotations

import os
import warnings

import torch

SIZES = (37, 65536, 786432)
BATCH = 4
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
MODES = ("1", "strict", "0")
_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64"}

_RESULTS = {}  # device -> True (the kernel agrees with eager PyTorch) or False (eager ops used)
_COVERED = []  # {"device", "dtype", "N", "plan", "error"} of every self-test launch


class SelfTestError(RuntimeError):
    """The kernel disagreed with PyTorch eager under SSD_TOOLKIT_CUDA_SELFTEST=strict."""


def mode():
    """The self-test policy from SSD_TOOLKIT_CUDA_SELFTEST ("1", "strict" or "0").

    Raises:
        ValueError: any other value.
    """
    value = os.environ.get("SSD_TOOLKIT_CUDA_SELFTEST", "1").strip() or "1"
    if value not in MODES:
        raise ValueError(f"SSD_TOOLKIT_CUDA_SELFTEST: expected one of 1, strict, 0, got {value!r}")
    return value


def stream(device):
    """The current ``cudaStream_t`` of ``device`` as an int (the self-test runs once per device:
    the public query is fast enough; tests replace it)."""
    return torch.cuda.current_stream(device).cuda_stream


def passed(module, device):
    """Whether launches on ``device`` may use the kernel; the first call runs the self-test.

    Raises:
        SelfTestError: a mismatch under SSD_TOOLKIT_CUDA_SELFTEST=strict.
    """
    result = _RESULTS.get(device)
    if result is None:
        policy = mode()
        result = True if policy == "0" else run(module, device, strict=policy == "strict")
        _RESULTS[device] = result
    return result


def covered():
    """The launch plans the self-tests of this process ran: one dict per dtype and size with
    the device, dtype, N, the plan (``cuda_launch_plan``'s text, or "" where the module
    cannot say) and the relative error."""
    return [dict(entry) for entry in _COVERED]


def covered_paths(entries=None):
    """The kinds of launch the self-tests reached: a subset of "vec=16B", "vec=scalar",
    "split", "resident", "cluster", "packs>1", from the plans of ``entries`` (default
    ``covered()``)."""
    kinds = set()
    for entry in _COVERED if entries is None else entries:
        plan = entry["plan"]
        kinds.update(kind for kind in ("vec=16B", "vec=scalar", "split", "resident") if kind in plan)
        if "cluster=" in plan and "cluster=1 " not in plan:
            kinds.add("cluster")
        if plan.startswith("resident") and ("vpt=2" in plan or "vpt=4" in plan):
            kinds.add("packs>1")  # resident blocks holding 2 or 4 packs per thread
    return sorted(kinds)


def run(module, device, strict=False):
    """Every dtype at every size in ``SIZES``: the kernel's E against eager PyTorch. Returns
    True when all agree; on the first disagreement raises (``strict``) or warns and returns
    False."""
    from .eager import estimate_torch  # noqa: PLC0415

    generator = torch.Generator(device=device).manual_seed(0)
    t = torch.tensor([0.0, 999.0, 100.0, 600.0], dtype=torch.float64, device=device)
    for dtype, rtol in TOLERANCE.items():
        name = _DTYPE_NAMES[dtype]
        for N in SIZES:
            c, u, n = (torch.randn(BATCH, N, generator=generator, dtype=torch.float64, device=device).to(dtype)
                       for _ in range(3))
            out = torch.empty_like(c)
            module.estimate_cuda(c.data_ptr(), u.data_ptr(), n.data_ptr(), out.data_ptr(), t.data_ptr(), 0.0, 0,
                                 BATCH, N, name, 500.0, stream(device))
            ref, _ = estimate_torch(c, u, n, t, 500.0)
            ref64, got = ref.double(), out.double()
            rms = ref64.pow(2).mean(1, keepdim=True).sqrt()
            error = ((got - ref64).abs() / (ref64.abs() + rms)).nan_to_num(float("inf")).max().item()
            _COVERED.append({"device": str(device), "dtype": name, "N": N, "plan": _plan(module, N, name, c, u, n, out),
                             "error": error})
            if not error <= rtol:
                message = (f"ssd_toolkit: the CUDA kernel disagrees with PyTorch eager on {device} ({name}, "
                           f"[{BATCH}, {N}], plan {_COVERED[-1]['plan'] or '?'}: relative error {error:.3g} > {rtol:g})")
                if strict:
                    raise SelfTestError(message + " (SSD_TOOLKIT_CUDA_SELFTEST=strict)")
                warnings.warn(message + "; this device uses backend='torch' from now on (please report it with "
                              "`ssd-toolkit backends`; SSD_TOOLKIT_CUDA_SELFTEST=0 skips this check, =strict "
                              "makes it an error)", RuntimeWarning, stacklevel=6)
                return False
    return True


def _plan(module, N, dtype, *tensors):
    """The plan the launch took, as the module describes it ("" where it cannot)."""
    describe = getattr(module, "cuda_launch_plan", None)
    if describe is None:
        return ""
    aligned = all(x.data_ptr() % 16 == 0 for x in tensors)  # ssd_launch.h: vector_access
    return describe(N, dtype, aligned)
