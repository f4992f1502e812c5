"""Moved to ``ssd_toolkit.integrations.avatar.cli`` (this old name warns)."""

from ._moved import alias

alias(__name__, "ssd_toolkit.integrations.avatar.cli")
