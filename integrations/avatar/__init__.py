"""``ssd-toolkit avatar``: our SMPL-conditioned canonical-avatar trainer app on the shared guidance.

``cli`` (the command), ``config`` (settings), ``run`` (one run, checked before it writes),
``train`` (the step), ``field`` / ``render`` / ``cameras`` (the latent radiance field),
``body_init``, ``checkpoint`` / ``atomic`` / ``outdir`` (crash-safe outputs), ``preview`` /
``turntable``; ``body/`` the SMPL body and skeleton conditions; ``batch/`` many avatars on
one model load (``avatar-batch``). Guide: docs/avatar.md.
"""
