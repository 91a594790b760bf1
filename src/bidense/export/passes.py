"""Graph passes between lowering and writing: BatchNorm folding, identity dropping, renaming.

BN folding is exact algebra: with ``y = D * s_o + b_o`` (``D`` the conv of the (binarized)
input with the (+-1) weights, ``s_o`` the weight scale) and eval BN
``z = (y - mu) / sqrt(var + eps) * g + beta``,
``z = D * (s_o k_o) + (b_o k_o + beta - mu k_o)`` with ``k_o = g / sqrt(var + eps)``; only float
rounding differs from PyTorch (the products are taken in float64, stored as float32).

Nodes are the capture's JSON-able dicts: ``op``, ``kind``, ``args``, ``kwargs``, ``outputs`` and
``module`` for module nodes; a tensor argument is ``{"t": name}``, a constant ``{"c": name}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bidense.export.lower import MODULE_LOWERINGS
from bidense.runtime.format import node_refs

__all__ = ["BN_FOLDABLE", "drop_identities", "fold_batchnorm", "rename_tensors",
           "used_constants"]

#: module kinds whose per-output-channel ``out_scale`` / ``out_bias`` absorb a following BN
BN_FOLDABLE: frozenset[str] = frozenset(e.kind for e in MODULE_LOWERINGS if e.folds_bn)
#: functions that return their input unchanged (without arguments that change it)
_IDENTITY_FUNCTIONS = ("contiguous", "detach", "clone")

Node = dict[str, Any]


def fold_batchnorm(nodes: list[Node], modules: dict[str, dict[str, Any]]
                   ) -> tuple[list[Node], dict[str, str]]:
    """Fold ``conv -> bn`` pairs where the conv output has no other consumer.

    The folded module is added to ``modules`` as ``"<conv>+<bn>"`` (attribute ``bn_folded``);
    returns the remaining nodes and the map from each dropped BN output to the conv output.
    """
    users: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for ref in node_refs(n):
            users.setdefault(ref, []).append(i)
    drop: set[int] = set()
    rename: dict[str, str] = {}
    for i, n in enumerate(nodes):
        if n["op"] != "module" or n["kind"] != "bn":
            continue
        src = n["args"][0].get("t") if isinstance(n["args"][0], dict) else None
        j = next((k for k, p in enumerate(nodes) if src in p["outputs"]), None)
        if j is None or len(users.get(src, [])) != 1:
            continue
        prod = nodes[j]
        if prod["op"] != "module" or prod["kind"] not in BN_FOLDABLE:
            continue
        ckey, bkey = prod["module"], n["module"]
        fkey = f"{ckey}+{bkey}"
        if fkey not in modules:
            conv, bn = modules[ckey], modules[bkey]
            ts = dict(conv["tensors"])
            k, t = bn["tensors"]["scale"], bn["tensors"]["shift"]
            ts["out_scale"] = (ts["out_scale"].astype(np.float64) * k).astype(np.float32)
            ts["out_bias"] = (ts["out_bias"].astype(np.float64) * k + t).astype(np.float32)
            modules[fkey] = {"kind": conv["kind"], "attrs": dict(conv["attrs"], bn_folded=bkey),
                             "tensors": ts}
        prod["module"] = fkey
        rename[n["outputs"][0]] = prod["outputs"][0]
        drop.add(i)
    kept = [n for i, n in enumerate(nodes) if i not in drop]
    return rename_tensors(kept, rename), rename


def _resolve(name: str, rename: dict[str, str]) -> str:
    while name in rename:
        name = rename[name]
    return name


def rename_tensors(nodes: list[Node], rename: dict[str, str]) -> list[Node]:
    """Point every tensor argument ``{"t": old}`` at ``rename[old]`` (chains followed)."""

    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            if "t" in o and len(o) == 1:
                return {"t": _resolve(o["t"], rename)}
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    for n in nodes:
        n["args"], n["kwargs"] = walk(n["args"]), walk(n["kwargs"])
    return nodes


def drop_identities(nodes: list[Node], outputs: list[str]) -> tuple[list[Node], list[str]]:
    """Remove identity modules (Dropout, Identity) and ``contiguous`` /
    ``detach`` / ``clone`` calls, wiring their consumers (and the graph outputs) to their input."""
    rename: dict[str, str] = {}
    kept = []
    for n in nodes:
        ident = n["op"] == "module" and n["kind"] == "identity"
        ident = ident or (n["op"] in _IDENTITY_FUNCTIONS and not n["kwargs"])
        if ident and isinstance(n["args"][0], dict) and "t" in n["args"][0]:
            rename[n["outputs"][0]] = n["args"][0]["t"]
        else:
            kept.append(n)
    return rename_tensors(kept, rename), [_resolve(o, rename) for o in outputs]


def used_constants(nodes: list[Node]) -> set[str]:
    """Names of the graph constants ``{"c": name}`` the nodes refer to."""
    return {name for n in nodes for name in node_refs(n, key="c")}
