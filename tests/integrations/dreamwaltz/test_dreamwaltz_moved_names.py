"""The module names the DreamWaltz package documented before the split still import, warn, and
are the new modules themselves (so a monkeypatch through either name reaches both)."""

import importlib
import sys

import pytest

MOVED = {
    "guidance": "ssd_toolkit.integrations.guidance.controlnet",
    "prompts": "ssd_toolkit.integrations.guidance.prompts",
    "models": "ssd_toolkit.integrations.guidance.models",
    "tiny": "ssd_toolkit.integrations.guidance.tiny",
    "body": "ssd_toolkit.integrations.avatar.body.smpl",
    "cameras": "ssd_toolkit.integrations.avatar.cameras",
    "skeleton": "ssd_toolkit.integrations.avatar.body.skeleton",
    "avatar_cli": "ssd_toolkit.integrations.avatar.cli",
    "batch_cli": "ssd_toolkit.integrations.avatar.batch.cli",
}


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_name_warns_and_is_the_new_module(old, new, monkeypatch):
    name = f"ssd_toolkit.integrations.dreamwaltz.{old}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.warns(DeprecationWarning, match=rf"{name} moved to {new}") as caught:
        __import__(name)  # as an import statement does (importlib.import_module adds a frame)
    assert sys.modules[name] is importlib.import_module(new)
    assert caught[0].filename == __file__  # the warning points at the importing code


def test_documented_imports_keep_working(monkeypatch):
    for old in ("guidance", "prompts", "body", "cameras", "skeleton"):
        monkeypatch.delitem(sys.modules, f"ssd_toolkit.integrations.dreamwaltz.{old}", raising=False)
    with pytest.warns(DeprecationWarning):
        from ssd_toolkit.integrations.dreamwaltz import body, cameras, skeleton
        from ssd_toolkit.integrations.dreamwaltz.guidance import load_guidance
        from ssd_toolkit.integrations.dreamwaltz.prompts import view_prompts
    assert callable(load_guidance) and view_prompts("a cat", 90, 0) == ["front view of a cat"]
    assert hasattr(body, "posed_body") and hasattr(cameras, "orbit_cameras") and hasattr(skeleton, "draw_conditions")


def test_old_dreamwaltz_entry_point_registers_both_body_commands(monkeypatch):
    import argparse

    monkeypatch.delitem(sys.modules, "ssd_toolkit.integrations.dreamwaltz.cli", raising=False)
    with pytest.warns(DeprecationWarning, match="avatar.body_cli"):
        old = importlib.import_module("ssd_toolkit.integrations.dreamwaltz.cli")
    sub = argparse.ArgumentParser().add_subparsers()
    old.register(sub)
    assert set(sub.choices) == {"skeleton", "convert-smpl"}


def test_importing_the_drop_in_leaves_dreamwaltz_config_alone(monkeypatch):
    """``GuideConfig`` gets the fields from an explicit ``register_guide_fields()`` only."""
    import dataclasses
    import types

    @dataclasses.dataclass
    class GuideConfig:
        text: str = ""

    module = types.ModuleType("configs.train_config")
    module.GuideConfig = GuideConfig
    monkeypatch.setitem(sys.modules, "configs.train_config", module)
    monkeypatch.delitem(sys.modules, "ssd_toolkit.integrations.dreamwaltz.dreamwaltz_compat", raising=False)
    pytest.importorskip("diffusers")
    importlib.import_module("ssd_toolkit.integrations.dreamwaltz.dreamwaltz_compat")
    assert [f.name for f in dataclasses.fields(GuideConfig)] == ["text"]
    from ssd_toolkit.integrations.dreamwaltz import register_guide_fields

    assert register_guide_fields() is GuideConfig
    assert [f.name for f in dataclasses.fields(GuideConfig)][-2:] == ["negative_prompt", "source_prompt"]
