"""Name lookup shared by the estimator, weighting and timestep-sampler registries."""


def lookup(table: dict, name):
    """``table[name]`` after normalising case and ``_``/``-``.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    key = str(name).lower().replace("_", "-")
    if key not in table:
        raise ValueError(f"name: expected one of {sorted(table)}, got {name!r}")
    return table[key]
