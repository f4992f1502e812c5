"""The hypothesis profiles docs/testing.md describes: "quick" by default (CI), "thorough" on
demand, and no property test overriding the profile's example count (issue 35 item 8)."""

import os
import pathlib
import re

from hypothesis import settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_quick_is_loaded_by_default_and_thorough_is_registered():
    expected = os.environ.get("HYPOTHESIS_PROFILE", "quick")
    assert settings.default == settings.get_profile(expected)
    quick, thorough = settings.get_profile("quick"), settings.get_profile("thorough")
    assert quick.max_examples == 20 and quick.derandomize and quick.database is None and quick.deadline is None
    assert thorough.max_examples == 500 and not thorough.derandomize and thorough.deadline is None


def test_no_property_test_sets_its_own_example_count():
    setters = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "tests").rglob("test_*.py"))
               for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"max_examples\s*=(?!=)", line)]  # fmt: skip
    assert setters == [], setters
