"""ONNX export: the float graph of a bidense model in standard ONNX ops.

Binarization is written out as the ops it computes in eval mode: ``Sign`` for every sign
binarizer (the straight-through estimators differ from ``sign`` only in their backward pass),
``Sub``/``Mul``/``Add`` for thresholds and scales, ``ReduceMean``/``Exp`` for the DAB statistics,
``Abs``/``Conv`` for XNOR's K map, ``Slice``/``ReduceMean``/``Concat`` for the CFB bypass. Binary
convolutions become float ``Conv`` on +-1 tensors, so any ONNX runtime executes the file **in
float32: no speed-up and no smaller weights**. The packed ``.bdn`` runtime
(:func:`bidense.export.export`) is the fast path; this file is for stacks that speak ONNX.

How the custom ``autograd.Function`` s of bidense (STE binarizers, DAB, the hard attention
threshold) get their forward semantics: the exporter traces their ``forward`` (autograd
inlining), which is plain torch ops; the backward, where the STEs differ from ``sign``, is not
part of an inference graph. The fused DAB Function writes into ``out=`` buffers, which the
tracer cannot record, so the model is exported from a copy whose DAB binarizers compute the
composition :meth:`bidense.binarize.DAB.threshold_and_scale` (:data:`TRACED_FORWARDS`, an
export-time swap; same forward values). The one that writes into a view in place (the CFB add,
:func:`bidense.nn.add_channel_adaptive_bypass`) takes its out-of-place form, equal value for
value, while ``torch.jit.is_tracing()``. ``adaptive_avg_pool2d`` (UperNet's PPM, the ding
attention) is traced as two averaging matrices built from the input's size, since the exporter
has no rule for it at a dynamic (or non-divisible) size.

The TorchScript exporter (``dynamo=False``) is used: on a ConvNeXt-atto UperNet it takes about
2-5 s on this 2-core CPU where ``torch.export`` (``dynamo=True``) took 1-5 minutes.
"""

from __future__ import annotations

import copy
import io
import os
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from bidense._atomic import atomic_open
from bidense.binarize import DAB
from bidense.export.verification import max_relative_error
from bidense.models import VisionTransformer

__all__ = [
    "STATIC_INPUT_MODULES",
    "TRACED_FORWARDS",
    "OnnxExportInfo",
    "export_onnx",
    "static_input_reason",
    "verify_onnx",
]

#: default ONNX opset (the TorchScript exporter's own default; 18-20 also work)
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "output"
#: the dims of the NCHW input (and output) that are dynamic where the model allows it
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}

#: modules whose forward fixes the input size at trace time -> why (such models export static)
STATIC_INPUT_MODULES: dict[type[nn.Module], str] = {
    VisionTransformer: "the ViT resizes its position embedding in Python for the example's "
    "patch grid, so the traced graph holds that grid as a constant",
}


def _dab_composition(self: DAB, x: Tensor) -> Tensor:
    """DAB's forward as ``alpha * sign(x - tau)`` from its own statistics."""
    tau, alpha = self.threshold_and_scale(x)
    return alpha * torch.sign(x - tau)


#: module types whose eager forward the tracer cannot record -> the forward the export copy
#: uses instead (same values)
TRACED_FORWARDS: dict[type[nn.Module], Callable[..., Tensor]] = {DAB: _dab_composition}


def _traceable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose :data:`TRACED_FORWARDS` modules trace their composition."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        rule = TRACED_FORWARDS.get(type(module))
        if rule is not None:
            module.forward = types.MethodType(rule, module)  # type: ignore[method-assign]
    return twin


def _averaging_matrix(size: Tensor | int, bins: int, like: Tensor) -> Tensor:
    r"""``(bins, size)`` matrix of adaptive average pooling along one axis: row ``i`` averages
    positions :math:`\lfloor i n/o \rfloor \le j < \lceil (i+1) n/o \rceil` (PyTorch's bins),
    built from ``size`` with arithmetic the exporter records, so it follows the input size."""
    pos = torch.arange(size, device=like.device)
    edges = torch.arange(bins + 1, device=like.device) * size
    start = edges[:-1].div(bins, rounding_mode="floor").unsqueeze(1)
    end = (edges[1:] + (bins - 1)).div(bins, rounding_mode="floor").unsqueeze(1)
    inside = ((pos >= start) & (pos < end)).to(like.dtype)
    return inside / (end - start).to(like.dtype)


def _adaptive_avg_pool2d(x: Tensor, output_size: Any) -> Tensor:
    """``F.adaptive_avg_pool2d`` as ``P_h @ x @ P_w^T`` (one ``ReduceMean`` for 1 x 1)."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    oh = x.shape[-2] if oh is None else oh
    ow = x.shape[-1] if ow is None else ow
    if (oh, ow) == (1, 1):
        return x.mean(dim=(-2, -1), keepdim=True)
    rows = _averaging_matrix(x.shape[-2], int(oh), x)
    cols = _averaging_matrix(x.shape[-1], int(ow), x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class _ExportableAdaptivePool(TorchFunctionMode):
    """Routes ``F.adaptive_avg_pool2d`` (``nn.AdaptiveAvgPool2d`` calls it) to
    :func:`_adaptive_avg_pool2d` while the exporter traces the model, and makes traced
    ``F.interpolate`` scale factors plain floats."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is F.adaptive_avg_pool2d:
            return _adaptive_avg_pool2d(*args, **kwargs)
        if func is F.interpolate and isinstance(kwargs.get("scale_factor"), tuple | list):
            # a scale computed from traced sizes (the ViT position embedding): a constant of
            # the static graph those models export
            kwargs["scale_factor"] = tuple(float(f) for f in kwargs["scale_factor"])
        return func(*args, **kwargs)


@dataclass
class OnnxExportInfo:
    """What :func:`export_onnx` wrote."""

    path: str
    file_bytes: int
    opset: int
    dynamic: bool
    input_shape: tuple[int, ...]
    ops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        shape = "N x C x H x W dynamic" if self.dynamic else f"static {list(self.input_shape)}"
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        lines = [f"{self.path}: {self.file_bytes / 1e6:.2f} MB, opset {self.opset}, {shape}",
                 f"  ops: {ops}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def static_input_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot take a dynamic input size in ONNX (``None`` when it can)."""
    for module in model.modules():
        for cls, reason in STATIC_INPUT_MODULES.items():
            if isinstance(module, cls):
                return f"{type(module).__name__}: {reason}"
    return None


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: Tensor,
    *,
    dynamic: bool = True,
    opset: int | None = None,
) -> OnnxExportInfo:
    """Write the eval-mode float graph of ``model`` to ``path`` (atomically) as ONNX.

    Args:
        model: any bidense model (its train/eval mode is restored afterwards).
        path: the ``.onnx`` file to write.
        example_input: an NCHW float tensor the model accepts; it fixes the channel count (and
            every size when the export is static).
        dynamic: make batch, height and width dynamic (input ``image``, output ``output``).
            Models listed by :data:`STATIC_INPUT_MODULES` fall back to static, with a note.
        opset: ONNX opset (default :data:`DEFAULT_OPSET`).

    The file passes ``onnx.checker.check_model``. Check it against PyTorch with
    :func:`verify_onnx`.
    """
    opset = DEFAULT_OPSET if opset is None else int(opset)
    notes: list[str] = []
    reason = static_input_reason(model) if dynamic else None
    if reason is not None:
        notes.append(f"input shape static {list(example_input.shape)}: {reason}")
        dynamic = False
    axes = {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES} if dynamic else None
    buffer = io.BytesIO()
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            # one eager forward first: lazily initialised state (the learned_scale weight
            # binarizer's scale) is set as on any first call, not traced
            model(example_input)
        with torch.no_grad(), _ExportableAdaptivePool(), warnings.catch_warnings():
            # the TorchScript exporter's deprecation notice and its tracer warnings about
            # channel counts turned into constants (they are constants) say nothing actionable
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _traceable_copy(model), (example_input,), buffer, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                do_constant_folding=True, autograd_inlining=True,
            )
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return OnnxExportInfo(
        path=str(path), file_bytes=len(data), opset=opset, dynamic=dynamic,
        input_shape=tuple(example_input.shape), ops=ops, notes=notes,
    )


def verify_onnx(
    model: nn.Module, path: str | os.PathLike, x: Tensor, *, optimize: bool = True
) -> dict[str, Any]:
    """Run ``path`` in onnxruntime (CPUExecutionProvider) on ``x`` and compare with ``model``
    in eval mode (its mode is restored afterwards).

    ``optimize=False`` turns off onnxruntime's graph rewrites (Conv + BatchNormalization
    fusion, ...): the graph then runs op by op as written, which separates a wrong graph from
    sign ties that a rewrite's different rounding resolves the other way (``docs/onnx.md``).

    Returns ``max_abs_error``, ``max_rel_error`` (:func:`max_relative_error`: relative to the
    largest PyTorch output), ``elements`` and, for multi-channel outputs (segmentation logits),
    ``argmax_agreement``: the fraction of pixels whose arg-max channel is the same.
    """
    was_training = model.training
    try:
        with torch.no_grad():
            reference = model.eval()(x).numpy()
    finally:
        model.train(was_training)
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if got.shape != reference.shape:
        raise ValueError(f"ONNX output {got.shape} != PyTorch output {reference.shape}")
    result: dict[str, Any] = {
        "max_abs_error": float(np.max(np.abs(got.astype(np.float64) - reference))),
        "max_rel_error": max_relative_error(got, reference),
        "elements": int(reference.size),
    }
    if reference.ndim >= 2 and reference.shape[1] > 1:
        result["argmax_agreement"] = float(np.mean(got.argmax(1) == reference.argmax(1)))
    return result
