"""threestudio's scheduled scalars (its ``C(value, epoch, global_step)``), without threestudio.

A config value is a number (constant) or a list:

- ``[start_value, end_value, end_step]``: ``start_step`` is 0;
- ``[start_step, start_value, end_value, end_step]``: linear from ``start_value`` at
  ``start_step`` to ``end_value`` at ``end_step``, held outside; an integer ``end_step``
  counts global steps, a float one counts epochs;
- ``[start_step, v0, v1, s1, v2, s2, ...]`` (6 or more entries): piecewise linear, the
  segment chosen by the last milestone ``s_i`` the step has reached.

OmegaConf lists (``ListConfig``) are accepted as they are.
"""

from __future__ import annotations

import math
import numbers


def _as_list(name, value):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return None
    try:
        if isinstance(value, (str, bytes)):  # iterable, but not a schedule
            raise TypeError
        items = list(value)
    except TypeError:
        raise TypeError(f"{name}: expected a number or a threestudio schedule list, got {value!r}") from None
    if len(items) not in (3, 4) and len(items) < 6:
        raise ValueError(
            f"{name}: expected a number, [start_value, end_value, end_step], "
            f"[start_step, start_value, end_value, end_step] or a 6+ entry piecewise list, got {items!r}"
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise TypeError(f"{name}: expected numbers in the schedule list, got {items!r}")
        if not math.isfinite(item):
            raise ValueError(f"{name}: expected finite numbers in the schedule list, got {items!r}")
    return items


def schedule_values(name, value) -> list:
    """The values a schedule takes at its milestones (``[value]`` for a number); the schedule
    is linear between them and held outside, so these bound every value it takes."""
    items = _as_list(name, value)
    if items is None:
        return [value]
    if len(items) == 3:
        return items[:2]
    return [items[1], items[2], *items[4::2]]


def schedule_steps(name, value) -> list:
    """The steps (or epochs) at which a schedule's slope changes (``[]`` for a number)."""
    items = _as_list(name, value)
    if items is None:
        return []
    if len(items) == 3:
        return [0, items[2]]
    return [items[0], items[3], *items[5::2]]


def entries_note(value) -> str:
    """For a 3-entry schedule, how it was read and that the form that starts with a step takes
    4 entries (a 3-entry list out of range is most often a 4-entry one without its end_step),
    appended to a range error; ``""`` for anything else."""
    if _as_list("value", value) is None or len(value) != 3:
        return ""
    return ("; 3 entries are read as [start_value, end_value, end_step]: "
            "[start_step, start_value, end_value, end_step] expected 4 entries")


def check_schedule(name, value):
    """Raise ``TypeError`` / ``ValueError`` (naming ``name``) unless ``value`` is a valid schedule."""
    items = _as_list(name, value)
    if items is None and not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number or a threestudio schedule list, got {value!r}")
    if items is not None and len(items) in (3, 4):
        start_step = 0 if len(items) == 3 else items[0]
        if items[-1] == start_step:
            raise ValueError(f"{name}: expected end_step != start_step, got {items!r}")


def scheduled_value(name, value, epoch, global_step):
    """The value of a threestudio schedule at ``(epoch, global_step)``, as threestudio's ``C``.

    Args:
        name: the config field, for error messages.
        value: a number or a schedule list (see the module docstring).
        epoch, global_step: the trainer's counters.

    Returns:
        float (a number is returned unchanged).
    """
    items = _as_list(name, value)
    if items is None:
        return value
    if len(items) == 3:
        items = [0, *items]
    if len(items) >= 6:
        i = 3
        for j in range(3, len(items) - 2, 2):
            if global_step >= items[j]:
                i = j + 2
        start_step, start_value = (items[0], items[1]) if i == 3 else (items[i - 2], items[i - 3])
        items = [start_step, start_value, items[i - 1], items[i]]
    start_step, start_value, end_value, end_step = items
    current = epoch if isinstance(end_step, float) else global_step
    frac = max(min(1.0, (current - start_step) / (end_step - start_step)), 0.0)
    return start_value + (end_value - start_value) * frac
