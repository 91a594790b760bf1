"""Checkpoints: atomic writes, ``torch.load(weights_only=True)``-safe contents, clear errors.

A checkpoint is a dict of tensors and plain Python values only (no dataclasses, no numpy
objects), so the default safe loader reads it. The config travels as a YAML string.
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_open

FORMAT = "bidense-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, foreign or incompatible."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically (temp file, fsync, rename over ``path``)."""
    with atomic_open(path) as fh:
        torch.save(obj, fh)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors / plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - legacy global
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - restores the legacy global RNG
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return [_to_plain(o) for o in obj]
    return obj


def _to_tuple(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_to_tuple(o) for o in obj)
    return obj


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a bidense checkpoint with the safe (weights-only) unpickler."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (corrupt or truncated file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(
                f"{path}: holds objects the safe loader refuses (not a bidense checkpoint)"
            ) from None
        raise CheckpointError(f"{path}: unreadable checkpoint (corrupt or truncated)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bidense checkpoint (no '{FORMAT}' marker)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt.get('version')} is newer than this bidense "
            f"({VERSION}); upgrade bidense"
        )
    for key in ("model", "config"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return ckpt


def check_writable(directory: str | Path) -> None:
    """Fail before training if the run directory cannot be written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-probe"
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 1024)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(
            f"{directory}: run directory is not writable ({exc.strerror})"
        ) from None


def check_free_space(directory: str | Path, need_bytes: int) -> None:
    """Fail before training if the run directory's disk cannot hold ``need_bytes``."""
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    if free < need_bytes:
        raise CheckpointError(
            f"{directory}: only {free / 2**20:.1f} MiB free, checkpoints need about "
            f"{need_bytes / 2**20:.1f} MiB"
        )
