"""Float module kinds of a ``.bdn`` graph: one :class:`ModuleOp` entry per kind.

Each runs in float32 on logical NCHW arrays over channels-last memory (see
:mod:`bidense.runtime.ops.float_ops`); BN folded into a conv by the exporter arrives as the
conv's ``out_scale`` / ``out_bias``. The binary kinds are in :mod:`bidense.runtime.ops.binary`.
"""

from __future__ import annotations

import numpy as np

from .base import (
    ModuleOp,
    RunContext,
    TensorSpec,
    flag,
    int_list,
    integer,
    number,
    pair,
    require,
    text,
    window_out,
)
from .float_ops import (
    adaptive_avg_pool,
    channel_view,
    conv2d,
    conv_transpose_kernel_stride,
    gelu,
    layer_norm,
    nchw,
    nhwc,
    pool,
    sigmoid,
)

__all__ = ["CONV_GEOMETRY", "FLOAT_MODULE_OPS", "check_channels", "check_conv_geometry",
           "conv_out_shape", "spatial_4d"]

#: the attributes of a convolution (shared with the binary layers)
CONV_GEOMETRY = {"kernel": pair(1), "stride": pair(1), "padding": pair(0), "dilation": pair(1),
                 "groups": integer(1)}
_EPILOGUE = {"out_scale": TensorSpec(), "out_bias": TensorSpec()}
_CHANNEL_DIM = {"channel_dim": integer(-4, 3)}


def spatial_4d(shape: tuple[int, ...], channels: int | None = None
               ) -> tuple[int, int, int, int]:
    """``shape`` as ``(n, c, h, w)``; ``ValueError`` unless it is 4-D (with ``channels``)."""
    require(len(shape) == 4, f"needs a 4-D NCHW input, gets shape {list(shape)}")
    require(channels is None or shape[1] == channels, f"takes {channels} input channels, its "
            f"input has {shape[1]} (shape {list(shape)})")
    n, c, h, w = shape
    return n, c, h, w


def conv_out_shape(attrs: dict, shape: tuple[int, ...], channels: int | None = None,
                   out: int | None = None) -> tuple[int, ...]:
    """Output shape of a convolution (``channels`` in, ``out`` out) or pooling window (the
    input's channels) over an NCHW input: PyTorch's formula, ``dilation`` 1 where the op has
    none."""
    n, c, h, w = spatial_4d(shape, channels)
    out = c if out is None else out
    dil = attrs.get("dilation", [1, 1])
    return (n, out, *(window_out(s, k, st, p, d) for s, k, st, p, d in zip(
        (h, w), attrs["kernel"], attrs["stride"], attrs["padding"], dil)))


def check_conv_geometry(attrs: dict, out: int) -> None:
    """Padding inside the (dilated) kernel span and ``out`` divisible by ``groups``."""
    for k, p, d in zip(attrs["kernel"], attrs["padding"], attrs.get("dilation", [1, 1])):
        require(p < d * (k - 1) + 1, f"padding {attrs['padding']} not smaller than the kernel "
                f"span of kernel {attrs['kernel']}")
    require(out % attrs.get("groups", 1) == 0,
            f"{out} output channels not divisible by groups {attrs.get('groups', 1)}")


def check_channels(shape: tuple[int, ...], axis: int, size: int, what: str) -> None:
    """``shape[axis] == size`` (the channel count of a per-channel parameter ``what``)."""
    require(-len(shape) <= axis < len(shape), f"channel axis {axis} outside the input's "
            f"{len(shape)} dimensions")
    require(shape[axis] == size, f"{what} has {size} channels, its input {shape[axis]} "
            f"(shape {list(shape)})")


def _same_size(tensors: dict, names: tuple[str, ...]) -> int:
    sizes = {tensors[k].size for k in names if k in tensors}
    require(len(sizes) == 1, f"tensors {list(names)} differ in size {sorted(sizes)}")
    return sizes.pop()


class _Elementwise(ModuleOp):
    """An op that keeps its input's shape (no attributes, no tensors)."""

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


class Conv(ModuleOp):
    """``nn.Conv2d`` (+ folded BN): ``conv(x, w) * out_scale + out_bias``."""

    kind = "conv"

    attr_specs = CONV_GEOMETRY
    optional_attrs = {"bn_folded": text()}
    tensor_specs = {"w_float": TensorSpec(4), **_EPILOGUE}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        o, _, kh, kw = tensors["w_float"].shape
        require([kh, kw] == attrs["kernel"],
                f"kernel {attrs['kernel']} but weights of {kh}x{kw}")
        require(tensors["out_scale"].shape == tensors["out_bias"].shape == (o,),
                f"out_scale / out_bias must have the {o} output channels")
        check_conv_geometry(attrs, o)

    def out_shape(self, shape):
        o, cg = self.tensors["w_float"].shape[:2]
        return conv_out_shape(self.attrs, shape, cg * self.attrs["groups"], o)

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a, t = self.attrs, self.tensors
        y = conv2d(x, t["w_float"], a["stride"], a["padding"], a["dilation"], a["groups"],
                   t["out_scale"].reshape(-1), t["out_bias"].reshape(-1), threads=ctx.threads)
        return y, "fp32 conv"


class ConvTranspose(ModuleOp):
    """``nn.ConvTranspose2d`` with ``stride == kernel`` (+ folded BN)."""

    kind = "convT"

    attr_specs = CONV_GEOMETRY
    optional_attrs = {"bn_folded": text()}
    tensor_specs = {"w_float": TensorSpec(4), **_EPILOGUE}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        _, o, kh, kw = tensors["w_float"].shape
        require([kh, kw] == attrs["kernel"] == attrs["stride"] and attrs["padding"] == [0, 0]
                and attrs["dilation"] == [1, 1] and attrs["groups"] == 1,
                "runs stride == kernel (weights' size), no padding, dilation or groups only")
        require(tensors["out_scale"].shape == tensors["out_bias"].shape == (o,),
                f"out_scale / out_bias must have the {o} output channels")

    def out_shape(self, shape):
        i, o, kh, kw = self.tensors["w_float"].shape
        n, _, h, w = spatial_4d(shape, i)
        return n, o, h * kh, w * kw

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t = self.tensors
        y = conv_transpose_kernel_stride(x, t["w_float"], self.attrs["kernel"])
        return (y * channel_view(t["out_scale"], 4, 1) + channel_view(t["out_bias"], 4, 1),
                "fp32 numpy")


class Linear(ModuleOp):
    """``nn.Linear``: ``x W^T (+ b)``."""

    kind = "linear"

    tensor_specs = {"weight": TensorSpec(2), "bias": TensorSpec(required=False)}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        o = tensors["weight"].shape[0]
        require("bias" not in tensors or tensors["bias"].shape == (o,),
                f"bias must have the {o} output features")

    def out_shape(self, shape):
        o, i = self.tensors["weight"].shape
        check_channels(shape, -1, i, "weight")
        return shape[:-1] + (o,)

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t = self.tensors
        y = x @ t["weight"].T
        return (y + t["bias"] if "bias" in t else y), "fp32 numpy"


class BatchNorm(ModuleOp):
    """BN left unfolded: ``x * scale + shift`` along dim 1."""

    kind = "bn"

    tensor_specs = {"scale": TensorSpec(), "shift": TensorSpec()}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        _same_size(tensors, ("scale", "shift"))

    def out_shape(self, shape):
        check_channels(shape, 1, self.tensors["scale"].size, "scale")
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t, nd = self.tensors, x.ndim
        return (x * channel_view(t["scale"], nd, 1) + channel_view(t["shift"], nd, 1),
                "fp32 numpy (BN)")


class LayerNorm(ModuleOp):
    """``nn.LayerNorm`` over the trailing ``shape``."""

    kind = "ln"

    attr_specs = {"eps": number(0.0, 1.0), "shape": int_list()}
    tensor_specs = {"weight": TensorSpec(None, required=False),
                    "bias": TensorSpec(None, required=False)}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        require(("weight" in tensors) == ("bias" in tensors), "weight and bias come together")
        for t in tensors.values():
            require(list(t.shape) == attrs["shape"],
                    f"weight / bias of shape {list(t.shape)} for a norm over {attrs['shape']}")

    def out_shape(self, shape):
        k = len(self.attrs["shape"])
        require(list(shape[len(shape) - k:]) == self.attrs["shape"] and len(shape) > k,
                f"normalises over {self.attrs['shape']}, its input has shape {list(shape)}")
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a, t = self.attrs, self.tensors
        return layer_norm(x, a["shape"], t.get("weight"), t.get("bias"), a["eps"]), "fp32"


class LayerNorm2d(LayerNorm):
    """Channel LayerNorm of NCHW maps (ConvNeXt's ``LayerNorm2d``): LN of the NHWC data."""

    kind = "ln2d"

    @classmethod
    def check(cls, attrs, tensors) -> None:
        require(len(attrs["shape"]) == 1, f"normalises over channels, not {attrs['shape']}")
        super().check(attrs, tensors)

    def out_shape(self, shape):
        spatial_4d(shape, self.attrs["shape"][0])
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a, t = self.attrs, self.tensors
        y = layer_norm(nhwc(x), a["shape"], t.get("weight"), t.get("bias"), a["eps"])
        return nchw(y), "fp32"


class GELU(_Elementwise):
    """Exact (erf) GELU in PyTorch's float32 order."""

    kind = "gelu"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return gelu(x), "fp32"


class ReLU(_Elementwise):
    """``max(x, 0)``."""

    kind = "relu"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return np.maximum(x, np.float32(0)), "fp32"


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``."""

    kind = "sigmoid"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return sigmoid(x), "fp32"


class Identity(_Elementwise):
    """Pass-through."""

    kind = "identity"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return x, "identity"


class PReLU(ModuleOp):
    """``x if x >= 0 else w x`` (one slope, or one per dim-1 channel)."""

    kind = "prelu"

    tensor_specs = {"weight": TensorSpec()}

    def out_shape(self, shape):
        size = self.tensors["weight"].size
        if size != 1:
            check_channels(shape, 1, size, "weight")
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        w = self.tensors["weight"]
        wv = channel_view(w, x.ndim, 1) if w.size > 1 else w.reshape(())
        return np.where(x >= 0, x, wv * x).astype(np.float32), "fp32"


class LearnableBias(ModuleOp):
    """ReActNet's learnable bias: ``x + b`` along ``channel_dim``."""

    kind = "lbias"

    attr_specs = _CHANNEL_DIM
    tensor_specs = {"bias": TensorSpec(None)}

    def out_shape(self, shape):
        check_channels(shape, self.attrs["channel_dim"], self.tensors["bias"].size, "bias")
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return x + channel_view(self.tensors["bias"], x.ndim, self.attrs["channel_dim"]), "fp32"


class RPReLU(ModuleOp):
    """ReActNet's RPReLU: ``s = x - gamma``; ``(s if s > 0 else beta s) + zeta``."""

    kind = "rprelu"

    attr_specs = _CHANNEL_DIM
    tensor_specs = {"gamma": TensorSpec(None), "beta": TensorSpec(None),
                    "zeta": TensorSpec(None, required=False)}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        _same_size(tensors, ("gamma", "beta", "zeta"))

    def out_shape(self, shape):
        check_channels(shape, self.attrs["channel_dim"], self.tensors["gamma"].size, "gamma")
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t, nd, cd = self.tensors, x.ndim, self.attrs["channel_dim"]
        s = x - channel_view(t["gamma"], nd, cd)
        y = np.where(s > 0, s, channel_view(t["beta"], nd, cd) * s)
        if "zeta" in t:
            y = y + channel_view(t["zeta"], nd, cd)
        return y.astype(np.float32), "fp32"


class Maxout(ModuleOp):
    """BiDense's Maxout: ``pos * max(x, 0) - neg * max(-x, 0)`` along ``channel_dim``."""

    kind = "maxout"

    attr_specs = _CHANNEL_DIM
    tensor_specs = {"pos": TensorSpec(None), "neg": TensorSpec(None)}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        _same_size(tensors, ("pos", "neg"))

    def out_shape(self, shape):
        check_channels(shape, self.attrs["channel_dim"], self.tensors["pos"].size, "pos")
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t, nd, cd = self.tensors, x.ndim, self.attrs["channel_dim"]
        y = channel_view(t["pos"], nd, cd) * np.maximum(x, 0) - channel_view(
            t["neg"], nd, cd) * np.maximum(-x, 0)
        return y.astype(np.float32), "fp32"


class MaxPool(ModuleOp):
    """``nn.MaxPool2d``."""

    kind = "maxpool"

    attr_specs = {"kernel": pair(1), "stride": pair(1), "padding": pair(0)}

    @classmethod
    def check(cls, attrs, tensors) -> None:
        require(all(2 * p <= k for p, k in zip(attrs["padding"], attrs["kernel"])),
                f"padding {attrs['padding']} more than half the kernel {attrs['kernel']}")

    def out_shape(self, shape):
        return conv_out_shape(self.attrs, shape)

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a = self.attrs
        return pool(x, a["kernel"], a["stride"], a["padding"], "max"), "fp32"


class AvgPool(MaxPool):
    """``nn.AvgPool2d``."""

    kind = "avgpool"
    attr_specs = {**MaxPool.attr_specs, "count_include_pad": flag()}

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a = self.attrs
        return pool(x, a["kernel"], a["stride"], a["padding"], "avg",
                    a["count_include_pad"]), "fp32"


class AdaptiveAvgPool(ModuleOp):
    """``nn.AdaptiveAvgPool2d``."""

    kind = "adapool"

    attr_specs = {"output_size": pair(1)}

    def out_shape(self, shape):
        n, c, _, _ = spatial_4d(shape)
        return n, c, *self.attrs["output_size"]

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return adaptive_avg_pool(x, self.attrs["output_size"]), "fp32"


class Activation(ModuleOp):
    """A stand-alone activation binarizer: ``sign(x)``, or identity (float activations)."""

    kind = "act"

    attr_specs = {"act": lambda v: None if v in ({"kind": "sign"}, {"kind": "identity"}) else
                  f"must be {{'kind': 'sign' or 'identity'}}, got {v!r}"}

    def out_shape(self, shape):
        return shape

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        if self.attrs["act"]["kind"] == "identity":
            return x, "identity"
        return np.sign(x).astype(np.float32), "sign"


#: kind -> op class of the float module kinds.
FLOAT_MODULE_OPS: dict[str, type[ModuleOp]] = {op.kind: op for op in (
    Conv, ConvTranspose, Linear, BatchNorm, LayerNorm, LayerNorm2d, GELU, ReLU, Sigmoid, Identity,
    PReLU, LearnableBias, RPReLU, Maxout, MaxPool, AvgPool, AdaptiveAvgPool, Activation)}
