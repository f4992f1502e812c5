"""Timestep weightings ``w(t)`` that multiply a score-distillation gradient (Eq. 3).

``get_weighting(name)`` returns a callable ``w(t, alphas_cumprod)``:

- ``"sds"`` / ``"dreamfusion"``: ``1 - abar_t`` (DreamFusion; threestudio ``"sds"``).
- ``"fantasia3d"`` / ``"latent-nerf"``: ``sqrt(abar_t) (1 - abar_t)``.
- ``"uniform"`` / ``"sjc"``: ``1`` (SJC; DreamWaltz's default ``loss_type``).
- ``"ism"``: ``sqrt((1 - abar_t) / abar_t)`` (LucidDreamer's ISM; DreamWaltz-G's ``ism``).

Since ``w(t)`` is a per-sample scalar, ``||w_b g_b|| = |w_b| ||g_b||``: a logger gets the
weighted gradient norm from the unweighted one without touching the data.
"""

from __future__ import annotations

import numpy as np

from . import frameworks
from .checks import lookup


def _sds(abar):
    return 1.0 - abar


def _fantasia3d(abar):
    return abar**0.5 * (1.0 - abar)


def _uniform(abar):
    return abar * 0 + 1.0


def _ism(abar):
    return ((1.0 - abar) / abar) ** 0.5


_FORMULAS = {"sds": _sds, "fantasia3d": _fantasia3d, "uniform": _uniform, "ism": _ism}
ALIASES = {
    "sds": "sds",
    "dreamfusion": "sds",
    "fantasia3d": "fantasia3d",
    "latent-nerf": "fantasia3d",
    "uniform": "uniform",
    "sjc": "uniform",
    "ism": "ism",
}


class Weighting:
    """``w(t, alphas_cumprod)`` for one named formula.

    Call with:
        t: integer timesteps, a NumPy array / Python int(s) or a torch tensor, shape
            ``[B]`` (any shape works; the result has t's shape). Integer-valued floats are
            accepted; every entry must lie in ``[0, T - 1]``.
        alphas_cumprod: ``abar``, a NumPy array or a torch tensor of shape ``[T]``.

    Returns:
        ``w`` with t's shape. NumPy ``t``: a float64 NumPy array. Torch ``t``: a tensor on
        t's device, in alphas_cumprod's dtype when that is a tensor (float64 when it is a
        NumPy array).

    Raises:
        TypeError: non-numeric t or alphas_cumprod.
        ValueError: alphas_cumprod not 1-d, t not integer-valued or out of range.
    """

    def __init__(self, name: str):
        self.name = name
        self._formula = _FORMULAS[name]

    def __repr__(self):
        return f"Weighting({self.name!r})"

    def __call__(self, t, alphas_cumprod):
        T = _check_alphas(alphas_cumprod)
        backend = frameworks.find(t)
        if backend is not None and backend.name == "torch":
            return self._torch(t, alphas_cumprod, T, backend)
        idx = frameworks.timestep_indices(t, T)
        host_abar = _host_array(alphas_cumprod)
        if not _is_host(t):  # t's library and device, in alphas_cumprod's dtype when it has one
            same_library = not _is_host(alphas_cumprod) and frameworks.find(alphas_cumprod) is frameworks.find(t)
            dtype = frameworks.dtype_name(alphas_cumprod) if same_library else "float64"
            return self._formula(frameworks.from_host(host_abar[idx], t, dtype))
        return np.asarray(self._formula(host_abar[idx]), dtype=np.float64)


    def _torch(self, t, alphas_cumprod, T, backend):
        """Torch ``t``: w gathered on t's device with torch ops (``torch.compile`` traces it).
        Eagerly t is checked on the host first (under tracing it is a traced value)."""
        if not backend.tracing():
            frameworks.timestep_indices(t, T)
        if backend is frameworks.find(alphas_cumprod):
            abar = alphas_cumprod.to(t.device)
        else:
            abar = backend.from_host(np.asarray(alphas_cumprod, dtype=np.float64), t, "float64")
        return self._formula(abar[t.long()])


def _is_host(x) -> bool:
    return isinstance(x, (np.ndarray, list, tuple, int, float, np.generic))


def _host_array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) if _is_host(x) else frameworks.to_host_float64(x)


def _check_alphas(alphas_cumprod) -> int:
    if not (isinstance(alphas_cumprod, (np.ndarray, list, tuple)) or frameworks.find(alphas_cumprod) is not None):
        raise TypeError(
            f"alphas_cumprod: expected a NumPy array or torch tensor of shape [T], got {type(alphas_cumprod).__name__}"
        )
    shape = tuple(alphas_cumprod.shape) if hasattr(alphas_cumprod, "shape") else np.shape(alphas_cumprod)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"alphas_cumprod: expected shape [T] with T >= 1, got {list(shape)}")
    return int(shape[0])


def list_weightings():
    """Names (and aliases) accepted by ``get_weighting``."""
    return sorted(ALIASES)


def get_weighting(name: str) -> Weighting:
    """The weighting ``w(t, alphas_cumprod)`` called ``name`` (see the module docstring).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return Weighting(lookup(ALIASES, name))
