"""The old ``dreamwaltz`` entry point's target (install metadata from before the split):
both body commands, now ``ssd_toolkit.integrations.avatar.body_cli`` (this old name warns)."""

from ssd_toolkit.integrations.avatar.body_cli import register_convert_smpl, register_skeleton

from ._moved import warn_moved

warn_moved(__name__, "ssd_toolkit.integrations.avatar.body_cli")


def register(subparsers):
    """Add ``skeleton`` and ``convert-smpl`` (the new entry points add one each)."""
    register_skeleton(subparsers)
    register_convert_smpl(subparsers)
