"""The settings of the finished tiny run that conftest.py's ``finished`` fixture builds."""

# a 4-step --tiny run, checkpoints at steps 2 and 4, no previews, a 2-frame turntable
TINY_RUN = ["--steps", "4", "--checkpoint-every", "2", "--preview-every", "0", "--turntable-frames", "2",
            "--body-init-steps", "5"]  # fmt: skip
