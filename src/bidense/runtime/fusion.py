"""Epilogue fusion: ``bconv -> add / CFB add -> [RPReLU | LearnableBias -> PReLU | PReLU | ReLU]``
chains run as one binary kernel call.

The packed binary conv's epilogue computes ``y = D * s + b + bypass``, then
``PReLU(y + pre; slope) + post`` (``kernels.binary_conv2d``): the same float32 operations as the
separate graph nodes, one pass instead of three or four. RPReLU is ``pre = -gamma``,
``slope = beta``, ``post = zeta``; LearnableBias -> PReLU is ``pre = bias``; ReLU is slope 0. A
chain is fused only when its conv takes the one-pass packed path (``BinaryConv.fusable``) and
each intermediate has exactly one consumer and is no graph output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .format import node_refs
from .ops import ModuleOp, RunContext
from .ops.binary import BinaryConv
from .ops.float_ops import apply_epilogue, cfb_channels_last, nchw, nhwc

__all__ = ["FusedChain", "plan_fusion", "run_chain"]

_ADD_OPS = ("add", "__add__", "__radd__", "__iadd__", "add_")


@dataclass
class FusedChain:
    """Graph nodes ``members`` (execution indices) run at index ``at`` as one call of the
    ``bconv`` ``module`` on tensor ``x``; ``out`` is the chain's last output."""

    at: int
    members: list[int]
    fused: list[str]
    out: str
    module: str
    x: str | None
    bypass: str | None = None  # tensor added after the bias
    cfb: str | None = None  # the bypass goes through CFB with this grouping first
    pre: np.ndarray | None = None
    slope: np.ndarray | None = None
    post: np.ndarray | None = None


def _tensor_ref(o: Any) -> str | None:
    return o["t"] if isinstance(o, dict) and len(o) == 1 and "t" in o else None


class _Planner:
    def __init__(self, nodes: list[dict[str, Any]], ops: dict[str, ModuleOp],
                 outputs: list[str]) -> None:
        self.nodes, self.ops, self.outputs = nodes, ops, outputs
        self.users: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for r in node_refs(n):
                self.users.setdefault(r, []).append(i)

    def single_user(self, name: str) -> int | None:
        u = self.users.get(name, [])
        return u[0] if len(u) == 1 and name not in self.outputs else None

    def module_op(self, i: int | None) -> ModuleOp | None:
        n = self.nodes[i] if i is not None else None
        return self.ops[n["module"]] if n and n["op"] == "module" else None

    def bypass(self, i: int, src: str) -> tuple[int, dict[str, Any]] | None:
        """``(j, {"bypass", "cfb"})`` when ``src``'s only consumer ``j`` adds a bypass to it."""
        j = self.single_user(src)
        if j is None:
            return None
        a = self.nodes[j]
        args, kw = a["args"], a["kwargs"]
        if a["op"] in _ADD_OPS and not kw and len(args) == 2:
            refs = [_tensor_ref(v) for v in args]
            if refs.count(src) != 1 or None in refs:
                return None
            return j, {"bypass": refs[1 - refs.index(src)], "cfb": None}
        if a["op"] in ("cfb_add", "cfb_add_fn") and _tensor_ref(args[0]) == src and \
                _tensor_ref(args[1]) is not None:
            if a["op"] == "cfb_add":
                cdim, grouping = (args[2], args[3]) if len(args) == 4 else (None, None)
            else:
                cdim = args[3] if len(args) > 3 else kw.get("channel_dim", 1)
                grouping = args[2] if len(args) > 2 else kw.get("grouping", "strided")
            if cdim not in (1, -3) or not isinstance(grouping, str):
                return None
            return j, {"bypass": _tensor_ref(args[1]), "cfb": grouping}
        return None

    def activation(self, name: str, o: int
                   ) -> tuple[list[int], list[str], str, dict[str, Any]] | None:
        """The activation chain fed only by ``name``: ``(members, fused, out, epilogue)`` for
        RPReLU, LearnableBias -> PReLU, PReLU or ReLU (slope 0), else ``None``."""
        i1 = self.single_user(name)
        op1 = self.module_op(i1)
        if op1 is None:
            return None
        out1 = self.nodes[i1]["outputs"][0]
        if op1.kind == "relu":
            return [i1], ["relu"], out1, {
                "pre": None, "slope": np.zeros(o, np.float32), "post": None}
        if op1.kind == "rprelu":
            ma, mt = op1.attrs, op1.tensors
            if ma.get("channel_dim") not in (1, -3) or mt["gamma"].size != o or \
                    mt["beta"].size != o:
                return None
            return [i1], ["rprelu"], out1, {
                "pre": (-mt["gamma"].reshape(-1)).astype(np.float32),
                "slope": mt["beta"].reshape(-1).astype(np.float32),
                "post": None if "zeta" not in mt else mt["zeta"].reshape(-1).astype(np.float32)}
        members, fused, pre, i_prelu, op_prelu = [], [], None, i1, op1
        if op1.kind == "lbias":
            ma, mt = op1.attrs, op1.tensors
            if ma.get("channel_dim") not in (1, -3) or mt["bias"].size != o:
                return None
            i_prelu = self.single_user(out1)
            op_prelu = self.module_op(i_prelu)
            if op_prelu is None or op_prelu.kind != "prelu":
                return None
            members, fused, pre = [i1], ["lbias"], mt["bias"].reshape(-1).astype(np.float32)
        elif op1.kind != "prelu":
            return None
        w = op_prelu.tensors["weight"].reshape(-1).astype(np.float32)
        if w.size not in (1, o):
            return None
        return members + [i_prelu], fused + ["prelu"], self.nodes[i_prelu]["outputs"][0], {
            "pre": pre, "slope": np.broadcast_to(w, (o,)).copy(), "post": None}

    def chains(self) -> dict[int, FusedChain]:
        claimed: set[int] = set()
        chains: dict[int, FusedChain] = {}
        for i, n in enumerate(self.nodes):
            op = self.module_op(i)
            if not isinstance(op, BinaryConv) or not op.fusable:
                continue
            src = n["outputs"][0]
            o = op.out_scale.shape[0]
            add = self.bypass(i, src)
            if add is None:
                act = self.activation(src, o)
                if act is None:
                    continue
                members, fused, out, plan = [i] + act[0], act[1], act[2], dict(act[3])
            else:
                j, plan = add
                members, fused, out = [i, j], [self.nodes[j]["op"]], self.nodes[j]["outputs"][0]
                act = self.activation(out, o)
                if act is not None:
                    members += act[0]
                    fused += act[1]
                    out = act[2]
                    plan.update(act[3])
            if claimed.intersection(members):
                continue
            claimed.update(members)
            at = max(members)
            chains[at] = FusedChain(at=at, members=members, fused=fused, out=out,
                                    module=n["module"], x=_tensor_ref(n["args"][0]), **plan)
        return chains


def plan_fusion(nodes: list[dict[str, Any]], ops: dict[str, ModuleOp],
                outputs: list[str]) -> dict[int, FusedChain]:
    """The fused chains of a graph, keyed by the execution index where each runs (its last
    member); the other members are skipped."""
    return _Planner(nodes, ops, outputs).chains()


def run_chain(chain: FusedChain, op: BinaryConv, env: dict[str, np.ndarray], ctx: RunContext
              ) -> tuple[np.ndarray, str]:
    """Run a fused chain on the tensors in ``env``; returns ``(output, path)``."""
    x = env[chain.x]
    epi: dict[str, Any] = {"pre": chain.pre, "slope": chain.slope, "post": chain.post}
    if chain.bypass is None:
        return op.run(x, ctx, epi)
    byp = env[chain.bypass]
    o = op.out_scale.shape[0]
    if chain.cfb is not None:
        byp = cfb_channels_last(byp, o, 1, chain.cfb, threads=ctx.threads)
    a = op.attrs
    kh, kw = a["kernel"]
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if byp.ndim == 4 and byp.shape == (x.shape[0], o, ho, wo) and byp.dtype == np.float32:
        epi["bypass"] = nhwc(byp)
        return op.run(x, ctx, epi)
    # the bypass broadcasts or has another dtype: add it as the graph did, then the rest
    y, path = op.run(x, ctx)
    y = y + byp
    if epi["slope"] is not None:
        y = nchw(apply_epilogue(nhwc(y), epi))
    return y, path
