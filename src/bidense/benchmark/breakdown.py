"""Where the time goes: the runtime's per-node report summed per kind of work (no torch).

:meth:`bidense.runtime.Runtime.report` lists, per node of the last call, ``name, op, path, ms``.
:data:`NODE_CATEGORIES` maps each ``(op, path prefix)`` to one kind of work; a node takes the
entry of its op with the longest prefix of its path (``""`` matches any path), and an op that
is not listed counts as ``other function``. ``framework overhead`` is the wall time of the call
minus the sum of the node times (input checks, argument decoding, dispatch, freeing, the final
NCHW copy). What a node's time includes: a binary layer's time holds its binarizer (threshold,
packing, DAB statistics: one pass with the packing) and every op fused into its epilogue (the
report's ``fused`` field: CFB add, PReLU, RPReLU, ReLU).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CATEGORIES", "NODE_CATEGORIES", "categorize", "format_breakdown", "time_breakdown",
           "time_shares"]

_BINARY_OPS = ("bconv", "bconvT", "blinear")
_FLOAT_CONVS = ("conv", "convT", "linear", "matmul", "__matmul__", "bmm")
_NORMS_ACTIVATIONS = (
    "bn", "ln", "ln2d", "layer_norm", "gelu", "relu", "relu_", "sigmoid", "sigmoid_", "tanh",
    "tanh_", "prelu", "lbias", "rprelu", "maxout", "act", "identity", "hardtanh", "hardtanh_",
    "clamp", "clamp_", "clip", "softmax", "sign")
_POOL_RESIZE_CONCAT = ("maxpool", "avgpool", "adapool", "avg_pool2d", "adaptive_avg_pool2d",
                       "interpolate", "pixel_shuffle", "cat", "concat", "concatenate")
_CFB = ("cfb", "cfb_add", "cfb_add_fn")

#: ``(op kind, path prefix) -> category`` of a report row (see the module docstring)
NODE_CATEGORIES: dict[tuple[str, str], str] = {
    **{(op, ""): "packed conv" for op in _BINARY_OPS},  # packed, depthwise, DAB shared folded
    **{(op, "DAB float path"): "DAB float path" for op in _BINARY_OPS},
    **{(op, "float"): "float conv" for op in _BINARY_OPS},  # float (...) binary-layer paths
    **{(op, ""): "float conv" for op in _FLOAT_CONVS},
    **{(op, ""): "CFB" for op in _CFB},
    **{(op, ""): "norm/activation" for op in _NORMS_ACTIVATIONS},
    **{(op, ""): "pool/resize/concat" for op in _POOL_RESIZE_CONCAT},
}
OTHER, OVERHEAD = "other function", "framework overhead"
#: every category, in table order
CATEGORIES: tuple[str, ...] = (*dict.fromkeys(NODE_CATEGORIES.values()), OTHER, OVERHEAD)

_PREFIXES: dict[str, list[tuple[str, str]]] = {}
for (_op, _prefix), _category in NODE_CATEGORIES.items():
    _PREFIXES.setdefault(_op, []).append((_prefix, _category))
for _entries in _PREFIXES.values():
    _entries.sort(key=lambda e: -len(e[0]))  # longest prefix first


def categorize(op: str, path: str) -> str:
    """The category of one report row (``op``, ``path``), per :data:`NODE_CATEGORIES`."""
    for prefix, category in _PREFIXES.get(op, ()):
        if path.startswith(prefix):
            return category
    return OTHER


def time_breakdown(report: Iterable[Mapping[str, Any]], wall_ms: float) -> dict[str, float]:
    """Milliseconds per category (every one of :data:`CATEGORIES`) of one call whose
    per-node ``report`` and wall time ``wall_ms`` are given."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for row in report:
        out[categorize(str(row["op"]), str(row["path"]))] += float(row["ms"])
    out[OVERHEAD] = max(0.0, float(wall_ms) - sum(out.values()))
    return out


def time_shares(breakdown: Mapping[str, float]) -> dict[str, float]:
    """Each category's share of the total (the shares sum to 1)."""
    total = sum(breakdown.values()) or 1.0
    return {k: v / total for k, v in breakdown.items()}


def format_breakdown(by_threads: Mapping[str, Mapping[str, float]], indent: str = "  ") -> str:
    """A table of ``{threads: breakdown}``: ms and share per category, one column per thread
    count."""
    cols = list(by_threads)
    lines = [indent + f"{'where the time goes':<22}" + "".join(
        f"{t + ' thr: ms / share':>25}" for t in cols)]
    shares = {t: time_shares(b) for t, b in by_threads.items()}
    for cat in CATEGORIES:
        lines.append(indent + f"{cat:<22}" + "".join(
            f"{by_threads[t][cat]:>16.2f} / {100 * shares[t][cat]:>5.1f}%" for t in cols))
    lines.append(indent + f"{'total (wall)':<22}" + "".join(
        f"{sum(by_threads[t].values()):>16.2f} / 100.0%" for t in cols))
    return "\n".join(lines)
