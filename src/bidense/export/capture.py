"""Graph capture for the packed exporter (used by :func:`bidense.export.export`).

Why not ``torch.fx``: the zoo models call ``tuple(x.shape[-2:])``, check ``x.dim()`` and resize the
ViT input conditionally, which symbolic tracing cannot follow. Instead the model runs once on the
example input under a :class:`torch.overrides.TorchFunctionMode` that records every torch call
whose inputs depend on the graph input, while every module an entry of the lowering table
matches (:data:`bidense.export.lower.MODULE_LOWERINGS`) is recorded as a single *module* node
(its internals are not traced). Anything that does not depend on the input (parameters, the
interpolated ViT position embedding, expanded class tokens) is constant-folded. The graph is
therefore specialised to the example input's shape, which the runtime checks.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from bidense.export.lower import AUTOGRAD_FUNCTIONS, LEAF_FUNCTIONS, leaf_kind

__all__ = ["CapturedGraph", "capture"]

# functions that only read metadata; they are never graph nodes
_META = {"__get__", "dim", "size", "numel", "__len__", "is_floating_point", "is_contiguous",
         "get_device", "__format__", "__repr__", "element_size", "ndimension"}
_DATA_DEPENDENT = {"item", "__bool__", "tolist", "__int__", "__float__", "__index__", "numpy"}


class CapturedGraph:
    """Nodes (JSON-able dicts), constants (torch tensors) and the leaf modules by key."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.constants: dict[str, Tensor] = {}
        self.modules: dict[str, tuple[str, nn.Module]] = {}
        self.input_name = "input"
        self.outputs: list[str] = []


class _Recorder(TorchFunctionMode):
    def __init__(self, graph: CapturedGraph) -> None:
        super().__init__()
        self.g = graph
        self.names: dict[int, str] = {}
        self.keep: list[Any] = []
        self.const_ids: dict[int, str] = {}
        self.depth = 0
        self.counter = 0

    # -- bookkeeping ---------------------------------------------------------------------
    def track(self, t: Tensor, name: str) -> None:
        self.names[id(t)] = name
        self.keep.append(t)

    def new_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def tracked(self, obj: Any) -> list[Tensor]:
        found: list[Tensor] = []

        def walk(o: Any) -> None:
            if isinstance(o, Tensor):
                if id(o) in self.names:
                    found.append(o)
            elif isinstance(o, list | tuple):
                for v in o:
                    walk(v)
            elif isinstance(o, dict):
                for v in o.values():
                    walk(v)

        walk(obj)
        return found

    def encode(self, o: Any) -> Any:
        if isinstance(o, Tensor):
            if id(o) in self.names:
                return {"t": self.names[id(o)]}
            if id(o) not in self.const_ids:
                cname = f"const_{len(self.g.constants)}"
                self.const_ids[id(o)] = cname
                self.keep.append(o)
                self.g.constants[cname] = o.detach().clone()
            return {"c": self.const_ids[id(o)]}
        if isinstance(o, torch.Size):
            return [int(v) for v in o]
        if isinstance(o, list | tuple):
            return [self.encode(v) for v in o]
        if isinstance(o, dict):
            return {"kw": {k: self.encode(v) for k, v in o.items()}}
        if isinstance(o, torch.dtype):
            return {"dtype": str(o).replace("torch.", "")}
        if isinstance(o, slice):
            return {"slice": [self.encode(o.start), self.encode(o.stop), self.encode(o.step)]}
        if o is Ellipsis:
            return {"ellipsis": True}
        if o is None or isinstance(o, bool | int | str):
            return o
        if isinstance(o, float):
            if not math.isfinite(o):
                return {"float": repr(o)}
            return o
        if isinstance(o, torch.memory_format | torch.device | torch.layout):
            return None
        raise TypeError(f"cannot record an argument of type {type(o).__name__}")

    def record(self, op: str, args: Any, kwargs: Any, out: Any, **extra: Any) -> Any:
        node: dict[str, Any] = {"op": op, "args": self.encode(list(args)),
                                "kwargs": self.encode(dict(kwargs))["kw"], **extra}
        if isinstance(out, Tensor):
            name = self.new_name(op.strip("_"))
            node["outputs"] = [name]
            self.track(out, name)
        elif isinstance(out, list | tuple) and all(isinstance(t, Tensor) for t in out):
            base = self.new_name(op.strip("_"))
            node["outputs"] = [f"{base}.{i}" for i in range(len(out))]
            for t, n in zip(out, node["outputs"]):
                self.track(t, n)
        else:
            raise TypeError(f"op {op!r} returned {type(out).__name__}, which cannot be recorded")
        self.g.nodes.append(node)
        return out

    # -- torch function hook -------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth:
            return out
        name = getattr(func, "__name__", str(func))
        if name in _META:
            return out
        if not self.tracked((args, kwargs)):
            return out  # constant: folded into the graph as a value
        if name == "apply":
            # custom autograd Functions are opaque; known ones map to runtime ops
            cls = getattr(getattr(func, "__self__", None), "__name__", "?")
            op = AUTOGRAD_FUNCTIONS.get(cls)
            if op is None:
                return self.record(f"autograd.Function {cls}", args, kwargs, out, kind="fn")
            return self.record(op, args, kwargs, out, kind="fn")
        if name.endswith("_") and not name.startswith("__") or name.startswith("__i"):
            target = args[0] if args else None
            if isinstance(target, Tensor) and (target._base is not None or id(target) not in
                                                 self.names):
                # the mutation would reach a base tensor the graph knows under another name
                return self.record(f"in-place {name} on a view", args, kwargs, out, kind="fn")
        if name in _DATA_DEPENDENT:
            raise TypeError(
                f"the model uses '{name}' on a value that depends on the input "
                "(data-dependent control flow cannot be exported)"
            )
        return self.record(name, args, kwargs, out, kind="fn")


def _patch_leaf_functions(rec: _Recorder) -> list[tuple[Any, str, Any]]:
    """Wrap every :data:`LEAF_FUNCTIONS` function bound in a loaded ``bidense.nn`` /
    ``bidense.models`` module so that a call is recorded as one node; returns what to undo."""
    undo = []
    for modname, mod in list(sys.modules.items()):
        if mod is None or not modname.startswith(("bidense.nn", "bidense.models")):
            continue
        for fname, op in LEAF_FUNCTIONS.items():
            orig = getattr(mod, fname, None)
            if orig is None or not callable(orig):
                continue

            def wrapper(*args, _orig=orig, _op=op, **kw):
                rec.depth += 1
                try:
                    out = _orig(*args, **kw)
                finally:
                    rec.depth -= 1
                if rec.depth or not rec.tracked((args, kw)):
                    return out
                return rec.record(_op, args, kw, out, kind="fn")

            setattr(mod, fname, wrapper)
            undo.append((mod, fname, orig))
    return undo


def capture(model: nn.Module, example: Tensor) -> tuple[CapturedGraph, Tensor]:
    """Run ``model(example)`` once and record its graph. Returns ``(graph, reference output)``."""
    g = CapturedGraph()
    rec = _Recorder(g)
    patched: list[nn.Module] = []
    keys: dict[int, str] = {}
    for qual, m in model.named_modules():
        kind = leaf_kind(m)
        if kind is None or id(m) in keys:
            continue
        key = qual or "root"
        keys[id(m)] = key
        g.modules[key] = (kind, m)

    def make_wrapper(m: nn.Module, key: str, kind: str, orig):
        def wrapper(*args, **kw):
            rec.depth += 1
            try:
                out = orig(*args, **kw)
            finally:
                rec.depth -= 1
            if rec.depth or not rec.tracked((args, kw)):
                return out
            if kw or len(args) != 1:
                raise TypeError(f"module {key} ({kind}) called with extra arguments")
            return rec.record("module", args, {}, out, kind=kind, module=key)

        return wrapper

    # leaves nested in leaves (e.g. a binarizer inside a binary conv) must not be patched
    for _qual, m in model.named_modules():
        if id(m) not in keys:
            continue
        key = keys[id(m)]
        if any(key.startswith(k + ".") for k in keys.values() if k != key):
            continue
        m.forward = make_wrapper(m, key, g.modules[key][0], m.forward)  # type: ignore[method-assign]
        patched.append(m)
    x = example.detach().clone()
    rec.track(x, g.input_name)
    undo = _patch_leaf_functions(rec)
    try:
        with torch.no_grad(), rec:
            out = model(x)
    finally:
        for m in patched:
            del m.forward
        for mod, fname, orig in undo:
            setattr(mod, fname, orig)
    if not isinstance(out, Tensor) or id(out) not in rec.names:
        raise TypeError("the model output must be one tensor that depends on the input")
    g.outputs = [rec.names[id(out)]]
    used = {n["module"] for n in g.nodes if n.get("kind") != "fn"}
    g.modules = {k: v for k, v in g.modules.items() if k in used}
    return g, out
