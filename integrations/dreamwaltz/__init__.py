"""DreamWaltz-style SMPL-conditioned avatar generation with SSD guidance.

Body model and skeleton conditions, ControlNet + Stable Diffusion guidance with any
``ssd_toolkit`` estimator, and the end-to-end ``ssd-toolkit avatar`` run.
"""
