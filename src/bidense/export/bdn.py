"""Export a bidense model to a packed ``.bdn`` file: capture -> lower -> passes -> write.

``export(model, path, example_input)`` captures the graph on the example input
(:mod:`bidense.export.capture`), lowers every leaf module to a runtime op with its tensors
(:mod:`bidense.export.lower`), folds BatchNorm into the preceding conv's per-output-channel
scale and bias and drops identities (:mod:`bidense.export.passes`), records every module
node's output shape and the model's (which the runtime checks, :func:`record_module_shapes`),
and writes the file
atomically (:func:`bidense.runtime.format.write_bdn`). Loading a checkpoint is the engine's job
(:func:`bidense.engine.load_model`); :func:`bidense.export.verify` checks a written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import bidense
from bidense.export.capture import capture
from bidense.export.lower import UnsupportedModelError, lower_modules, unsupported_functions
from bidense.export.passes import drop_identities, fold_batchnorm, used_constants
from bidense.export.verification import max_relative_error  # noqa: F401  (old path, tests)
from bidense.runtime.format import write_bdn

__all__ = ["ExportInfo", "UnsupportedModelError", "export", "record_module_shapes"]


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


class _Sizes:
    """Running totals of :class:`ExportInfo`'s size columns."""

    def __init__(self) -> None:
        self.binary_params = self.binary_bytes = 0
        self.fp_params = self.fp_bytes = self.other_bytes = 0

    def add_binary(self, mod: dict[str, Any], w_bits: np.ndarray) -> None:
        """Packed weights: ``n_out * taps * C_in/groups`` one-bit values (OHWI words, or
        (KH, KW, O, I) words for ``bconvT``)."""
        attrs = mod["attrs"]
        cin = attrs["in_channels"] // attrs.get("groups", 1)
        if mod["kind"] == "bconvT":
            n_out, taps = w_bits.shape[2], w_bits.shape[0] * w_bits.shape[1]
        else:
            n_out, taps = w_bits.shape[0], w_bits.shape[1] * w_bits.shape[2]
        self.binary_params += n_out * taps * cin
        self.binary_bytes += w_bits.nbytes

    def add_plain(self, arr: np.ndarray) -> None:
        """float32 values count as FP parameters; anything else (int64 indices) as other."""
        if arr.dtype == np.float32:
            self.fp_params += arr.size
            self.fp_bytes += arr.nbytes
        else:
            self.other_bytes += arr.nbytes


def _constant_array(c: torch.Tensor) -> np.ndarray:
    """A graph constant in a stored dtype: float64/float16 -> float32, bool/int32 -> int64."""
    arr = c.numpy()
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype == np.bool_ or arr.dtype == np.int32:
        arr = arr.astype(np.int64)
    return arr


def record_module_shapes(model: nn.Module, nodes: list[dict[str, Any]],
                         example_input: torch.Tensor) -> None:
    """Write each module node's output shape into it (``"shape"``), from one more eval forward
    pass with hooks: the runtime checks the shapes it propagates against them (at load) and the
    shapes it gets (at run), so an edited stride or window cannot silently change the output.
    A module whose calls do not match its nodes one to one (called inside another leaf too)
    gets no shape."""
    count: dict[str, int] = {}
    for n in nodes:
        if n["op"] == "module":
            count[n["module"]] = count.get(n["module"], 0) + 1
    seen: dict[str, list[list[int]]] = {key: [] for key in count}

    def hook(key: str):
        def record(_m: nn.Module, _args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                seen[key].append(list(out.shape))
        return record

    handles = [model.get_submodule("" if key == "root" else key.split("+")[0])
               .register_forward_hook(hook(key)) for key in count]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    calls = {key: iter(shapes) for key, shapes in seen.items() if len(shapes) == count[key]}
    for n in nodes:
        if n["op"] == "module" and n["module"] in calls:
            n["shape"] = next(calls[n["module"]])


def export(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor, *,
           metadata: dict[str, Any] | None = None) -> ExportInfo:
    """Export ``model`` (eval mode) traced on ``example_input`` (NCHW) to a ``.bdn`` file.

    The graph is specialised to the example input's shape; the runtime checks it. Raises
    :class:`UnsupportedModelError` listing every unsupported layer/operation.
    """
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        raise ValueError("export: example_input must be a 4-D NCHW torch tensor")
    was_training = model.training
    model.eval()
    try:
        g, reference = capture(model, example_input.float())
        mods, problems = lower_modules(g.modules)
        problems += unsupported_functions(g.nodes)
        if problems:
            uniq = sorted(set(problems))
            raise UnsupportedModelError(
                f"cannot export {type(model).__name__}: unsupported: {'; '.join(uniq)}")
        nodes, folded = fold_batchnorm(g.nodes, mods)
        nodes, outputs = drop_identities(nodes, [folded.get(o, o) for o in g.outputs])
        record_module_shapes(model, nodes, example_input.float())
    finally:
        model.train(was_training)
    used = {n["module"] for n in nodes if n["op"] == "module"}

    # payload order: modules by key, each module's tensors in lowering order, then constants
    tensors: dict[str, np.ndarray] = {}
    sizes = _Sizes()
    graph_mods: dict[str, Any] = {}
    for key in sorted(used):
        mod = mods[key]
        refs = {}
        for local, arr in mod["tensors"].items():
            gname = f"{key}/{local}"
            tensors[gname] = arr
            refs[local] = gname
            if local == "w_bits":
                sizes.add_binary(mod, arr)
            else:
                sizes.add_plain(arr)
        graph_mods[key] = {"kind": mod["kind"], "attrs": mod["attrs"], "tensors": refs}
    for cname in sorted(used_constants(nodes)):
        arr = _constant_array(g.constants[cname])
        tensors[f"const/{cname}"] = arr
        sizes.add_plain(arr)
    graph = {"input": {"name": g.input_name, "shape": list(example_input.shape),
                       "dtype": "float32", "layout": "NCHW"},
             "nodes": nodes, "outputs": outputs, "output_shapes": [list(reference.shape)],
             "modules": graph_mods}
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
    stored = sizes.binary_bytes + sizes.fp_bytes + sizes.other_bytes
    return ExportInfo(
        path=str(path), file_bytes=size, binary_params=sizes.binary_params,
        binary_bytes=sizes.binary_bytes, fp_params=sizes.fp_params, fp_bytes=sizes.fp_bytes,
        other_bytes=sizes.other_bytes, overhead_bytes=size - stored, model=meta["model"],
        method=meta["method"], layers=kinds)
