"""Adding a host drop-in's own fields to the host's config dataclass, for every drop-in.

Trainers that parse their config into dataclasses (DreamWaltz and DreamWaltz-G with
pyrallis) refuse keys the dataclass does not declare; a drop-in that reads extra settings
(``guide.estimator``, ...) adds them to the host's class when the host's code calls it.
"""

from __future__ import annotations

import dataclasses
import inspect


def add_dataclass_fields(config_cls, fields):
    """Add ``fields`` (``(name, type, default)`` triples) that ``config_cls`` lacks to that
    dataclass in place; existing fields, their defaults and ``__post_init__`` are kept.
    The same class object comes back, so annotations elsewhere that name it (a parent
    config's ``guide: GuideConfig``) see the new fields. Calling it again is harmless.

    Returns:
        ``config_cls``, processed again by ``dataclasses.dataclass``.

    Raises:
        TypeError: ``config_cls`` is not a dataclass.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls: expected a dataclass, got {config_cls!r}")
    present = {f.name: f for f in dataclasses.fields(config_cls)}
    missing = [(n, t, d) for n, t, d in fields if n not in present]
    if not missing:
        return config_cls
    annotations = dict(config_cls.__dict__.get("__annotations__", {}))
    for f in present.values():  # re-declare every field so re-processing keeps its default
        setattr(config_cls, f.name, f)
    for name, typ, default in missing:
        annotations[name] = typ
        setattr(config_cls, name, dataclasses.field(default=default))
    config_cls.__annotations__ = annotations
    for name in ("__init__", "__repr__", "__eq__", "__match_args__"):
        # dataclass() keeps methods already in the class: drop the ones it generated
        method = config_cls.__dict__.get(name)
        generated = getattr(inspect.unwrap(method), "__code__", None) if callable(method) else None
        if name == "__match_args__" or (generated is not None and generated.co_filename == "<string>"):
            if name in config_cls.__dict__:
                delattr(config_cls, name)
    return dataclasses.dataclass(config_cls)
