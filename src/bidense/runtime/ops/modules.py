"""Float module kinds of a ``.bdn`` graph: one :class:`ModuleOp` entry per kind.

Each runs in float32 on logical NCHW arrays over channels-last memory (see
:mod:`bidense.runtime.ops.float_ops`); BN folded into a conv by the exporter arrives as the
conv's ``out_scale`` / ``out_bias``. The binary kinds are in :mod:`bidense.runtime.ops.binary`.
"""

from __future__ import annotations

import numpy as np

from .base import ModuleOp, RunContext
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

__all__ = ["FLOAT_MODULE_OPS"]


class Conv(ModuleOp):
    """``nn.Conv2d`` (+ folded BN): ``conv(x, w) * out_scale + out_bias``."""

    kind = "conv"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a, t = self.attrs, self.tensors
        y = conv2d(x, t["w_float"], a["stride"], a["padding"], a["dilation"], a["groups"],
                   t["out_scale"].reshape(-1), t["out_bias"].reshape(-1), threads=ctx.threads)
        return y, "fp32 conv"


class ConvTranspose(ModuleOp):
    """``nn.ConvTranspose2d`` with ``stride == kernel`` (+ folded BN)."""

    kind = "convT"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t = self.tensors
        y = conv_transpose_kernel_stride(x, t["w_float"], self.attrs["kernel"])
        return (y * channel_view(t["out_scale"], 4, 1) + channel_view(t["out_bias"], 4, 1),
                "fp32 numpy")


class Linear(ModuleOp):
    """``nn.Linear``: ``x W^T (+ b)``."""

    kind = "linear"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t = self.tensors
        y = x @ t["weight"].T
        return (y + t["bias"] if "bias" in t else y), "fp32 numpy"


class BatchNorm(ModuleOp):
    """BN left unfolded: ``x * scale + shift`` along dim 1."""

    kind = "bn"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t, nd = self.tensors, x.ndim
        return (x * channel_view(t["scale"], nd, 1) + channel_view(t["shift"], nd, 1),
                "fp32 numpy (BN)")


class LayerNorm(ModuleOp):
    """``nn.LayerNorm`` over the trailing ``shape``."""

    kind = "ln"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a, t = self.attrs, self.tensors
        return layer_norm(x, a["shape"], t.get("weight"), t.get("bias"), a["eps"]), "fp32"


class LayerNorm2d(ModuleOp):
    """Channel LayerNorm of NCHW maps (ConvNeXt's ``LayerNorm2d``): LN of the NHWC data."""

    kind = "ln2d"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a, t = self.attrs, self.tensors
        y = layer_norm(nhwc(x), a["shape"], t.get("weight"), t.get("bias"), a["eps"])
        return nchw(y), "fp32"


class GELU(ModuleOp):
    """Exact (erf) GELU in PyTorch's float32 order."""

    kind = "gelu"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return gelu(x), "fp32"


class ReLU(ModuleOp):
    """``max(x, 0)``."""

    kind = "relu"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return np.maximum(x, np.float32(0)), "fp32"


class Sigmoid(ModuleOp):
    """``1 / (1 + exp(-x))``."""

    kind = "sigmoid"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return sigmoid(x), "fp32"


class Identity(ModuleOp):
    """Pass-through."""

    kind = "identity"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return x, "identity"


class PReLU(ModuleOp):
    """``x if x >= 0 else w x`` (one slope, or one per dim-1 channel)."""

    kind = "prelu"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        w = self.tensors["weight"]
        wv = channel_view(w, x.ndim, 1) if w.size > 1 else w.reshape(())
        return np.where(x >= 0, x, wv * x).astype(np.float32), "fp32"


class LearnableBias(ModuleOp):
    """ReActNet's learnable bias: ``x + b`` along ``channel_dim``."""

    kind = "lbias"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return x + channel_view(self.tensors["bias"], x.ndim, self.attrs["channel_dim"]), "fp32"


class RPReLU(ModuleOp):
    """ReActNet's RPReLU: ``s = x - gamma``; ``(s if s > 0 else beta s) + zeta``."""

    kind = "rprelu"

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

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        t, nd, cd = self.tensors, x.ndim, self.attrs["channel_dim"]
        y = channel_view(t["pos"], nd, cd) * np.maximum(x, 0) - channel_view(
            t["neg"], nd, cd) * np.maximum(-x, 0)
        return y.astype(np.float32), "fp32"


class MaxPool(ModuleOp):
    """``nn.MaxPool2d``."""

    kind = "maxpool"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a = self.attrs
        return pool(x, a["kernel"], a["stride"], a["padding"], "max"), "fp32"


class AvgPool(ModuleOp):
    """``nn.AvgPool2d``."""

    kind = "avgpool"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        a = self.attrs
        return pool(x, a["kernel"], a["stride"], a["padding"], "avg",
                    a["count_include_pad"]), "fp32"


class AdaptiveAvgPool(ModuleOp):
    """``nn.AdaptiveAvgPool2d``."""

    kind = "adapool"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        return adaptive_avg_pool(x, self.attrs["output_size"]), "fp32"


class Activation(ModuleOp):
    """A stand-alone activation binarizer: ``sign(x)``, or identity (float activations)."""

    kind = "act"

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        if self.attrs["act"]["kind"] == "identity":
            return x, "identity"
        return np.sign(x).astype(np.float32), "sign"


#: kind -> op class of the float module kinds.
FLOAT_MODULE_OPS: dict[str, type[ModuleOp]] = {op.kind: op for op in (
    Conv, ConvTranspose, Linear, BatchNorm, LayerNorm, LayerNorm2d, GELU, ReLU, Sigmoid, Identity,
    PReLU, LearnableBias, RPReLU, Maxout, MaxPool, AvgPool, AdaptiveAvgPool, Activation)}
