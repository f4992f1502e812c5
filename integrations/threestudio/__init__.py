"""SSD (and every ``ssd_toolkit`` estimator) as a threestudio guidance, ``ssd-toolkit-guidance``.

- ``guidance``: the registered threestudio class (imports threestudio).
- ``adapter``: the same guidance without threestudio (``ThreestudioGuidance``).
- ``config``: its fields; ``scheduled_value``: threestudio's scheduled scalars (its ``C(value)``).
- ``python -m ssd_toolkit.integrations.threestudio install DIR``: the ``custom/`` folder.

Importing this package imports neither torch nor threestudio. Guide: docs/integrations/threestudio.md.
"""
