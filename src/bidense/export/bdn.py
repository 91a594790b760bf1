"""Export a bidense model to a packed ``.bdn`` file (imports torch lazily, inside functions).

``export(model, path, example_input)`` captures the graph (:mod:`bidense.export.capture`), lowers
every leaf module to a runtime op with its tensors, folds BatchNorm into the preceding conv's
per-output-channel scale and bias, packs every 1-bit weight into uint64 words (canonical OHWI,
bit 1 = -1) and writes the file atomically (:mod:`bidense.runtime.format`).

BN folding is exact algebra: with ``y = D * s_o + b_o`` (``D`` the conv of the binarized input
with the +-1 weights, ``s_o`` the weight scale) and eval BN
``z = (y - mu) / sqrt(var + eps) * g + beta``,
``z = D * (s_o k_o) + (b_o k_o + beta - mu k_o)`` with ``k_o = g / sqrt(var + eps)``; only float
rounding differs from PyTorch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bidense.runtime.format import node_refs as _refs
from bidense.runtime.format import write_bdn

__all__ = ["ExportInfo", "export", "export_checkpoint", "UnsupportedModelError"]

_SCALED_WEIGHTS = ("sign", "mean_abs", "magnitude_aware", "centered_mean_abs", "learned_scale")


class UnsupportedModelError(ValueError):
    """The model contains layers or operations the runtime cannot execute."""


@dataclass
class ExportInfo:
    """What an export wrote: sizes on disk versus the theoretical bit count.

    ``binary_params`` 1-bit weights take ``binary_bytes`` on disk (uint64 words, so channel
    counts that are not multiples of 64 pad); ``fp_params`` float32 values take ``fp_bytes``
    (folded BN, DAB/RSign parameters, FP layers, graph constants); ``overhead_bytes`` is the
    rest (magic, version, JSON header, checksum, 64-byte alignment).
    """

    path: str
    file_bytes: int
    binary_params: int
    binary_bytes: int
    fp_params: int
    fp_bytes: int
    other_bytes: int
    overhead_bytes: int
    model: str = ""
    method: str = ""
    max_rel_error: float | None = None
    layers: dict[str, int] = field(default_factory=dict)

    @property
    def theoretical_bits(self) -> int:
        """1 bit per binary weight + 32 bits per FP value."""
        return self.binary_params + 32 * self.fp_params

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        d = dict(self.__dict__)
        d["theoretical_bits"] = self.theoretical_bits
        return d

    def __str__(self) -> str:
        def row(name: str, count: str, theo: int, disk: int) -> str:
            return f"{name:<10} {count:>14} {theo:>14,} {disk:>14,}"

        lines = [
            f"{self.path}  ({self.model} [{self.method}])",
            f"{'part':<10} {'values':>14} {'theory bytes':>14} {'disk bytes':>14}",
            row("binary", f"{self.binary_params:,}", (self.binary_params + 7) // 8,
                self.binary_bytes),
            row("fp32", f"{self.fp_params:,}", 4 * self.fp_params, self.fp_bytes),
            row("other", "", self.other_bytes, self.other_bytes),
            row("overhead", "", 0, self.overhead_bytes),
            row("total", "", (self.theoretical_bits + 7) // 8 + self.other_bytes,
                self.file_bytes),
        ]
        theo = (self.theoretical_bits + 7) // 8 + self.other_bytes
        lines.append(f"disk / theoretical = {self.file_bytes / max(theo, 1):.3f}")
        if self.max_rel_error is not None:
            lines.append(f"verify: max relative error vs PyTorch = {self.max_rel_error:.3g}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# lowering of leaf modules


def _np(t: Any) -> np.ndarray:
    return t.detach().to("cpu").float().numpy().astype(np.float32, copy=True)


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _lower_act(ab: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    name = getattr(ab, "name", "")
    if int(getattr(ab, "bits", 32)) == 32:
        return {"kind": "identity"}, {}
    if name in ("sign", "approx_sign"):
        return {"kind": "sign"}, {}
    if name == "rsign":
        return {"kind": "rsign"}, {"threshold": _np(ab.threshold)}
    if name == "xnor":
        return {"kind": "xnor", "use_k": bool(ab.use_k)}, {}
    if name == "bisrnet":
        return {"kind": "bisrnet"}, {"k": _np(ab.k), "b": _np(ab.b)}
    if name == "adabin":
        return {"kind": "adabin", "variant": ab.variant}, {
            "alpha": _np(ab.alpha).reshape(1), "beta": _np(ab.beta).reshape(1)}
    if name == "dab":
        return {"kind": "dab", "scale": ab.scale}, {"a": _np(ab.a), "k": _np(ab.k), "b": _np(ab.b)}
    raise UnsupportedModelError(f"activation binarizer {name or type(ab).__name__!r}")


def _lower_weight(m: Any, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Binary weights as packed signs + per-row scale where ``W_b == scale * sign`` exactly."""
    import torch

    from bidense.runtime import kernels

    wb = m.weight_binarizer
    with torch.no_grad():
        w_hat = wb(m.weight.detach()).float()
    name = getattr(wb, "name", "")
    if int(getattr(wb, "bits", 32)) == 1 and name in _SCALED_WEIGHTS:
        s = torch.sign(w_hat)
        scale = w_hat.abs().flatten(1).amax(dim=1)
        exact = bool((s != 0).all()) and torch.equal(
            w_hat, scale.view((-1,) + (1,) * (w_hat.dim() - 1)) * s)
        if exact:
            sn = s.numpy()
            if kind == "bconvT":
                return {"weight": "bits"}, {
                    "w_bits": kernels.pack_weights_transpose(sn), "w_scale_in": _np(scale)}
            if kind == "blinear":
                sn = sn[:, :, None, None]
            return {"weight": "bits"}, {"w_bits": kernels.pack_weights_ohwi(sn),
                                        "w_scale": _np(scale)}
    # AdaBin's alpha*sign + beta, identity weights or a zero sign: float weights (exact values)
    return {"weight": "float"}, {"w_float": _np(w_hat)}


def _lower_module(kind: str, m: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import torch

    attrs: dict[str, Any] = {}
    ts: dict[str, np.ndarray] = {}
    if kind in ("bconv", "bconvT", "blinear"):
        a_attrs, a_ts = _lower_act(m.act_binarizer)
        w_attrs, w_ts = _lower_weight(m, kind)
        attrs.update(act=a_attrs, **w_attrs)
        ts.update({f"act.{k}": v for k, v in a_ts.items()}, **w_ts)
        out = m.out_features if kind == "blinear" else m.out_channels
        ts["out_scale"] = ts.pop("w_scale", np.ones(out, np.float32))
        ts["out_bias"] = _np(m.bias) if m.bias is not None else np.zeros(out, np.float32)
        if kind == "blinear":
            attrs["in_channels"] = int(m.in_features)
        else:
            attrs.update(in_channels=int(m.in_channels), kernel=_pair(m.kernel_size),
                         stride=_pair(m.stride), dilation=_pair(m.dilation), groups=int(m.groups))
            if isinstance(m.padding, str):
                raise UnsupportedModelError(f"string padding {m.padding!r}")
            attrs["padding"] = _pair(m.padding)
            attrs["pad_mode"] = str(getattr(m, "pad_mode", "zero"))
            if kind == "bconvT":
                ok = (attrs["stride"] == attrs["kernel"] and attrs["padding"] == [0, 0]
                      and _pair(m.output_padding) == [0, 0] and attrs["dilation"] == [1, 1]
                      and attrs["groups"] == 1)
                if not ok:
                    raise UnsupportedModelError("binary transposed conv with stride != kernel, "
                                                "padding, dilation or groups")
        return attrs, ts
    if kind in ("conv", "convT"):
        if isinstance(m.padding, str):
            raise UnsupportedModelError(f"string padding {m.padding!r}")
        attrs.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride),
                     padding=_pair(m.padding), dilation=_pair(m.dilation), groups=int(m.groups))
        if kind == "convT":
            ok = (attrs["stride"] == attrs["kernel"] and attrs["padding"] == [0, 0]
                  and _pair(m.output_padding) == [0, 0] and attrs["groups"] == 1)
            if not ok:
                raise UnsupportedModelError("transposed conv with stride != kernel or padding")
        ts["w_float"] = _np(m.weight)
        ts["out_scale"] = np.ones(m.out_channels, np.float32)
        ts["out_bias"] = (_np(m.bias) if m.bias is not None
                          else np.zeros(m.out_channels, np.float32))
        return attrs, ts
    if kind == "linear":
        ts["weight"] = _np(m.weight)
        if m.bias is not None:
            ts["bias"] = _np(m.bias)
        return attrs, ts
    if kind == "bn":
        if m.running_mean is None:
            raise UnsupportedModelError("BatchNorm2d without running statistics")
        with torch.no_grad():
            k = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
            shift = m.bias.double() - m.running_mean.double() * k
        return attrs, {"scale": k.float().numpy(), "shift": shift.float().numpy()}
    if kind in ("ln", "ln2d"):
        attrs.update(eps=float(m.eps), shape=[int(s) for s in m.normalized_shape])
        if m.weight is not None:
            ts["weight"], ts["bias"] = _np(m.weight), _np(m.bias)
        return attrs, ts
    if kind == "gelu":
        if m.approximate != "none":
            raise UnsupportedModelError(f"GELU(approximate={m.approximate!r})")
        return attrs, ts
    if kind in ("relu", "sigmoid", "identity"):
        return attrs, ts
    if kind == "prelu":
        return attrs, {"weight": _np(m.weight)}
    if kind == "lbias":
        return {"channel_dim": m.channel_dim}, {"bias": _np(m.bias)}
    if kind == "rprelu":
        ts = {"gamma": _np(m.gamma), "beta": _np(m.beta)}
        if m.zeta is not None:
            ts["zeta"] = _np(m.zeta)
        return {"channel_dim": m.channel_dim}, ts
    if kind == "maxout":
        return {"channel_dim": m.channel_dim}, {"pos": _np(m.pos_scale), "neg": _np(m.neg_scale)}
    if kind in ("maxpool", "avgpool"):
        if m.ceil_mode:
            raise UnsupportedModelError(f"{type(m).__name__}(ceil_mode=True)")
        st = m.stride if m.stride is not None else m.kernel_size
        attrs.update(kernel=_pair(m.kernel_size), stride=_pair(st), padding=_pair(m.padding))
        if kind == "maxpool":
            if _pair(m.dilation) != [1, 1]:
                raise UnsupportedModelError("dilated max pooling")
        else:
            if m.divisor_override is not None:
                raise UnsupportedModelError("AvgPool2d(divisor_override=...)")
            attrs["count_include_pad"] = bool(m.count_include_pad)
        return attrs, ts
    if kind == "adapool":
        return {"output_size": _pair(m.output_size)}, ts
    if kind == "act":
        a_attrs, a_ts = _lower_act(m)
        if a_attrs["kind"] not in ("sign", "identity"):
            raise UnsupportedModelError(f"stand-alone activation binarizer {a_attrs['kind']!r}")
        return {"act": a_attrs}, a_ts
    raise UnsupportedModelError(f"module kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# graph passes


_FOLDABLE = ("bconv", "bconvT", "conv", "convT")


def _fold_bn(nodes: list[dict[str, Any]], mods: dict[str, dict[str, Any]]
             ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Fold ``conv -> bn`` pairs where the conv output has no other consumer."""
    users: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for ref in _refs(n):
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
        if prod["op"] != "module" or prod["kind"] not in _FOLDABLE:
            continue
        ckey, bkey = prod["module"], n["module"]
        fkey = f"{ckey}+{bkey}"
        if fkey not in mods:
            conv, bn = mods[ckey], mods[bkey]
            ts = dict(conv["tensors"])
            k, t = bn["tensors"]["scale"], bn["tensors"]["shift"]
            ts["out_scale"] = (ts["out_scale"].astype(np.float64) * k).astype(np.float32)
            ts["out_bias"] = (ts["out_bias"].astype(np.float64) * k + t).astype(np.float32)
            mods[fkey] = {"kind": conv["kind"], "attrs": dict(conv["attrs"], bn_folded=bkey),
                          "tensors": ts}
        prod["module"] = fkey
        rename[n["outputs"][0]] = prod["outputs"][0]
        drop.add(i)
    out = [n for i, n in enumerate(nodes) if i not in drop]
    return _rename(out, rename), rename


def _rename(nodes: list[dict[str, Any]], rename: dict[str, str]) -> list[dict[str, Any]]:
    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            if "t" in o and len(o) == 1:
                return {"t": resolve(o["t"])}
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    for n in nodes:
        n["args"], n["kwargs"] = walk(n["args"]), walk(n["kwargs"])
    return nodes


def _drop_identities(nodes: list[dict[str, Any]], outputs: list[str]):
    rename: dict[str, str] = {}
    kept = []
    for n in nodes:
        ident = n["op"] == "module" and n["kind"] == "identity"
        ident = ident or (n["op"] in ("contiguous", "detach", "clone") and not n["kwargs"])
        if ident and isinstance(n["args"][0], dict) and "t" in n["args"][0]:
            rename[n["outputs"][0]] = n["args"][0]["t"]
        else:
            kept.append(n)
    kept = _rename(kept, rename)
    outs = []
    for o in outputs:
        while o in rename:
            o = rename[o]
        outs.append(o)
    return kept, outs


# ---------------------------------------------------------------------------------------------
# public API


def export(model: Any, path: str | os.PathLike, example_input: Any, *,
           metadata: dict[str, Any] | None = None) -> ExportInfo:
    """Export ``model`` (eval mode) traced on ``example_input`` (NCHW) to a ``.bdn`` file.

    The graph is specialised to the example input's shape; the runtime checks it. Raises
    :class:`UnsupportedModelError` listing every unsupported layer/operation.
    """
    import torch

    import bidense
    from bidense.runtime.runner import SUPPORTED_FUNCTIONS

    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        raise ValueError("export: example_input must be a 4-D NCHW torch tensor")
    was_training = model.training
    model.eval()
    try:
        from .capture import capture

        g, _ = capture(model, example_input.float())
        mods: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for key, (kind, m) in g.modules.items():
            try:
                attrs, ts = _lower_module(kind, m)
            except UnsupportedModelError as exc:
                problems.append(f"{key} ({type(m).__name__}): {exc}")
                continue
            mods[key] = {"kind": kind, "attrs": attrs, "tensors": ts}
    finally:
        model.train(was_training)
    for n in g.nodes:
        if n["kind"] == "fn" and n["op"] not in SUPPORTED_FUNCTIONS:
            problems.append(f"function {n['op']!r}")
    if problems:
        uniq = sorted(set(problems))
        raise UnsupportedModelError(
            f"cannot export {type(model).__name__}: unsupported: {'; '.join(uniq)}")
    nodes, folded = _fold_bn(g.nodes, mods)
    nodes, outputs = _drop_identities(nodes, [folded.get(o, o) for o in g.outputs])
    used = {n["module"] for n in nodes if n["op"] == "module"}

    tensors: dict[str, np.ndarray] = {}
    binary_params = binary_bytes = fp_params = fp_bytes = other_bytes = 0
    graph_mods: dict[str, Any] = {}
    for key in sorted(used):
        mod = mods[key]
        refs = {}
        for local, arr in mod["tensors"].items():
            gname = f"{key}/{local}"
            tensors[gname] = arr
            refs[local] = gname
            if local == "w_bits":
                a = mod["attrs"]
                cin = a["in_channels"] // a.get("groups", 1)
                n_out = arr.shape[0] if mod["kind"] != "bconvT" else arr.shape[2]
                taps = arr.shape[1] * arr.shape[2] if mod["kind"] != "bconvT" else (
                    arr.shape[0] * arr.shape[1])
                binary_params += n_out * taps * cin
                binary_bytes += arr.nbytes
            elif arr.dtype == np.float32:
                fp_params += arr.size
                fp_bytes += arr.nbytes
            else:
                other_bytes += arr.nbytes
        graph_mods[key] = {"kind": mod["kind"], "attrs": mod["attrs"], "tensors": refs}
    consts_used = set()
    for n in nodes:
        _collect_consts(n["args"], consts_used)
        _collect_consts(n["kwargs"], consts_used)
    for cname in sorted(consts_used):
        c = g.constants[cname]
        arr = c.numpy()
        if arr.dtype == np.float64 or arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        if arr.dtype == np.bool_ or arr.dtype == np.int32:
            arr = arr.astype(np.int64)
        tensors[f"const/{cname}"] = arr
        if arr.dtype == np.float32:
            fp_params += arr.size
            fp_bytes += arr.nbytes
        else:
            other_bytes += arr.nbytes
    graph = {"input": {"name": g.input_name, "shape": list(example_input.shape),
                       "dtype": "float32", "layout": "NCHW"},
             "nodes": nodes, "outputs": outputs, "modules": graph_mods}
    meta = {
        "model": str(getattr(model, "arch", "") or type(model).__name__),
        "method": str(getattr(model, "method", "")),
        "task": str(getattr(model, "task", "")),
        "num_classes": getattr(model, "num_classes", None),
        "input_shape": list(example_input.shape),
        "bidense_version": bidense.__version__,
    }
    meta.update(metadata or {})
    size = write_bdn(path, graph, tensors, meta)
    kinds: dict[str, int] = {}
    for n in nodes:
        k = n["kind"] if n["op"] == "module" else n["op"]
        kinds[k] = kinds.get(k, 0) + 1
    return ExportInfo(
        path=str(path), file_bytes=size, binary_params=binary_params, binary_bytes=binary_bytes,
        fp_params=fp_params, fp_bytes=fp_bytes, other_bytes=other_bytes,
        overhead_bytes=size - binary_bytes - fp_bytes - other_bytes, model=meta["model"],
        method=meta["method"], layers=kinds)


def _collect_consts(o: Any, acc: set[str]) -> None:
    if isinstance(o, dict):
        if "c" in o and len(o) == 1:
            acc.add(o["c"])
        else:
            for v in o.values():
                _collect_consts(v, acc)
    elif isinstance(o, list):
        for v in o:
            _collect_consts(v, acc)


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (relative to the reference output's scale)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(float(np.max(np.abs(b64))), 1e-30))


def export_checkpoint(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike,
                      verify: bool = False, input_shape: tuple[int, ...] | None = None
                      ) -> ExportInfo:
    """Rebuild a checkpoint's model and export it; ``verify`` compares the runtime with PyTorch.

    The example input is ``input_shape`` or ``(1, 3, H, W)`` from the config's ``crop_size``
    (default 64x64), filled with a seeded normal sample.
    """
    import torch

    from bidense.engine.evaluate import model_from_checkpoint

    model, cfg, _ = model_from_checkpoint(checkpoint_path)
    if input_shape is None:
        crop = (cfg.get("data") or {}).get("crop_size") or [64, 64]
        input_shape = (1, 3, int(crop[0]), int(crop[1]))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*input_shape, generator=gen)
    info = export(model, out_path, x, metadata={"checkpoint": Path(checkpoint_path).name})
    if verify:
        from bidense.runtime import Runtime

        with torch.no_grad():
            ref = model.eval()(x).numpy()
        got = Runtime(out_path)(x.numpy())
        info.max_rel_error = max_relative_error(got, ref)
    return info
