"""What the avatar tests share: the settings of the finished tiny run that conftest.py's
``finished`` fixture builds, and the CLI call they make."""

# a 4-step --tiny run, checkpoints at steps 2 and 4, no previews, a 2-frame turntable
TINY_RUN = ["--steps", "4", "--checkpoint-every", "2", "--preview-every", "0", "--turntable-frames", "2",
            "--body-init-steps", "5"]  # fmt: skip


def avatar(capsys, *args):
    """Run ``ssd-toolkit avatar --no-progress ARGS`` -> (exit code, stderr lines)."""
    from ssd_toolkit import cli  # noqa: PLC0415 - the settings above import nothing

    code = cli.main(["avatar", "--no-progress", *map(str, args)])
    return code, capsys.readouterr().err.strip().splitlines()
