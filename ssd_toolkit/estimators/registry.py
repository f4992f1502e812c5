"""Estimators by name: the one table every host and the CLI select from."""

from __future__ import annotations

from ..checks import lookup
from .classic import CSD, NFSD, SDS, ModeSeeking
from .scheduled import ISM, AnnealedCSD, SDSBridge
from .ssd import SSD, SSDNoRescale, SSDNoVarianceReduction, SSDSDSNoiseTerm


def at_step(estimator, train_step, max_iteration=None):
    """The estimator for one training step: ``estimator.at_step(...)`` where it anneals
    (``csd-annealed``, ``sds-bridge``, ``ism``), the estimator itself otherwise."""
    step = getattr(estimator, "at_step", None)
    return estimator if step is None else step(train_step, max_iteration)


ESTIMATORS = {
    cls.name: cls
    for cls in (SSD, SDS, ModeSeeking, CSD, NFSD, SSDNoVarianceReduction, SSDSDSNoiseTerm, SSDNoRescale,
                AnnealedCSD, SDSBridge, ISM)
}


def list_estimators():
    """Names accepted by ``get_estimator``."""
    return sorted(ESTIMATORS)


def get_estimator(name, **params):
    """An estimator by name, e.g. ``get_estimator("ssd", M=200)``.

    Raises:
        ValueError: unknown name (the message lists the known ones), bad parameter values.
        TypeError: a parameter the estimator does not take.
    """
    return lookup(ESTIMATORS, name)(**params)
