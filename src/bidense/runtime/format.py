"""The ``.bdn`` packed model file: reader and writer (numpy only, no torch).

Layout (all integers little-endian)::

    offset 0   8 bytes   magic b"BIDENSE\\x00"
    offset 8   u32       format version (FORMAT_VERSION)
    offset 12  u64       header length L in bytes
    offset 20  L bytes   header, UTF-8 JSON: {"graph": ..., "tensors": {name: entry},
                         "metadata": {...}, "payload_bytes": P}
    20+L       32 bytes  SHA-256 of (header bytes + payload bytes)
    52+L       P bytes   payload: tensor blobs, each starting on a 64-byte boundary

A tensor entry is ``{"dtype": "float32"|"uint64"|"int64", "shape": [...], "offset": o,
"nbytes": b}`` with ``offset`` relative to the payload start. 1-bit weights are stored as uint64
words in the canonical OHWI packed layout of :mod:`bidense.runtime.kernels` (bit 1 = -1,
LSB-first, 64 input channels per word).

The reader checks, in this order: magic (foreign file), version (newer than this reader),
header length and payload size against the file size (truncated), the checksum (corrupt), then
the tensor table. Every failure is a :class:`BdnFormatError` with one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bidense._atomic import atomic_open

__all__ = ["MAGIC", "FORMAT_VERSION", "BdnFormatError", "BdnFile", "write_bdn", "read_bdn"]

MAGIC = b"BIDENSE\x00"
FORMAT_VERSION = 1
_ALIGN = 64
_PREFIX = struct.Struct("<8sIQ")
_DIGEST = 32
_DTYPES = {"float32": np.float32, "uint64": np.uint64, "int64": np.int64}


class BdnFormatError(ValueError):
    """A ``.bdn`` file is foreign, newer, truncated, corrupt or malformed."""


@dataclass
class BdnFile:
    """A parsed ``.bdn`` file: the graph, the metadata and the tensors (numpy arrays)."""

    graph: dict[str, Any]
    metadata: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    file_bytes: int = 0
    header_bytes: int = 0


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def write_bdn(
    path: str | os.PathLike,
    graph: dict[str, Any],
    tensors: dict[str, np.ndarray],
    metadata: dict[str, Any],
) -> int:
    """Write a ``.bdn`` file atomically (temp file + ``os.replace``); return its size in bytes."""
    table: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        dt = str(a.dtype)
        if dt not in _DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {dt} cannot be stored (use {list(_DTYPES)})")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        table[name] = {"dtype": dt, "shape": list(a.shape), "offset": offset, "nbytes": len(raw)}
        blobs.append(raw + b"\x00" * _pad(len(raw)))
        offset += len(raw) + _pad(len(raw))
    payload = b"".join(blobs)
    header = json.dumps(
        {"graph": graph, "tensors": table, "metadata": metadata, "payload_bytes": len(payload)},
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
    digest = hashlib.sha256(header + payload).digest()
    data = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + digest + payload
    with atomic_open(path) as f:
        f.write(data)
    return len(data)


def read_bdn(path: str | os.PathLike) -> BdnFile:
    """Read and validate a ``.bdn`` file (see the module docstring for the checks)."""
    p = str(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BdnFormatError(f"{p}: cannot read file ({exc.strerror})") from None
    if len(data) < _PREFIX.size:
        if MAGIC.startswith(data[: len(MAGIC)]) and data:
            raise BdnFormatError(f"{p}: truncated file ({len(data)} bytes, no complete prefix)")
        raise BdnFormatError(f"{p}: not a bidense .bdn file (too short, bad magic)")
    magic, version, hlen = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise BdnFormatError(f"{p}: not a bidense .bdn file (bad magic {magic!r})")
    if version > FORMAT_VERSION:
        raise BdnFormatError(
            f"{p}: format version {version} is newer than this reader's {FORMAT_VERSION}; "
            "upgrade bidense"
        )
    if version < 1:
        raise BdnFormatError(f"{p}: invalid format version {version}")
    start = _PREFIX.size
    if start + hlen + _DIGEST > len(data):
        raise BdnFormatError(
            f"{p}: truncated file ({len(data)} bytes; header needs {start + hlen + _DIGEST})"
        )
    hbytes = data[start : start + hlen]
    digest = data[start + hlen : start + hlen + _DIGEST]
    payload = data[start + hlen + _DIGEST :]
    try:
        header = json.loads(hbytes.decode("utf-8"))
        declared = int(header["payload_bytes"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        # a damaged header is corruption as long as the checksum disagrees
        if hashlib.sha256(hbytes + payload).digest() != digest:
            raise BdnFormatError(f"{p}: corrupt file (checksum mismatch)") from None
        raise BdnFormatError(f"{p}: malformed header") from None
    if len(payload) < declared:
        raise BdnFormatError(
            f"{p}: truncated file (payload {len(payload)} of {declared} bytes)"
        )
    if len(payload) > declared:
        raise BdnFormatError(f"{p}: {len(payload) - declared} unexpected trailing bytes")
    if hashlib.sha256(hbytes + payload).digest() != digest:
        raise BdnFormatError(f"{p}: corrupt file (checksum mismatch)")
    tensors: dict[str, np.ndarray] = {}
    try:
        for name, e in header["tensors"].items():
            dt = np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<")
            off, nb, shape = int(e["offset"]), int(e["nbytes"]), tuple(int(s) for s in e["shape"])
            if off < 0 or off + nb > declared or nb != int(np.prod(shape)) * dt.itemsize:
                raise BdnFormatError(f"{p}: tensor {name!r} has an invalid table entry")
            arr = np.frombuffer(payload, dtype=dt, count=nb // dt.itemsize, offset=off)
            tensors[name] = arr.reshape(shape).astype(dt.newbyteorder("="), copy=False)
        graph, metadata = header["graph"], header["metadata"]
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BdnFormatError):
            raise
        raise BdnFormatError(f"{p}: malformed header ({type(exc).__name__}: {exc})") from None
    return BdnFile(graph, metadata, tensors, int(version), len(data), int(hlen))


def node_refs(n: dict[str, Any]) -> list[str]:
    """Names of the tensors a graph node reads (``{"t": name}`` references in its arguments)."""
    found: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if "t" in o and len(o) == 1:
                found.append(o["t"])
            else:
                for v in o.values():
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(n["args"])
    walk(n["kwargs"])
    return found
