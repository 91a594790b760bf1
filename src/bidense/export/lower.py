"""Lowering tables: torch modules and activation binarizers -> the runtime's op kinds.

Each op kind the exporter writes is one entry here and one entry in the runtime's vocabulary
(:mod:`bidense.runtime.ops`: ``MODULE_OPS``, ``ACTIVATIONS``, ``FUNCTIONS``). A module entry
names the torch class(es) it lowers and a function ``module -> (attrs, tensors)``: ``attrs`` go
into the graph JSON, ``tensors`` (float32 or packed uint64 arrays) into the payload. The graph
capture records a module as one node exactly when an entry matches it (:func:`leaf_kind`).

Binary weights are stored as packed signs (canonical OHWI, bit 1 = -1, one uint64 word per 64
input channels) with a per-row scale when the binarized weight is exactly ``scale_o * sign(W)``;
otherwise (AdaBin's ``alpha * sign + beta``, full-precision weights, a zero sign) the exact float
weights are stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bidense.binarize import ActivationBinarizer
from bidense.nn import (
    BinaryConv2d,
    BinaryConvTranspose2d,
    BinaryLinear,
    LearnableBias,
    Maxout,
    RPReLU,
)
from bidense.runtime import kernels
from bidense.runtime.ops import FUNCTIONS

__all__ = [
    "ACTIVATION_LOWERINGS",
    "AUTOGRAD_FUNCTIONS",
    "LEAF_FUNCTIONS",
    "MODULE_LOWERINGS",
    "ActivationLowering",
    "Lowered",
    "ModuleLowering",
    "UnsupportedModelError",
    "leaf_kind",
    "lower_activation",
    "lower_modules",
    "module_lowering",
    "unsupported_functions",
]

#: ``(attrs, tensors)``: JSON-able attributes and named arrays of one lowered module
Lowered = tuple[dict[str, Any], dict[str, np.ndarray]]

#: weight binarizers whose 1-bit output can be exactly ``scale_o * sign(W)`` (packed path)
_SCALED_WEIGHTS = ("sign", "mean_abs", "magnitude_aware", "centered_mean_abs", "learned_scale")

#: custom ``autograd.Function`` classes of bidense with known forward semantics -> runtime
#: function (``_AddBypass(y, x, cdim, grouping)`` is ``y + CFB(x)``)
AUTOGRAD_FUNCTIONS: dict[str, str] = {"_AddBypass": "cfb_add"}
#: public bidense functions recorded as single nodes (their internals update views in place)
LEAF_FUNCTIONS: dict[str, str] = {"channel_adaptive_bypass": "cfb",
                                  "add_channel_adaptive_bypass": "cfb_add_fn"}


class UnsupportedModelError(ValueError):
    """The model contains layers or operations the runtime cannot execute."""


def _np(t: Any) -> np.ndarray:
    return t.detach().to("cpu").float().numpy().astype(np.float32, copy=True)


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


# ---------------------------------------------------------------------------------------------
# activation binarizers, keyed by their registry name


@dataclass(frozen=True)
class ActivationLowering:
    """One activation binarizer: the runtime kind it becomes and ``binarizer -> (attrs,
    tensors)`` (``attrs`` without ``kind``; tensor names are local to the binarizer)."""

    kind: str
    lower: Callable[[Any], Lowered]


def _no_state(obj: Any) -> Lowered:
    """Nothing to store beyond the kind (sign binarizers, ReLU, Identity, ...)."""
    return {}, {}


ACTIVATION_LOWERINGS: dict[str, ActivationLowering] = {
    # sign forward (ApproxSign differs only in its backward pass)
    "sign": ActivationLowering("sign", _no_state),
    "approx_sign": ActivationLowering("sign", _no_state),
    # ReActNet's RSign: sign(x - threshold_c)
    "rsign": ActivationLowering("rsign", lambda ab: ({}, {"threshold": _np(ab.threshold)})),
    # XNOR-Net: sign(x), the output scaled by the mean-|x| map K when ``use_k``
    "xnor": ActivationLowering("xnor", lambda ab: ({"use_k": bool(ab.use_k)}, {})),
    # BiSRNet: sign(k_c x + b_c)
    "bisrnet": ActivationLowering("bisrnet", lambda ab: ({}, {"k": _np(ab.k), "b": _np(ab.b)})),
    # AdaBin: alpha * sign((x - beta) / alpha) + beta (``variant`` picks the re-parametrisation)
    "adabin": ActivationLowering("adabin", lambda ab: (
        {"variant": ab.variant},
        {"alpha": _np(ab.alpha).reshape(1), "beta": _np(ab.beta).reshape(1)})),
    # BiDense's DAB: alpha * sign(x - tau), tau and alpha from per-sample statistics (the
    # group size only with scale="group")
    "dab": ActivationLowering("dab", lambda ab: (
        {"scale": ab.scale, **({"group": ab.group} if ab.scale == "group" else {})},
        {"a": _np(ab.a), "k": _np(ab.k), "b": _np(ab.b)})),
}


def lower_activation(ab: Any) -> Lowered:
    """An activation binarizer as ``({"kind": ..., **attrs}, tensors)``.

    32-bit binarizers (whatever their name) are the identity; the others are looked up in
    :data:`ACTIVATION_LOWERINGS` by registry name.
    """
    if int(getattr(ab, "bits", 32)) == 32:
        return {"kind": "identity"}, {}
    name = getattr(ab, "name", "")
    entry = ACTIVATION_LOWERINGS.get(name)
    if entry is None:
        raise UnsupportedModelError(f"activation binarizer {name or type(ab).__name__!r}")
    attrs, tensors = entry.lower(ab)
    return {"kind": entry.kind, **attrs}, tensors


# ---------------------------------------------------------------------------------------------
# module lowerings


def _binary_signs(m: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(w_hat, signs, scale)`` of a binary layer's weight; ``signs`` and ``scale`` are
    ``None`` unless ``w_hat == scale_o * signs`` exactly with no zero sign."""
    wb = m.weight_binarizer
    with torch.no_grad():
        w_hat = wb(m.weight.detach()).float()
    if int(getattr(wb, "bits", 32)) == 1 and getattr(wb, "name", "") in _SCALED_WEIGHTS:
        s = torch.sign(w_hat)
        scale = w_hat.abs().flatten(1).amax(dim=1)
        exact = bool((s != 0).all()) and torch.equal(
            w_hat, scale.view((-1,) + (1,) * (w_hat.dim() - 1)) * s)
        if exact:
            return w_hat, s, scale
    return w_hat, None, None


def _binary_layer(m: Any, lower_weight: Callable[[Any], Lowered], out: int) -> Lowered:
    """The parts every binary layer shares: the input binarizer (tensors ``act.*``), the
    weights (``lower_weight``), the per-output-channel epilogue ``out_scale`` / ``out_bias``
    (``out_scale`` is the weight's per-row ``w_scale`` when it has one)."""
    act_attrs, act_tensors = lower_activation(m.act_binarizer)
    weight_attrs, weight_tensors = lower_weight(m)
    tensors = {f"act.{k}": v for k, v in act_tensors.items()}
    tensors.update(weight_tensors)
    tensors["out_scale"] = tensors.pop("w_scale", np.ones(out, np.float32))
    tensors["out_bias"] = _np(m.bias) if m.bias is not None else np.zeros(out, np.float32)
    return {"act": act_attrs, **weight_attrs}, tensors


def _conv_geometry(m: Any) -> dict[str, Any]:
    if isinstance(m.padding, str):
        raise UnsupportedModelError(f"string padding {m.padding!r}")
    return {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride),
            "padding": _pair(m.padding), "dilation": _pair(m.dilation),
            "groups": int(m.groups)}


def _is_upsampling(m: Any, geometry: dict[str, Any]) -> bool:
    """A transposed conv the runtime runs as a per-pixel GEMM: stride == kernel, no padding,
    no output padding, one group."""
    return (geometry["stride"] == geometry["kernel"] and geometry["padding"] == [0, 0]
            and _pair(m.output_padding) == [0, 0] and geometry["groups"] == 1)


def _lower_binary_weight(m: Any) -> Lowered:
    """Packed OHWI signs + per-row scale when exact, else the exact float weights."""
    w_hat, signs, scale = _binary_signs(m)
    if signs is None:
        return {"weight": "float"}, {"w_float": _np(w_hat)}
    sn = signs.numpy()
    if sn.ndim == 2:  # linear (O, I) as a 1x1 conv
        sn = sn[:, :, None, None]
    return {"weight": "bits"}, {"w_bits": kernels.pack_weights_ohwi(sn), "w_scale": _np(scale)}


def _lower_binary_weight_transpose(m: Any) -> Lowered:
    """Packed (KH, KW, O, I) signs + the per-*input*-channel scale ``w_scale_in`` (dim 0 of
    PyTorch's transposed weight) when exact, else the exact float weights."""
    w_hat, signs, scale = _binary_signs(m)
    if signs is None:
        return {"weight": "float"}, {"w_float": _np(w_hat)}
    return {"weight": "bits"}, {"w_bits": kernels.pack_weights_transpose(signs.numpy()),
                                "w_scale_in": _np(scale)}


def lower_binary_conv(m: BinaryConv2d) -> Lowered:
    """``bconv``: binarized input (``act``), 1-bit weights, ``pad_mode`` zero or one."""
    attrs, tensors = _binary_layer(m, _lower_binary_weight, m.out_channels)
    attrs.update(_conv_geometry(m), in_channels=int(m.in_channels),
                 pad_mode=str(getattr(m, "pad_mode", "zero")))
    return attrs, tensors


def lower_binary_conv_transpose(m: BinaryConvTranspose2d) -> Lowered:
    """``bconvT``: stride == kernel only; the weight scale is per *input* channel
    (``w_scale_in``), so the output epilogue starts at one."""
    attrs, tensors = _binary_layer(m, _lower_binary_weight_transpose, m.out_channels)
    geometry = _conv_geometry(m)
    attrs.update(geometry, in_channels=int(m.in_channels),
                 pad_mode=str(getattr(m, "pad_mode", "zero")))
    if not (_is_upsampling(m, geometry) and geometry["dilation"] == [1, 1]):
        raise UnsupportedModelError("binary transposed conv with stride != kernel, padding, "
                                    "dilation or groups")
    return attrs, tensors


def lower_binary_linear(m: BinaryLinear) -> Lowered:
    """``blinear``: tokens (..., C) as a 1x1 binary conv."""
    attrs, tensors = _binary_layer(m, _lower_binary_weight, m.out_features)
    attrs["in_channels"] = int(m.in_features)
    return attrs, tensors


def _float_conv_tensors(m: Any) -> dict[str, np.ndarray]:
    out = m.out_channels
    return {"w_float": _np(m.weight), "out_scale": np.ones(out, np.float32),
            "out_bias": _np(m.bias) if m.bias is not None else np.zeros(out, np.float32)}


def lower_conv(m: nn.Conv2d) -> Lowered:
    """``conv``: float weights with a per-channel epilogue (so BatchNorm can fold into it)."""
    return _conv_geometry(m), _float_conv_tensors(m)


def lower_conv_transpose(m: nn.ConvTranspose2d) -> Lowered:
    """``convT``: stride == kernel, no padding (a per-pixel GEMM)."""
    geometry = _conv_geometry(m)
    if not _is_upsampling(m, geometry):
        raise UnsupportedModelError("transposed conv with stride != kernel or padding")
    return geometry, _float_conv_tensors(m)


def lower_linear(m: nn.Linear) -> Lowered:
    tensors = {"weight": _np(m.weight)}
    if m.bias is not None:
        tensors["bias"] = _np(m.bias)
    return {}, tensors


def lower_batchnorm(m: nn.BatchNorm2d) -> Lowered:
    """Eval BN as ``x * scale + shift``: ``scale = g / sqrt(var + eps)``, ``shift = beta - mu *
    scale`` (computed in float64, stored as float32)."""
    if m.running_mean is None:
        raise UnsupportedModelError("BatchNorm2d without running statistics")
    with torch.no_grad():
        k = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
        shift = m.bias.double() - m.running_mean.double() * k
    return {}, {"scale": k.float().numpy(), "shift": shift.float().numpy()}


def lower_layernorm(m: nn.LayerNorm) -> Lowered:
    tensors = {}
    if m.weight is not None:
        tensors["weight"], tensors["bias"] = _np(m.weight), _np(m.bias)
    return {"eps": float(m.eps), "shape": [int(s) for s in m.normalized_shape]}, tensors


def lower_gelu(m: nn.GELU) -> Lowered:
    if m.approximate != "none":
        raise UnsupportedModelError(f"GELU(approximate={m.approximate!r})")
    return {}, {}


def lower_prelu(m: nn.PReLU) -> Lowered:
    return {}, {"weight": _np(m.weight)}


def lower_learnable_bias(m: LearnableBias) -> Lowered:
    return {"channel_dim": m.channel_dim}, {"bias": _np(m.bias)}


def lower_rprelu(m: RPReLU) -> Lowered:
    tensors = {"gamma": _np(m.gamma), "beta": _np(m.beta)}
    if m.zeta is not None:
        tensors["zeta"] = _np(m.zeta)
    return {"channel_dim": m.channel_dim}, tensors


def lower_maxout(m: Maxout) -> Lowered:
    return {"channel_dim": m.channel_dim}, {"pos": _np(m.pos_scale), "neg": _np(m.neg_scale)}


def _pool_geometry(m: Any) -> dict[str, Any]:
    if m.ceil_mode:
        raise UnsupportedModelError(f"{type(m).__name__}(ceil_mode=True)")
    stride = m.stride if m.stride is not None else m.kernel_size
    return {"kernel": _pair(m.kernel_size), "stride": _pair(stride),
            "padding": _pair(m.padding)}


def lower_maxpool(m: nn.MaxPool2d) -> Lowered:
    attrs = _pool_geometry(m)
    if _pair(m.dilation) != [1, 1]:
        raise UnsupportedModelError("dilated max pooling")
    return attrs, {}


def lower_avgpool(m: nn.AvgPool2d) -> Lowered:
    attrs = _pool_geometry(m)
    if m.divisor_override is not None:
        raise UnsupportedModelError("AvgPool2d(divisor_override=...)")
    return {**attrs, "count_include_pad": bool(m.count_include_pad)}, {}


def lower_adaptive_avgpool(m: nn.AdaptiveAvgPool2d) -> Lowered:
    return {"output_size": _pair(m.output_size)}, {}


def lower_standalone_activation(m: ActivationBinarizer) -> Lowered:
    """``act``: a binarizer outside a binary layer; only sign and identity (no scale)."""
    attrs, tensors = lower_activation(m)
    if attrs["kind"] not in ("sign", "identity"):
        raise UnsupportedModelError(f"stand-alone activation binarizer {attrs['kind']!r}")
    return {"act": attrs}, tensors


@dataclass(frozen=True)
class ModuleLowering:
    """One runtime module op kind on the export side.

    ``modules``: the torch classes it lowers (subclasses included); ``when``: an extra condition
    on the module; ``lower``: ``module -> (attrs, tensors)``; ``folds_bn``: the lowering ends in
    a per-output-channel ``out_scale`` / ``out_bias`` epilogue a following BatchNorm folds into.
    """

    kind: str
    modules: tuple[type[nn.Module], ...]
    lower: Callable[[Any], Lowered]
    when: Callable[[nn.Module], bool] | None = None
    folds_bn: bool = False

    def matches(self, m: nn.Module) -> bool:
        """Whether this entry lowers ``m``."""
        return isinstance(m, self.modules) and (self.when is None or self.when(m))


def _is_layernorm2d(m: nn.Module) -> bool:
    # LayerNorm over the channels of NCHW (ConvNeXt's), told apart by its class name
    return type(m).__name__ == "LayerNorm2d"


#: first match wins, so an entry comes before the entries of its base classes (the binary
#: layers subclass the float ones)
MODULE_LOWERINGS: tuple[ModuleLowering, ...] = (
    ModuleLowering("bconv", (BinaryConv2d,), lower_binary_conv, folds_bn=True),
    ModuleLowering("bconvT", (BinaryConvTranspose2d,), lower_binary_conv_transpose,
                   folds_bn=True),
    ModuleLowering("blinear", (BinaryLinear,), lower_binary_linear),
    ModuleLowering("act", (ActivationBinarizer,), lower_standalone_activation),
    ModuleLowering("conv", (nn.Conv2d,), lower_conv, folds_bn=True),
    ModuleLowering("convT", (nn.ConvTranspose2d,), lower_conv_transpose, folds_bn=True),
    ModuleLowering("linear", (nn.Linear,), lower_linear),
    ModuleLowering("bn", (nn.BatchNorm2d,), lower_batchnorm),
    ModuleLowering("ln2d", (nn.LayerNorm,), lower_layernorm, when=_is_layernorm2d),
    ModuleLowering("ln", (nn.LayerNorm,), lower_layernorm),
    ModuleLowering("gelu", (nn.GELU,), lower_gelu),
    ModuleLowering("relu", (nn.ReLU,), _no_state),
    ModuleLowering("sigmoid", (nn.Sigmoid,), _no_state),
    ModuleLowering("prelu", (nn.PReLU,), lower_prelu),
    ModuleLowering("maxpool", (nn.MaxPool2d,), lower_maxpool),
    ModuleLowering("avgpool", (nn.AvgPool2d,), lower_avgpool),
    ModuleLowering("adapool", (nn.AdaptiveAvgPool2d,), lower_adaptive_avgpool),
    ModuleLowering("identity", (nn.Dropout, nn.Dropout2d, nn.Identity), _no_state),
    ModuleLowering("lbias", (LearnableBias,), lower_learnable_bias),
    ModuleLowering("rprelu", (RPReLU,), lower_rprelu),
    ModuleLowering("maxout", (Maxout,), lower_maxout),
)


def module_lowering(m: nn.Module) -> ModuleLowering | None:
    """The table entry that lowers ``m``, or ``None``."""
    return next((entry for entry in MODULE_LOWERINGS if entry.matches(m)), None)


def leaf_kind(m: nn.Module) -> str | None:
    """The runtime op kind for a module recorded as one node, or ``None`` to trace into it."""
    entry = module_lowering(m)
    return None if entry is None else entry.kind


def lower_modules(modules: dict[str, tuple[str, nn.Module]]
                  ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Lower every captured leaf module ``key -> (kind, module)``.

    Returns ``(lowered, problems)``: ``lowered[key] = {"kind", "attrs", "tensors"}`` for the
    modules that lower, and one ``"key (Class): reason"`` line per module that does not.
    """
    kinds = {entry.kind: entry for entry in MODULE_LOWERINGS}
    lowered: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for key, (kind, m) in modules.items():
        try:
            attrs, tensors = kinds[kind].lower(m)
        except UnsupportedModelError as exc:
            problems.append(f"{key} ({type(m).__name__}): {exc}")
            continue
        lowered[key] = {"kind": kind, "attrs": attrs, "tensors": tensors}
    return lowered, problems


def unsupported_functions(nodes: Iterable[dict[str, Any]]) -> list[str]:
    """One ``"function 'name'"`` line per function node the runtime cannot run (not in
    :data:`bidense.runtime.ops.FUNCTIONS`)."""
    return [f"function {n['op']!r}" for n in nodes
            if n["kind"] == "fn" and n["op"] not in FUNCTIONS]
