"""The dtype-keyed tolerance policy every kernel is judged by (also stated in docs/kernels.md).

A kernel's output E (in the input dtype) is compared with the float64 NumPy reference
``E_ref`` elementwise:  |E - E_ref| <= rtol * |E_ref| + atol * rms(E_ref_b),
where rms(E_ref_b) is the root-mean-square of the reference sample the element belongs to.
The rtol values are about twice the unit round-off of the dtype (the kernels accumulate in
fp32 or better and round once at the end); per-sample stats (float64) use STATS_RTOL.
"""

import numpy as np

TOLERANCES = {  # dtype: (rtol, atol relative to the sample's rms)
    "float64": (1e-10, 1e-12),
    "float32": (1e-5, 1e-5),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1.6e-2, 1.6e-2),
}
STATS_RTOL = {"float64": 1e-10, "float32": 1e-6, "float16": 1e-6, "bfloat16": 1e-6}


def to_numpy64(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close_to_reference(E, E_ref, dtype, what="E"):
    """Raise AssertionError naming the worst element if E is outside the tolerance."""
    E = to_numpy64(E).reshape(E_ref.shape[0], -1)
    ref = np.asarray(E_ref, dtype=np.float64).reshape(E.shape)
    rtol, atol = TOLERANCES[dtype]
    rms = np.sqrt(np.mean(ref * ref, axis=1, keepdims=True)) if ref.size else ref
    bound = rtol * np.abs(ref) + atol * rms
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(E), finite), f"{what}: non-finite pattern differs from the reference"
    err = np.where(finite, np.abs(E - np.where(finite, ref, 0)), 0.0)
    bad = err > bound
    if bad.any():
        b, i = np.unravel_index(int(np.argmax(np.where(bad, err - bound, -np.inf))), E.shape)
        raise AssertionError(
            f"{what} [{dtype}]: {int(bad.sum())} elements out of tolerance; worst at sample {b} elem {i}: "
            f"got {E[b, i]!r}, reference {ref[b, i]!r}, bound {bound[b, i]:.3g}"
        )
