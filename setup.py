"""Packaging: the repository's toy/ and integrations/ install under ssd_toolkit."""

from setuptools import setup

PACKAGE_DIR = {
    "ssd_toolkit": "ssd_toolkit",
    "ssd_toolkit.toy": "toy",
    "ssd_toolkit.integrations": "integrations",
    "ssd_toolkit.integrations.dreamwaltz": "integrations/dreamwaltz",
}

setup(
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
)
