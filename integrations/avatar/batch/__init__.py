"""``ssd-toolkit avatar-batch``: many avatars on one model load, one stacked network call per step, torchrun ranks."""
