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
the tensor table. The runner then checks the graph's structure (:func:`check_graph`) and every
module against its op's table entry. A checksum only proves the bytes are those written: a file
edited with the hash recomputed is checked like any other. Every failure is a
:class:`BdnFormatError` with one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bidense._atomic import atomic_open

__all__ = ["MAGIC", "FORMAT_VERSION", "BdnFormatError", "BdnFile", "check_graph", "node_refs",
           "read_bdn", "write_bdn"]

MAGIC = b"BIDENSE\x00"
FORMAT_VERSION = 1
_ALIGN = 64
_PREFIX = struct.Struct("<8sIQ")
_DIGEST = 32
_DTYPES = {"float32": np.float32, "uint64": np.uint64, "int64": np.int64}
_MAX_EXTENT = 1 << 16  # the largest input size a file may declare


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
    try:
        tensors = _read_tensors(header, payload, declared)
        graph, metadata = header.get("graph"), header.get("metadata")
        _require(isinstance(graph, dict) and isinstance(metadata, dict),
                 "'graph' and 'metadata' must be objects")
    except BdnFormatError as exc:
        raise BdnFormatError(f"{p}: {exc}") from None
    return BdnFile(graph, metadata, tensors, int(version), len(data), int(hlen))


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise BdnFormatError(problem)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_tensors(header: Any, payload: bytes, declared: int) -> dict[str, np.ndarray]:
    """The tensor table as arrays: every entry ``{dtype, shape, offset, nbytes}`` with a known
    dtype, ``nbytes = prod(shape) * itemsize``, the offset 64-byte aligned, the blobs inside the
    payload and not overlapping."""
    _require(isinstance(header, dict) and isinstance(header.get("tensors"), dict),
             "malformed header (no tensor table)")
    tensors: dict[str, np.ndarray] = {}
    spans: list[tuple[int, int, str]] = []
    for name, e in header["tensors"].items():
        what = f"tensor {name!r}"
        _require(isinstance(e, dict) and set(e) == {"dtype", "shape", "offset", "nbytes"},
                 f"{what}: a table entry needs exactly dtype, shape, offset and nbytes")
        _require(isinstance(e["dtype"], str) and e["dtype"] in _DTYPES,
                 f"{what}: unknown dtype {e['dtype']!r}")
        shape, off, nb = e["shape"], e["offset"], e["nbytes"]
        _require(isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape),
                 f"{what}: shape must be a list of sizes, got {shape!r}")
        _require(_is_int(off) and _is_int(nb) and off >= 0 and off % _ALIGN == 0,
                 f"{what}: offset must be a multiple of {_ALIGN}, got {off!r}")
        dt = np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<")
        _require(nb == math.prod(shape) * dt.itemsize,
                 f"{what}: nbytes {nb} does not match shape {shape} of {e['dtype']}")
        _require(off + nb <= declared, f"{what}: bytes {off}..{off + nb} beyond the payload "
                 f"of {declared}")
        spans.append((off, off + nb, name))
        arr = np.frombuffer(payload, dtype=dt, count=nb // dt.itemsize, offset=off)
        tensors[name] = arr.reshape(shape).astype(dt.newbyteorder("="), copy=False)
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        _require(start >= end, f"tensors {a!r} and {b!r} overlap in the payload")
    return tensors


def _check_ref(o: Any, defined: set[str], tensors: dict[str, np.ndarray], where: str) -> None:
    """Every ``{"t": name}`` in ``o`` names a defined tensor, every ``{"c": name}`` a stored
    constant."""
    if isinstance(o, dict):
        if len(o) == 1 and "t" in o:
            _require(isinstance(o["t"], str) and o["t"] in defined,
                     f"{where} reads {o['t']!r}, which no earlier node writes")
        elif len(o) == 1 and "c" in o:
            _require(isinstance(o["c"], str) and f"const/{o['c']}" in tensors,
                     f"{where} reads constant {o['c']!r}, which is not stored")
        else:
            for v in o.values():
                _check_ref(v, defined, tensors, where)
    elif isinstance(o, list):
        for v in o:
            _check_ref(v, defined, tensors, where)


def check_graph(graph: Any, tensors: dict[str, np.ndarray]) -> None:
    """The graph's structure, without the op table (the runner checks each op against it):
    ``input`` a 4-D float32 NCHW shape, ``modules`` objects whose tensors are stored, every node
    an object ``{op, args, kwargs, outputs}`` reading only tensors written before it (or the
    input, or stored constants) and writing new names, the graph outputs written."""
    _require(isinstance(graph, dict), "'graph' must be an object")
    for key, typ in (("input", dict), ("nodes", list), ("outputs", list), ("modules", dict)):
        _require(isinstance(graph.get(key), typ), f"graph {key!r} must be a {typ.__name__}")
    inp = graph["input"]
    _require(isinstance(inp.get("name"), str) and inp.get("dtype") == "float32"
             and inp.get("layout", "NCHW") == "NCHW", "graph input must be a named float32 "
             "NCHW tensor")
    shape = inp.get("shape")
    _require(isinstance(shape, list) and len(shape) == 4 and all(
        _is_int(d) and 1 <= d <= _MAX_EXTENT for d in shape),
        f"graph input shape must be four sizes in [1, {_MAX_EXTENT}], got {shape!r}")
    for key, m in graph["modules"].items():
        _require(isinstance(m, dict) and isinstance(m.get("kind"), str)
                 and isinstance(m.get("attrs"), dict) and isinstance(m.get("tensors"), dict),
                 f"module {key!r} must be an object with kind, attrs and tensors")
        for local, name in m["tensors"].items():
            _require(isinstance(name, str) and name in tensors,
                     f"module {key!r} tensor {local!r} is not in the tensor table")
    defined = {inp["name"]}
    for i, n in enumerate(graph["nodes"]):
        where = f"node {i}"
        _require(isinstance(n, dict) and isinstance(n.get("op"), str)
                 and isinstance(n.get("args"), list) and isinstance(n.get("kwargs"), dict)
                 and isinstance(n.get("outputs"), list) and n["outputs"],
                 f"{where} must be an object with op, args, kwargs and outputs")
        where = f"node {i} ({n['op']})"
        if n["op"] == "module":
            _require(n.get("module") in graph["modules"] if isinstance(n.get("module"), str)
                     else False, f"{where} names no module of the graph: {n.get('module')!r}")
            _require(len(n["args"]) == 1 and not n["kwargs"] and len(n["outputs"]) == 1,
                     f"{where} must read one tensor and write one")
            _require(isinstance(n["args"][0], dict) and set(n["args"][0]) == {"t"},
                     f"{where} must read a tensor")
        _check_ref([n["args"], n["kwargs"]], defined, tensors, where)
        for out in n["outputs"]:
            _require(isinstance(out, str) and out not in defined,
                     f"{where} writes {out!r}, which is not a new name")
            defined.add(out)
    outs = graph["outputs"]
    _require(len(outs) >= 1 and all(isinstance(o, str) and o in defined for o in outs),
             f"graph outputs {outs!r} are not all written by the nodes")


def node_refs(n: dict[str, Any], key: str = "t") -> list[str]:
    """Names a graph node refers to in its arguments: tensors (``{"t": name}``, the default)
    or graph constants (``key="c"``: ``{"c": name}``)."""
    found: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if key in o and len(o) == 1:
                found.append(o[key])
            else:
                for v in o.values():
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(n["args"])
    walk(n["kwargs"])
    return found
