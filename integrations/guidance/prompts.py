"""View-dependent prompts with DreamWaltz's sector rules.

Azimuth 0 degrees is the front of the body. The horizontal circle is cut into four
90-degree sectors centred on front (0), side (90), backside (180) and side (270);
a polar angle (from the up axis) of at most 30 degrees is "overhead", at least 150
degrees "bottom", whatever the azimuth.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np

OVERHEAD_MAX_POLAR = 30.0
BOTTOM_MIN_POLAR = 150.0
SECTOR_VIEWS = ("front", "side", "backside", "side")


def _as_vector(name, values):
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a scalar or a 1-D sequence of degrees, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite degrees, got {arr.tolist()}")
    return arr


def view_direction(polar_deg, azimuth_deg):
    """DreamWaltz's view names for a batch of camera directions.

    Args:
        polar_deg: polar angle(s) from the up axis in degrees (90 = horizontal), a scalar,
            list, NumPy array or tensor.
        azimuth_deg: azimuth(s) in degrees, 0 = the body's front; any real value (taken
            modulo 360). Scalars broadcast against the other argument.

    Returns:
        ``list[str]``, one of "front", "side", "backside", "overhead", "bottom" per camera.
        Sector edges (45, 135, 225, 315 degrees) belong to the sector that starts there,
        e.g. exactly 45 is "side".

    Raises:
        ValueError: non-finite angles or lengths that do not broadcast.
    """
    polar = _as_vector("polar_deg", polar_deg)
    azimuth = _as_vector("azimuth_deg", azimuth_deg)
    if polar.size != azimuth.size and 1 not in (polar.size, azimuth.size):
        raise ValueError(f"azimuth_deg: expected {polar.size} values to match polar_deg, got {azimuth.size}")
    polar, azimuth = np.broadcast_arrays(polar, azimuth)
    sector = np.floor(np.mod(azimuth + 45.0, 360.0) / 90.0).astype(np.int64) % 4
    views = []
    for p, s in zip(polar, sector):
        if p <= OVERHEAD_MAX_POLAR:
            views.append("overhead")
        elif p >= BOTTOM_MIN_POLAR:
            views.append("bottom")
        else:
            views.append(SECTOR_VIEWS[s])
    return views


def view_prompts(text, polar_deg, azimuth_deg):
    """``"{view} view of {text}"`` per camera (see ``view_direction``).

    Args:
        text: the subject prompt, e.g. "a wooden robot".
        polar_deg, azimuth_deg: as in ``view_direction``.

    Returns:
        ``list[str]`` of prompts, one per camera.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    return [f"{view} view of {text}" for view in view_direction(polar_deg, azimuth_deg)]


def sds_bridge_source_prompt(prompt, source_prompt=""):
    """SDS-Bridge's source prompt: ``source_prompt`` when given, else ``prompt`` plus its
    failure-mode modifier (``ssd_toolkit.estimators.SDS_BRIDGE_SOURCE_MODIFIER``)."""
    from ssd_toolkit.estimators import SDS_BRIDGE_SOURCE_MODIFIER  # noqa: PLC0415

    return source_prompt or f"{prompt}, {SDS_BRIDGE_SOURCE_MODIFIER}"


class PromptTruncatedWarning(UserWarning):
    """A prompt longer than the text encoder's context (77 CLIP tokens) was cut."""


def warn_if_truncated(tokenizer, prompts, warned: set) -> None:
    """Warn once per limit (tracked in ``warned``) when a prompt has more tokens than
    ``tokenizer.model_max_length``; counts include CLIP's start and end tokens, as the limit does."""
    limit = int(tokenizer.model_max_length)
    if limit in warned:
        return
    for prompt in prompts:
        count = len(tokenizer(prompt, truncation=False, verbose=False).input_ids)
        if count > limit:
            warned.add(limit)
            warnings.warn(f"prompt: {count} tokens, CLIP keeps the first {limit}; the rest is ignored",
                          PromptTruncatedWarning, stacklevel=3)
            return


@contextlib.contextmanager
def one_line_prompt_warnings(prog: str, stream=None):
    """Within the block, a ``PromptTruncatedWarning`` prints as ``<prog>: warning: <message>`` (one
    line on stderr) instead of Python's two-line form; other warnings are shown as before."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PromptTruncatedWarning):
            print(f"{prog}: warning: {message}", file=stream or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
