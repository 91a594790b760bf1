"""Helpers shared by the benchmarks."""

from __future__ import annotations

import json
from typing import Any

from bidense._atomic import atomic_open

__all__ = ["write_json"]


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write a benchmark result as indented JSON, atomically."""
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2)
