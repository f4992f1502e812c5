"""Packaging: the repository's toy/ and integrations/ install under ssd_toolkit."""

from setuptools import setup

PACKAGE_DIR = {
    "ssd_toolkit": "ssd_toolkit",
    "ssd_toolkit.toy": "toy",
    "ssd_toolkit.integrations": "integrations",
}

setup(
    packages=["ssd_toolkit", "ssd_toolkit.toy", "ssd_toolkit.integrations"],
    package_dir=PACKAGE_DIR,
)
