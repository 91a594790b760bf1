"""Build hook: setuptools reads all metadata from pyproject.toml."""

from setuptools import setup

setup()
