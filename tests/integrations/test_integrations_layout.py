"""The integrations' structure rules (docs/architecture.md) that a test can hold: entry points
named after the command they register, and hosts that never import each other."""

import argparse
import ast
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("avatar", "dreamwaltz", "dreamwaltz_g", "threestudio")


def entry_points():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return sorted(project["entry-points"]["ssd_toolkit.commands"].items())


@pytest.mark.parametrize("name, target", entry_points())
def test_each_entry_point_registers_the_command_it_is_named_after(name, target):
    module, _, function = target.partition(":")
    register = getattr(importlib.import_module(module), function)
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    assert set(sub.choices) == {name}


def imported_integrations(path):
    """The ``ssd_toolkit.integrations.<package>`` packages a module imports, relative imports
    resolved, its own package left out."""
    rel = path.relative_to(ROOT / "integrations").with_suffix("").parts
    here = ["ssd_toolkit", "integrations", *rel[:-1]]  # the module's package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            names = [".".join(base + ([node.module] if node.module else []))]
            if not node.module:
                names = [f"{names[0]}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["ssd_toolkit", "integrations"] and len(parts) > 2:
                found.add(parts[2])
    return found - {rel[0]}


@pytest.mark.parametrize("host", HOSTS)
def test_hosts_import_the_shared_guidance_and_never_each_other(host):
    allowed = {"guidance"}
    for path in sorted((ROOT / "integrations" / host).rglob("*.py")):
        assert imported_integrations(path) <= allowed, path


def test_the_shared_guidance_imports_no_host():
    for path in sorted((ROOT / "integrations" / "guidance").rglob("*.py")):
        assert not imported_integrations(path), path
