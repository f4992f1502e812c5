"""SSD (and every ``ssd_toolkit`` estimator) as a threestudio guidance, ``ssd-toolkit-guidance``.

- ``guidance``: the registered threestudio class (imports threestudio).
- ``adapter``: the same guidance without threestudio, ``ThreestudioGuidance`` (exported here).
- ``config``: its fields; ``scheduled_value``: threestudio's scheduled scalars (its ``C(value)``).
- ``python -m ssd_toolkit.integrations.threestudio install DIR``: the ``custom/`` folder.

Names load on first use, so importing this package imports neither torch nor threestudio.
Guide: docs/integrations/threestudio.md; without threestudio: docs/your-own-loop.md.
"""

__all__ = ["ThreestudioGuidance"]


def __getattr__(name):
    if name == "ThreestudioGuidance":
        from .adapter import ThreestudioGuidance  # noqa: PLC0415

        return ThreestudioGuidance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
