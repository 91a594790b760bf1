"""Checkpoints: atomic writes, ``torch.load(weights_only=True)``-safe contents, a checksum of
the tensors, clear errors.

A checkpoint is a dict of tensors and plain Python values only (no dataclasses, no numpy
objects), so the default safe loader reads it. The config travels as a YAML string. Its
``checksum`` is :func:`tensor_checksum` of everything else: a file whose bytes were flipped but
which still unpickles is refused on load (files written before the checksum load unchecked).
"""

from __future__ import annotations

import hashlib
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
#: the first bytes of a packed ``.bdn`` model (``bidense.runtime.format.MAGIC``; repeated here
#: because the engine may not import the runtime)
BDN_MAGIC = b"BIDENSE\x00"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, foreign or incompatible."""


class _RecordingWriter:
    """A file wrapper that keeps the OSError of a failed write: ``torch.save`` replaces it by
    an opaque RuntimeError from its zip writer."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.error = fh, None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically (temp file, fsync, rename over ``path``); a failed write (disk
    full, no permission) is a one-line :class:`CheckpointError` and leaves ``path`` as it was."""
    writer = None
    try:
        with atomic_open(path) as fh:
            writer = _RecordingWriter(fh)
            torch.save(obj, writer)
    except (OSError, RuntimeError) as exc:
        cause = writer.error if writer is not None and writer.error is not None else exc
        if not isinstance(cause, OSError):
            raise
        raise CheckpointError(
            f"{path}: cannot write checkpoint ({cause.strerror or cause})"
        ) from None


def tensor_checksum(ckpt: dict[str, Any]) -> str:
    """SHA-256 over every tensor of ``ckpt`` but its ``checksum``: for each tensor in
    depth-first key order, its key path, dtype, shape and raw bytes."""
    digest = hashlib.sha256()

    def visit(obj: Any, where: str) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            digest.update(f"{where}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                visit(value, f"{where}/{key}")
        elif isinstance(obj, list | tuple):
            for i, value in enumerate(obj):
                visit(value, f"{where}/{i}")

    visit({k: v for k, v in ckpt.items() if k != "checksum"}, "")
    return digest.hexdigest()


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
    with open(path, "rb") as fh:
        if fh.read(len(BDN_MAGIC)) == BDN_MAGIC:
            raise CheckpointError(
                f"{path} is a packed model for the runtime (bidense.runtime.Runtime), not "
                "a training checkpoint (.pt)"
            )
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
    if "checksum" in ckpt and ckpt["checksum"] != tensor_checksum(ckpt):
        raise CheckpointError(f"{path}: checksum mismatch (the tensors are corrupt)")
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
