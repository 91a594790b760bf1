"""Errors raised by :mod:`bidense.data` for bad input (one line naming the file and problem)."""

from __future__ import annotations

__all__ = ["DatasetError", "DatasetFileNotFoundError"]


class DatasetError(ValueError):
    """Bad dataset input: unreadable file, bad label values, size mismatch, empty split, ..."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A file the dataset needs is missing (also a :class:`FileNotFoundError`)."""
