"""The efficiency report: per-layer bits, parameters, binary and floating-point MACs.

:func:`summarize` runs one forward pass of the model (eval mode, ``torch.no_grad``) under a
``TorchDispatchMode`` that sees every ATen operator, including functional matmuls that module
hooks miss (attention), while forward hooks keep track of which module issued each operator.
Each operator is counted by the rules in :mod:`bidense.profile.rules` and attributed to one row.

Conventions (the field's, see docs/efficiency.md): a **BOP** is a MAC whose two operands are both
1-bit; **FLOPs** are floating-point MACs (not 2x MACs); **OPs = BOPs/64 + FLOPs**; elementwise
work (normalisation, binarizer statistics, bypass averages, interpolation, activations) is a
separate, always-visible column that is not part of OPs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import rules
from .modules import self_reported_counter

__all__ = ["TOTAL_KEYS", "Summary", "summarize", "is_binary_layer", "parse_input_shape"]

_FP_MAC_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                   nn.ConvTranspose3d, nn.Linear)
_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d)

#: Keys of :attr:`Summary.totals`.
TOTAL_KEYS = ("total_params", "binary_params", "fp_params", "bits", "fp32_equivalent_params",
              "memory_bytes", "binary_macs", "fp_macs", "bops", "flops", "ops", "elementwise",
              "binary_mac_share")


def is_binary_layer(module: nn.Module) -> bool:
    """True for a binary layer: a module with ``act_binarizer``, ``weight_binarizer``, ``weight``.

    This is the attribute contract of :mod:`bidense.binarize`; the layer is *fully* binary (its
    MACs count as BOPs) only when both binarizers are 1-bit.
    """
    return (
        getattr(module, "act_binarizer", None) is not None
        and getattr(module, "weight_binarizer", None) is not None
        and isinstance(getattr(module, "weight", None), torch.Tensor)
    )


def _layer_bits(module: nn.Module) -> tuple[int, int]:
    """(weight_bits, act_bits) of a binary layer; a missing ``bits`` means full precision."""
    wb = getattr(module, "weight_bits", None)
    ab = getattr(module, "act_bits", None)
    if not isinstance(wb, int):
        wb = int(getattr(module.weight_binarizer, "bits", 32))
    if not isinstance(ab, int):
        ab = int(getattr(module.act_binarizer, "bits", 32))
    return wb, ab


def parse_input_shape(shape: str | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"1x3x480x480"`` (or a sequence of ints) into a shape tuple of positive ints."""
    if isinstance(shape, str):
        parts = shape.lower().replace(",", "x").replace("*", "x").split("x")
        try:
            dims = tuple(int(p) for p in parts if p.strip() != "")
        except ValueError:
            raise ValueError(
                f"input shape {shape!r} is not of the form BxCxHxW (e.g. 1x3x480x480)"
            ) from None
    else:
        dims = tuple(int(d) for d in shape)
    if len(dims) < 2 or any(d <= 0 for d in dims):
        raise ValueError(
            f"input shape {shape!r} must have >= 2 positive dimensions, e.g. 1x3x64x64"
        )
    return dims


@dataclass
class _Row:
    name: str
    type: str
    module: nn.Module | None
    weight_bits: int | None = None
    act_bits: int | None = None
    output_shape: list[int] | None = None
    calls: int = 0
    binary_params: float = 0
    fp_params: float = 0
    binary_macs: int = 0
    fp_macs: int = 0
    elementwise: int = 0
    ops_seen: dict[str, int] = field(default_factory=dict)


@dataclass
class _Trace:
    """What one forward pass revealed, shared by the honest and the paper-compatible counts."""

    rows: dict[int, _Row]
    order: list[int]
    row_of: dict[int, int]
    ran: set[int]
    read_ptrs: set[int]
    conv_exec_order: list[nn.Module]
    # per row: MACs that a hook-based counter (thop) would see: (binary conv MACs, FP MACs).
    paper_macs: dict[int, list[int]]
    op_breakdown: dict[str, dict[str, int]]
    notes: list[str]
    offline_ops: int


class _Recorder(TorchDispatchMode):
    """Dispatch mode that attributes every ATen op to the module currently running."""

    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.tracer.paused:
            self.tracer.record(func, args, kwargs, out)
        return out


class _Tracer:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stack: list[nn.Module] = []
        self.paused = False
        self.names: dict[int, str] = {}
        for name, mod in model.named_modules():
            self.names.setdefault(id(mod), name or "(model)")
        self.row_of: dict[int, int] = {}
        self.offline: set[int] = set()
        self._assign(model, None, False)
        self.rows: dict[int, _Row] = {}
        self.order: list[int] = []
        self.ran: set[int] = set()
        self.read_ptrs: set[int] = set()
        self.conv_exec_order: list[nn.Module] = []
        self.paper_macs: dict[int, list[int]] = {}
        self.op_breakdown: dict[str, dict[str, int]] = {}
        self.notes: list[str] = []
        self.offline_ops = 0
        self.modules = {id(m): m for m in model.modules()}
        self.counters = {
            id(m): counter
            for m in model.modules()
            if (counter := self_reported_counter(m)) is not None
        }

    def _assign(self, mod: nn.Module, binary_owner: int | None, offline: bool) -> None:
        if id(mod) in self.row_of:
            return
        owner = binary_owner
        if owner is None and is_binary_layer(mod):
            owner = id(mod)
        self.row_of[id(mod)] = owner if owner is not None else id(mod)
        if offline:
            self.offline.add(id(mod))
        for cname, child in mod.named_children():
            child_offline = offline or (
                owner == id(mod) and cname == "weight_binarizer" and binary_owner is None
            )
            self._assign(child, owner, child_offline)

    def row(self, row_id: int) -> _Row:
        r = self.rows.get(row_id)
        if r is None:
            mod = self.modules[row_id]
            r = _Row(self.names.get(row_id, type(mod).__name__), type(mod).__name__, mod)
            if is_binary_layer(mod):
                r.weight_bits, r.act_bits = _layer_bits(mod)
            elif isinstance(mod, _FP_MAC_MODULES):
                r.weight_bits, r.act_bits = 32, 32
            self.rows[row_id] = r
            self.order.append(row_id)
        return r

    # -- hooks ---------------------------------------------------------------------------
    def pre_hook(self, mod: nn.Module, args: Any) -> None:
        self.stack.append(mod)
        self.ran.add(id(mod))
        if id(mod) not in self.offline:
            self.row(self.row_of[id(mod)])

    def post_hook(self, mod: nn.Module, args: Any, output: Any) -> None:
        if self.stack and self.stack[-1] is mod:
            self.stack.pop()
        if id(mod) in self.offline:
            return
        if isinstance(mod, _CONV_MODULES):
            self.conv_exec_order.append(mod)
        row_id = self.row_of[id(mod)]
        if row_id == id(mod):
            r = self.row(row_id)
            r.calls += 1
            if r.output_shape is None:
                outs = rules._tensors(output if not isinstance(output, dict)
                                      else list(output.values()))
                if outs:
                    r.output_shape = list(outs[0].shape)
        counter = self.counters.get(id(mod))
        if counter is not None:
            self.paused = True
            try:
                counts = dict(counter(args, output))
            finally:
                self.paused = False
            r = self.row(row_id)
            r.binary_macs += int(counts.get("binary_macs", 0))
            r.fp_macs += int(counts.get("fp_macs", 0))
            r.elementwise += int(counts.get("elementwise", 0))
            ref = counts.get("reference_fp_macs")
            if ref:
                ours = counts.get("binary_macs", 0) / 64 + counts.get("fp_macs", 0)
                ratio = ref / ours if ours else math.inf
                self.notes.append(
                    f"{self.names[id(mod)]}: self-reported {ours:,.0f} OPs vs "
                    f"{ref:,.0f} reference FP MACs ({ratio:,.1f}x)"
                )

    # -- ops -----------------------------------------------------------------------------
    def record(self, func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> None:
        for t in rules._tensors(list(args)):
            if t.device.type != "meta":
                self.read_ptrs.add(t.data_ptr())
        if not self.stack:
            return
        inner = self.stack[-1]
        if id(inner) in self.offline:
            # Weight binarization happens once, offline, in a deployed model.
            self.offline_ops += 1
            return
        if id(inner) in self.counters:
            return
        name = rules.op_name(func)
        row_id = self.row_of[id(inner)]
        r = self.row(row_id)
        stats = self.op_breakdown.setdefault(
            name, {"calls": 0, "binary_macs": 0, "fp_macs": 0, "elementwise": 0}
        )
        stats["calls"] += 1
        r.ops_seen[name] = r.ops_seen.get(name, 0) + 1
        ew = rules.elementwise_count(name, args, kwargs, out)
        r.elementwise += ew
        stats["elementwise"] += ew
        if name not in rules.MAC_OPS:
            return
        macs = rules.mac_count(name, args, kwargs, out)
        binary, paper_kind = self._classify(name, inner, args)
        pm = self.paper_macs.setdefault(row_id, [0, 0])
        if binary:
            r.binary_macs += macs
            stats["binary_macs"] += macs
        else:
            r.fp_macs += macs
            stats["fp_macs"] += macs
        if paper_kind == "binary":
            pm[0] += macs
        elif paper_kind == "fp":
            pm[1] += macs

    def _classify(self, name: str, inner: nn.Module, args: Sequence[Any]) -> tuple[bool, str]:
        """(is the MAC binary, how a hook-based counter would see it: binary/fp/none)."""
        is_conv = name in ("convolution", "_convolution")
        if is_binary_layer(inner):
            wshape = tuple(inner.weight.shape)
            if is_conv:
                mine = tuple(args[1].shape) == wshape
            else:
                ops = rules.mac_operands(name, args)
                mine = ops is not None and any(
                    tuple(o.shape[-2:]) in (wshape, wshape[::-1]) for o in ops
                )
            if mine:
                wb, ab = _layer_bits(inner)
                full = wb == 1 and ab == 1
                # The reference disabled its binary-linear counter (bidense-method.md §14).
                if is_conv:
                    return full, "binary" if full else "fp"
                return full, "none"
            return False, "none"
        if isinstance(inner, _FP_MAC_MODULES):
            return False, "fp"
        ops = rules.mac_operands(name, args)
        if ops is not None:
            a, b = ops
            if (a.is_floating_point() or b.is_floating_point()) and rules.one_magnitude(
                a, -1
            ) and rules.one_magnitude(b, -2):
                return True, "none"
        return False, "none"

    def trace(self) -> _Trace:
        return _Trace(self.rows, self.order, self.row_of, self.ran, self.read_ptrs,
                      self.conv_exec_order, self.paper_macs, self.op_breakdown, self.notes,
                      self.offline_ops)


def _run_trace(model: nn.Module, input_shape: tuple[int, ...]) -> _Trace:
    tracer = _Tracer(model)
    handles = []
    seen: set[int] = set()
    for mod in model.modules():
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        handles.append(mod.register_forward_pre_hook(tracer.pre_hook))
        handles.append(mod.register_forward_hook(tracer.post_hook))
    was_training = model.training
    try:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        x = torch.randn(*input_shape, device=device, dtype=dtype)
        model.eval()
        with torch.no_grad(), _Recorder(tracer):
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return tracer.trace()


def _honest_params(model: nn.Module, tr: _Trace) -> None:
    seen: set[int] = set()
    names = {}
    for name, mod in model.named_modules():
        names.setdefault(id(mod), name or "(model)")
    tracer_rows = tr.rows
    for mod in model.modules():
        for pname, p in mod._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            row_id = tr.row_of[id(mod)]
            row = tracer_rows.get(row_id)
            if row is None:
                owner = next(m for m in model.modules() if id(m) == row_id)
                row = _Row(names[row_id], type(owner).__name__, owner)
                tracer_rows[row_id] = row
                tr.order.append(row_id)
            binary = (
                is_binary_layer(mod) and pname == "weight" and _layer_bits(mod)[0] == 1
            )
            if binary:
                row.binary_params += p.numel()
            else:
                row.fp_params += p.numel()


def _paper_params(model: nn.Module, tr: _Trace) -> list[str]:
    """State-dict entry counts in the BiDense reference convention (bidense-method.md §14)."""
    notes: list[str] = []
    has_binary = any(is_binary_layer(m) and _layer_bits(m)[0] == 1 for m in model.modules())
    classifier: nn.Module | None = None
    if has_binary:
        for mod in reversed(tr.conv_exec_order):
            if (isinstance(mod, nn.Conv2d) and not is_binary_layer(mod)
                    and all(int(k) == 1 for k in mod.kernel_size)):
                classifier = mod
                break
    excluded = 0
    for key, tensor in model.state_dict(keep_vars=True).items():
        prefix, _, attr = key.rpartition(".")
        mod = model.get_submodule(prefix) if prefix else model
        used = id(mod) in tr.ran or any(
            t.data_ptr() in tr.read_ptrs
            for t in list(mod._parameters.values()) + list(mod._buffers.values())
            if isinstance(t, torch.Tensor) and t.numel() > 0
        )
        if not used:
            excluded += tensor.numel()
            continue
        row_id = tr.row_of[id(mod)]
        row = tr.rows.get(row_id)
        if row is None:
            owner = mod if row_id == id(mod) else next(
                m for m in model.modules() if id(m) == row_id)
            row = _Row(prefix or "(model)", type(owner).__name__, owner)
            tr.rows[row_id] = row
            tr.order.append(row_id)
        binary = attr == "weight" and (
            (is_binary_layer(mod) and _layer_bits(mod)[0] == 1) or mod is classifier
        )
        if binary:
            row.binary_params += tensor.numel()
        else:
            row.fp_params += tensor.numel()
    if classifier is not None:
        name = next(n for n, m in model.named_modules() if m is classifier)
        notes.append(f"paper-compat: the FP 1x1 classifier {name}.weight is counted as binary")
    if excluded:
        notes.append(f"paper-compat: {excluded:,} state-dict entries of modules never run are "
                     "excluded")
    return notes


def _fmt(n: float) -> str:
    if n is None:
        return "-"
    a = abs(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if a >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}B"


class Summary:
    """The efficiency report of one model on one input shape.

    ``rows`` holds one dict per layer (``name, type, weight_bits, act_bits, output_shape,
    calls, binary_params, fp_params, memory_bytes, binary_macs, fp_macs, bops, flops, ops,
    elementwise``), ``totals`` the sums (:data:`TOTAL_KEYS`: ``total_params, binary_params,
    fp_params, bits, fp32_equivalent_params, memory_bytes, binary_macs, fp_macs, bops, flops,
    ops, elementwise, binary_mac_share``);
    ``fp32`` is the full-precision model's Summary when one was given. With memory_bytes =
    binary_params/8 + fp_params*4 and ops = bops/64 + flops.
    """

    def __init__(self, rows: list[dict[str, Any]], totals: dict[str, Any],
                 input_shape: tuple[int, ...], paper_compat: bool, notes: list[str],
                 op_breakdown: Mapping[str, Mapping[str, int]], model_name: str = "",
                 fp32: Summary | None = None) -> None:
        self.rows = rows
        self.totals = totals
        self.input_shape = tuple(input_shape)
        self.paper_compat = paper_compat
        self.notes = notes
        self.op_breakdown = {k: dict(v) for k, v in op_breakdown.items()}
        self.model_name = model_name
        self.fp32 = fp32

    def ratios(self) -> dict[str, float] | None:
        """fp32 / this model for params, bits (memory) and OPs; None without an fp32 summary."""
        if self.fp32 is None:
            return None
        out = {}
        for key in ("total_params", "bits", "ops"):
            mine, ref = self.totals[key], self.fp32.totals[key]
            out[key] = ref / mine if mine else math.inf
        return out

    def to_dict(self, include_layers: bool = True) -> dict[str, Any]:
        """JSON-ready dict: the totals, ``layers`` (the rows), ``fp32`` (same keys or None)."""
        d: dict[str, Any] = {"model": self.model_name,
                             "input_shape": list(self.input_shape),
                             "paper_compat": self.paper_compat}
        d.update(self.totals)
        if include_layers:
            d["layers"] = [dict(r) for r in self.rows]
        d["elementwise_by_op"] = {k: v["elementwise"] for k, v in
                                  sorted(self.op_breakdown.items()) if v["elementwise"]}
        d["notes"] = list(self.notes)
        d["fp32"] = self.fp32.to_dict(include_layers) if self.fp32 is not None else None
        d["ratios"] = self.ratios()
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """``json.dumps(self.to_dict())``."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, max_name: int = 40) -> str:
        """A readable per-layer text table with totals (and fp32 side by side, if present)."""
        head = ("layer", "type", "W/A", "output", "1-bit", "32-bit", "memory", "bin MACs",
                "FP MACs", "OPs", "elementwise")
        lines_data = []
        for r in self.rows:
            wa = ("-" if r["weight_bits"] is None else
                  f"{r['weight_bits']}/{r['act_bits']}")
            name = r["name"] if len(r["name"]) <= max_name else "..." + r["name"][-max_name + 3:]
            shape = "x".join(str(s) for s in r["output_shape"]) if r["output_shape"] else "-"
            lines_data.append((name, r["type"], wa, shape, _fmt(r["binary_params"]),
                               _fmt(r["fp_params"]), _fmt_bytes(r["memory_bytes"]),
                               _fmt(r["binary_macs"]), _fmt(r["fp_macs"]), _fmt(r["ops"]),
                               _fmt(r["elementwise"])))
        t = self.totals
        total_line = ("TOTAL", "", "", "", _fmt(t["binary_params"]), _fmt(t["fp_params"]),
                      _fmt_bytes(t["memory_bytes"]), _fmt(t["binary_macs"]), _fmt(t["fp_macs"]),
                      _fmt(t["ops"]), _fmt(t["elementwise"]))
        widths = [max(len(str(x[i])) for x in [head, total_line, *lines_data])
                  for i in range(len(head))]

        def fmt_line(cells: Sequence[str]) -> str:
            return "  ".join(
                str(c).ljust(w) if i < 4 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        sep = "-" * len(fmt_line(head))
        mode = "paper-compat (BiDense reference conventions)" if self.paper_compat else "honest"
        shape = "x".join(str(s) for s in self.input_shape)
        out = [f"Efficiency summary: {self.model_name or 'model'}, input {shape}, {mode}",
               fmt_line(head), sep, *[fmt_line(x) for x in lines_data], sep,
               fmt_line(total_line), ""]
        out.extend(self._totals_block())
        if self.notes:
            out.append("")
            out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def _totals_block(self) -> list[str]:
        t = self.totals
        keys = [("total_params", "params", _fmt), ("binary_params", "1-bit params", _fmt),
                ("fp_params", "32-bit params", _fmt), ("bits", "bits", _fmt),
                ("fp32_equivalent_params", "params (FP + 1-bit/32)", _fmt),
                ("memory_bytes", "memory", _fmt_bytes), ("bops", "BOPs (binary MACs)", _fmt),
                ("flops", "FLOPs (FP MACs)", _fmt), ("ops", "OPs = BOPs/64 + FLOPs", _fmt),
                ("elementwise", "elementwise ops (not in OPs)", _fmt),
                ("binary_mac_share", "binary share of MACs", lambda v: f"{100 * v:.2f}%")]
        lines = []
        if self.fp32 is None:
            for key, label, f in keys:
                lines.append(f"{label:<30} {f(t[key]):>12}")
            return lines
        f32 = self.fp32.totals
        lines.append(f"{'':<30} {'this model':>12} {'fp32':>12} {'fp32/this':>10}")
        for key, label, f in keys:
            ratio = ""
            if key in ("total_params", "bits", "fp32_equivalent_params", "memory_bytes", "ops",
                       "flops") and t[key]:
                ratio = f"{f32[key] / t[key]:.1f}x"
            lines.append(f"{label:<30} {f(t[key]):>12} {f(f32[key]):>12} {ratio:>10}")
        return lines

    def __str__(self) -> str:
        return self.table()


def _build(model: nn.Module, input_shape: tuple[int, ...], paper_compat: bool,
           model_name: str) -> Summary:
    tr = _run_trace(model, input_shape)
    notes = list(tr.notes)
    if paper_compat:
        notes.extend(_paper_params(model, tr))
    else:
        _honest_params(model, tr)
    rows: list[dict[str, Any]] = []
    for row_id in tr.order:
        r = tr.rows[row_id]
        if paper_compat:
            pm = tr.paper_macs.get(row_id, [0, 0])
            binary_macs, fp_macs, elementwise = pm[0], pm[1], 0
        else:
            binary_macs, fp_macs, elementwise = r.binary_macs, r.fp_macs, r.elementwise
        if not (r.binary_params or r.fp_params or binary_macs or fp_macs or elementwise):
            continue
        wb, ab = r.weight_bits, r.act_bits
        if wb is None and (binary_macs or fp_macs):
            if binary_macs and not fp_macs:
                wb = ab = 1
            elif fp_macs and not binary_macs:
                wb = ab = 32
        rows.append({
            "name": r.name, "type": r.type, "weight_bits": wb, "act_bits": ab,
            "output_shape": r.output_shape, "calls": r.calls,
            "binary_params": r.binary_params, "fp_params": r.fp_params,
            "memory_bytes": r.binary_params / 8 + r.fp_params * 4,
            "binary_macs": binary_macs, "fp_macs": fp_macs,
            "bops": binary_macs, "flops": fp_macs, "ops": binary_macs / 64 + fp_macs,
            "elementwise": elementwise,
        })
    binary_params = sum(r["binary_params"] for r in rows)
    fp_params = sum(r["fp_params"] for r in rows)
    bmacs = sum(r["binary_macs"] for r in rows)
    fmacs = sum(r["fp_macs"] for r in rows)
    totals = {
        "total_params": (fp_params + binary_params / 32) if paper_compat
        else binary_params + fp_params,
        "binary_params": binary_params,
        "fp_params": fp_params,
        "bits": binary_params + 32 * fp_params,
        "fp32_equivalent_params": (binary_params + 32 * fp_params) / 32,
        "memory_bytes": binary_params / 8 + fp_params * 4,
        "binary_macs": bmacs,
        "fp_macs": fmacs,
        "bops": bmacs,
        "flops": fmacs,
        "ops": bmacs / 64 + fmacs,
        "elementwise": sum(r["elementwise"] for r in rows),
        "binary_mac_share": bmacs / (bmacs + fmacs) if (bmacs + fmacs) else 0.0,
    }
    if tr.offline_ops:
        notes.append(f"{tr.offline_ops} weight-binarization ops not counted (done once offline)")
    return Summary(rows, totals, input_shape, paper_compat, notes, tr.op_breakdown, model_name)


def summarize(model: nn.Module, input_shape: str | Sequence[int], *, paper_compat: bool = False,
              fp32_model: nn.Module | None = None, model_name: str = "") -> Summary:
    """Efficiency report of ``model`` on a random input of ``input_shape`` (e.g. ``1x3x480x480``).

    One forward pass runs in eval mode under ``torch.no_grad`` (the model's train/eval state is
    restored afterwards). Binary layers (modules with ``act_binarizer`` and ``weight_binarizer``)
    count their conv/linear MACs as BOPs when both binarizers are 1-bit and as FLOPs otherwise;
    FP convs, linears and functional matmuls count FLOPs, except a functional matmul whose
    operands are both 1-bit valued (see :func:`bidense.profile.rules.one_magnitude`); everything
    else is elementwise (rules in :mod:`bidense.profile.rules`). Unique parameters are counted
    once; buffers are not parameters.

    ``paper_compat=True`` applies the BiDense reference conventions (bidense-method.md §14):
    params = FP state-dict entries + binary entries/32 over ``state_dict()`` (BN buffers and
    ``num_batches_tracked`` included, a module registered under several names counted each time,
    the last FP 1x1 classifier weight counted binary in a binary model, modules that never run
    excluded); OPs = MACs of FP conv/linear modules + binary-conv MACs/64, no elementwise, no
    functional matmuls, no binary linears. ``fp32_model`` is summarized the same way and shown
    side by side with the ratios.
    """
    shape = parse_input_shape(input_shape)
    summary = _build(model, shape, paper_compat, model_name)
    if fp32_model is not None:
        summary.fp32 = _build(fp32_model, shape, paper_compat, model_name + " (fp32)")
    return summary
