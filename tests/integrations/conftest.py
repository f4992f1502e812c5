"""Fixtures shared by the integration tests: the tiny pipeline and a synthetic body, built once per run.

Tests that change the networks or the files work on their own copies (``load_models`` per
module, ``shutil.copytree`` of ``tiny_dir``).
"""

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random SD + ControlNet directory (``guidance.tiny``, seed 0); do not modify."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from ssd_toolkit.integrations.guidance.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"), seed=0)


@pytest.fixture(scope="module")
def models(tiny_dir):
    """``GuidanceModels`` of ``tiny_dir`` with its ControlNet, loaded once per test module."""
    from ssd_toolkit.integrations.guidance.models import load_models

    return load_models(tiny_dir, tiny_dir / "controlnet")


@pytest.fixture(scope="session")
def synthetic_body(tmp_path_factory):
    """A directory holding a synthetic ``smpl/SMPL_NEUTRAL.pkl`` (seed 0); do not modify."""
    from ssd_toolkit.integrations.avatar.body.synthetic import write_synthetic_smpl

    root = tmp_path_factory.mktemp("body")
    write_synthetic_smpl(root, seed=0)
    return root


@pytest.fixture(scope="session")
def avatar_assets(tiny_dir, synthetic_body):
    """The ``sd_model`` / ``controlnet`` / ``body`` settings of a tiny avatar run."""
    return {"sd_model": str(tiny_dir), "controlnet": str(tiny_dir / "controlnet"), "body": str(synthetic_body)}
