"""How every host turns its settings into an ``ssd_toolkit`` estimator, and when it warns.

The hosts (``ControlNetGuidance`` itself, the avatar app, the DreamWaltz drop-in, the
threestudio guidance) each have a CFG scale and (most) an SSD threshold of their own. Which
estimator receives them is the host's choice, stated as data (``scale_takers``); how they
are filled in and overridden, and the ``grad_norm`` policy, are decided here once. The
estimators' own defaults (``M = 200`` ...) stay in ``ssd_toolkit``.
"""

from __future__ import annotations

import dataclasses
import warnings

ALL_ESTIMATORS = None  # ``scale_takers`` value: every estimator with a ``guidance_scale`` field


def canonical_name(name) -> str:
    """``"SSD_no_rescale"`` -> ``"ssd-no-rescale"``: the registry's spelling."""
    return str(name).lower().replace("_", "-")


def estimator_fields(name) -> set:
    """The dataclass fields of the estimator registered as ``name``.

    Raises:
        ValueError: an unknown name (``ssd_toolkit.get_estimator``'s message).
    """
    import ssd_toolkit  # noqa: PLC0415

    return {f.name for f in dataclasses.fields(ssd_toolkit.get_estimator(name))}


def estimator_params(name, params=None, *, M=None, guidance_scale=None, scale_takers=ALL_ESTIMATORS) -> dict:
    """The keyword arguments a host passes ``ssd_toolkit.get_estimator(name, ...)``.

    Args:
        name: an estimator name (any spelling ``canonical_name`` accepts).
        params: the user's explicit estimator arguments; they win over the host's values.
        M: the host's SSD threshold, given to every estimator with an ``M`` field (SSD and
            its ablations); None leaves the estimator's default.
        guidance_scale: the host's CFG scale, given to the estimators in ``scale_takers``
            that have a ``guidance_scale`` field; None leaves their defaults.
        scale_takers: names that take the host's CFG scale, or ``ALL_ESTIMATORS``. A host
            whose scale is SDS's (threestudio's 100) lists ``("sds",)`` so that NFSD or ISM
            keep their papers' 7.5.

    Returns:
        A new dict.
    """
    key = canonical_name(name)
    fields = estimator_fields(key)  # an unknown name fails here
    out = {}
    if M is not None and "M" in fields:
        out["M"] = float(M)
    if guidance_scale is not None and takes_scale(key, scale_takers):
        out["guidance_scale"] = float(guidance_scale)
    out.update(params or {})
    return out


def takes_scale(name, scale_takers=ALL_ESTIMATORS) -> bool:
    """Whether the host's CFG scale reaches estimator ``name`` (see ``estimator_params``)."""
    return scale_ignored_because(name, scale_takers) is None


def scale_ignored_because(name, scale_takers=ALL_ESTIMATORS, params=None):
    """Why the host's CFG scale does not reach estimator ``name``, or None when it does.

    Args:
        name, scale_takers: as ``estimator_params``.
        params: the user's explicit estimator arguments (their ``guidance_scale`` wins).
    """
    key = canonical_name(name)
    if "guidance_scale" not in estimator_fields(key):
        return f"{key} has no CFG scale"
    if params and "guidance_scale" in params:
        return f"{key}'s own guidance_scale among its estimator arguments wins"
    if scale_takers is not ALL_ESTIMATORS and key not in scale_takers:
        import ssd_toolkit  # noqa: PLC0415

        own = ssd_toolkit.get_estimator(key).guidance_scale
        return f"{key} keeps its own default {own} (set guidance_scale among its estimator arguments to change it)"
    return None


def warn_if_scale_ignored(name, guidance_scale, option, scale_takers=ALL_ESTIMATORS, params=None, stacklevel=2):
    """Warn (``UserWarning``) when a CFG scale the user gave does not reach estimator ``name``.

    Args:
        name, scale_takers, params: as ``scale_ignored_because``.
        guidance_scale: the host's scale as the user gave it; None (not given) never warns.
        option: how the host's user spells the setting, named in the message.
        stacklevel: ``warnings.warn``'s, counted from the caller of this function.
    """
    why = None if guidance_scale is None else scale_ignored_because(name, scale_takers, params)
    if why:
        warnings.warn(f"{option}={guidance_scale!r} is ignored: {why}", UserWarning, stacklevel=stacklevel + 1)


def warn_if_grad_norm_erases(estimator_name, grad_norm, option="grad_norm=True", stacklevel=2):
    """Warn when per-sample unit normalisation is on for SSD (or an SSD ablation).

    Normalising each gradient to its unit direction erases SSD's rescaling to ``||h||`` and
    ``w(t)``: the one place that says so, for every host.

    Args:
        estimator_name: the estimator's registry name (or its ``.name``).
        grad_norm: whether the host normalises.
        option: how the host's user spells the switch, named in the message.
        stacklevel: ``warnings.warn``'s, counted from the caller of this function.
    """
    if grad_norm and canonical_name(estimator_name).startswith("ssd"):
        warnings.warn(
            f"{option} replaces each sample's gradient by its unit direction, which erases SSD's ||h|| "
            "rescaling and w(t); turn it off for SSD",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
