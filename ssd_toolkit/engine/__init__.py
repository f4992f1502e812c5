"""The lowest layer of the core: the SSD maths, the float64 reference, host dispatch and the compiled modules.

Nothing here imports anything of ``ssd_toolkit`` above it (only ``ssd_toolkit.checks``, a
leaf): the array operations reach the maths as an argument (``xp``, ``array_ops``), as
array-api-compat passes its namespace down. ``frameworks`` builds on this layer, and the
rest of the core on ``frameworks``. ``tests/core/test_core_layout.py`` holds the rule.
"""
