"""The hosts built on ssd_toolkit: shared guidance, the avatar app and the DreamWaltz and threestudio drop-ins (docs/architecture.md)."""
