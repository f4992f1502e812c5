"""A finished tiny avatar run shared by the fault tests (test_avatar_faults.py,
test_avatar_links_and_logs.py): built once per session, and each test works on its own copy."""

import shutil

import pytest
from tiny_avatar_run import TINY_RUN


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """``TINY_RUN`` finished in a folder of its own; do not modify (use ``run_dir``)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("smplx")
    from ssd_toolkit import cli

    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["avatar", "--tiny", "--no-progress", "--out", str(out), *TINY_RUN]) == 0
    return out


@pytest.fixture
def run_dir(finished, tmp_path):
    """A copy of ``finished`` for one test."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy
