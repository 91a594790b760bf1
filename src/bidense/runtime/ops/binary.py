"""Binary layers (``bconv``, ``bconvT``, ``blinear``) and their activation binarizer table.

A binary layer computes ``y = conv(b(x), w_b) * s_o + b_o`` (BN folded by the exporter into
``out_scale`` / ``out_bias``), ``w_b`` its +-1 weights (1 bit each, OHWI packed) or exact float
weights, ``b(x)`` its activation binarizer: one :class:`Binarizer` entry per kind in
:data:`ACTIVATIONS`, giving ``b(x) = mult * sign(pre) + offset``.

Binary conv paths (engines.md §7), chosen per layer and per call; the report shows the name:

* ``packed``: sign bits packed along channels, XNOR-popcount (``kernels.binary_conv2d``), fused
  ``scale * D + bias`` epilogue. Taken when the binarized input's per-channel multiplier is
  uniform: sign/ApproxSign/RSign/BiSRNet/XNOR inputs, and DAB with ``scale="shared"`` (the
  per-sample alpha folds into the scale: ``packed, DAB shared alpha folded``; likewise DAB with
  ``scale="group"`` when the layer's input channels form one group).
* ``packed, DAB group alpha (per word)``: dense conv with DAB's ``scale="group"`` (one alpha
  per sample and per ``group`` input channels, a multiple of 64): the packed conv per group of
  words with its alpha folded into the scale, the float results summed in group order
  (``kernels.binary_conv2d_group_alpha``; exact to float rounding). A group size that is not a
  multiple of 64 takes the float path below with the alpha repeated per channel.
* ``depthwise packed`` / ``depthwise exact-alpha``: depthwise binary conv; DAB's per-sample,
  per-channel alpha folds into the per-(sample, channel) scale exactly.
* ``DAB float path (per-channel alpha)``: dense conv with DAB's per-channel alpha, a float32 conv
  of ``sign(x - tau) * alpha_c`` with the +-1 weights (exact to float rounding, about fp32
  speed).
* ``float (...)``: AdaBin (affine binary values), float weights, binary transposed convs
  (per-input-channel weight scale), identity binarizers (fp activations): the binarized values
  are formed exactly and convolved in float32.
* ``packed (linear)`` / ``float (linear)``: the same choice for ``blinear``.

Binarizers of the threshold form ``sign(x - tau)`` (sign, XNOR, RSign, DAB) pack straight from
``x`` in one pass (``kernels.pack_threshold``: bits, ties and DAB's deviation statistic) and
take a fused epilogue (:mod:`bidense.runtime.fusion`); BiSRNet's ``sign(k x + b)`` forms ``pre``
first.

Exact zeros: ``torch.sign(0) = 0`` cannot be one bit. When the pre-sign tensor holds zeros the
packed paths run twice, with zeros as +1 and as -1; ``sign(x) = (s_+ + s_-) / 2`` exactly, so
``D = (D_+ + D_-) / 2`` (integers, exact). The report marks these calls ``+zeros``.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from .. import kernels
from .base import (
    AttrCheck,
    ModuleOp,
    RunContext,
    TensorSpec,
    check_fields,
    choice,
    flag,
    integer,
    require,
    text,
)
from .float_ops import (
    apply_epilogue,
    channel_view,
    conv2d,
    conv_transpose_kernel_stride,
    nchw,
    nhwc,
)
from .modules import CONV_GEOMETRY, check_channels, check_conv_geometry, conv_out_shape, spatial_4d

__all__ = ["ACTIVATIONS", "BINARY_MODULE_OPS", "BinaryConv", "BinaryConvTranspose",
           "BinaryLinear", "Binarizer"]

Binarized = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


# ---------------------------------------------------------------------------------------------
# activation binarizers: b(x) = mult * sign(pre) + offset


class Binarizer:
    """One activation binarizer kind, prepared per layer from its ``act`` attributes and the
    layer's tensors (``act.<name>``).

    ``binary`` is False for float activations (identity). ``threshold_form`` binarizers are
    ``alpha * sign(x - tau)`` with ``tau`` from :meth:`threshold` and ``alpha`` (``None`` = 1)
    from :meth:`alpha` given ``dev = sum_hw |x - tau|`` when ``needs_deviation``: they take the
    one-pass packed path. ``k_scaled``: the layer output is multiplied by XNOR-Net's ``K``.
    """

    kind: ClassVar[str]
    binary: ClassVar[bool] = True
    threshold_form: ClassVar[bool] = False
    needs_deviation: ClassVar[bool] = False
    #: the ``act`` attributes besides ``kind`` (all optional) and the layer tensors
    #: ``act.<name>`` it reads (``size="in"``: one value per input channel)
    attr_specs: ClassVar[dict[str, AttrCheck]] = {}
    tensor_specs: ClassVar[dict[str, TensorSpec]] = {}

    def __init__(self, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        self.attrs = attrs
        self.tensors = tensors

    @property
    def k_scaled(self) -> bool:
        return False

    def binarize(self, x: np.ndarray, cdim: int) -> Binarized:
        """``(pre, mult, offset)`` for ``x`` with channels on ``cdim`` (each may be ``None``)."""
        raise NotImplementedError

    def threshold(self, xs: np.ndarray, ctx: RunContext) -> np.ndarray | None:
        """``tau`` of NHWC ``xs``: ``None`` (0), ``(C,)`` or ``(N, C)``."""
        return None

    def alpha(self, dev: np.ndarray | None, hw: int) -> np.ndarray | None:
        """The ``(N, C)`` or ``(N, 1)`` multiplier from ``dev`` (``None``: 1); ``(N,
        ceil(C / alpha_group))`` when :attr:`alpha_group` is set."""
        return None

    #: input channels that share one alpha in :meth:`alpha` (consecutive runs, the last one
    #: possibly shorter); ``None``: one per channel, or no alpha
    alpha_group: int | None = None


class Identity(Binarizer):
    """Float activations (the layer only binarizes its weights)."""

    kind = "identity"
    binary = False

    def binarize(self, x: np.ndarray, cdim: int) -> Binarized:
        return x, None, None


class Sign(Binarizer):
    """``sign(x)`` (also ApproxSign / STE variants: the forward pass is the same)."""

    kind = "sign"
    threshold_form = True

    def binarize(self, x: np.ndarray, cdim: int) -> Binarized:
        return x, None, None


class XNOR(Sign):
    """XNOR-Net: ``sign(x)``, the output scaled by ``K`` (the mean ``|x|`` over the receptive
    field) when ``use_k``."""

    kind = "xnor"
    attr_specs = {"use_k": flag()}

    @property
    def k_scaled(self) -> bool:
        return bool(self.attrs.get("use_k", True))


class RSign(Binarizer):
    """ReActNet's RSign: ``sign(x - threshold_c)``."""

    kind = "rsign"
    threshold_form = True
    tensor_specs = {"threshold": TensorSpec(None, size="in")}

    def binarize(self, x: np.ndarray, cdim: int) -> Binarized:
        return x - channel_view(self.tensors["act.threshold"], x.ndim, cdim), None, None

    def threshold(self, xs: np.ndarray, ctx: RunContext) -> np.ndarray | None:
        return self.tensors["act.threshold"].reshape(-1)


class BiSRNet(Binarizer):
    """BiSRNet: ``sign(k_c x + b_c)``."""

    kind = "bisrnet"
    tensor_specs = {"k": TensorSpec(None, size="in"), "b": TensorSpec(None, size="in")}

    def binarize(self, x: np.ndarray, cdim: int) -> Binarized:
        t, nd = self.tensors, x.ndim
        return channel_view(t["act.k"], nd, cdim) * x + channel_view(t["act.b"], nd, cdim), \
            None, None


class AdaBin(Binarizer):
    """AdaBin: ``alpha * sign((x - beta) / alpha) + beta`` (``variant="reference"``: the
    offset is ``alpha * beta``)."""

    kind = "adabin"
    attr_specs = {"variant": choice("paper", "reference")}
    tensor_specs = {"alpha": TensorSpec(size=1), "beta": TensorSpec(size=1)}

    def binarize(self, x: np.ndarray, cdim: int) -> Binarized:
        al, be = self.tensors["act.alpha"][0], self.tensors["act.beta"][0]
        pre = (x - be) / al
        if self.attrs.get("variant") == "reference":
            return pre, al, al * be
        return pre, al, be


class DAB(Binarizer):
    """BiDense's DAB (Yin et al. 2024): ``tau = k_c mean_hw(x) + b_c``,
    ``alpha = exp(a_c (mean_hw |x - tau| - 1))`` per sample and channel, ``b(x) = alpha *
    sign(x - tau)``. Our variants average alpha (float64 means rounded to float32):
    ``scale="shared"`` over all channels, ``scale="group"`` over each run of ``group``
    consecutive channels (default 64; the last run possibly shorter)."""

    kind = "dab"
    threshold_form = True
    needs_deviation = True
    attr_specs = {"scale": choice("channel", "shared", "group"), "group": integer(1)}
    tensor_specs = {name: TensorSpec(None, size="in") for name in ("a", "k", "b")}

    def __init__(self, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        super().__init__(attrs, tensors)
        self.alpha_group = {"channel": None, "shared": tensors["act.a"].size,
                            "group": attrs.get("group", 64)}[attrs.get("scale", "channel")]

    def _averaged(self, alpha: np.ndarray, axis: int) -> np.ndarray:
        """``alpha`` averaged over each run of :attr:`alpha_group` channels on ``axis``."""
        g = self.alpha_group
        if g is None:
            return alpha
        runs = np.split(alpha, range(g, alpha.shape[axis], g), axis=axis)
        return np.concatenate([r.mean(axis=axis, keepdims=True, dtype=np.float64)
                               for r in runs], axis=axis).astype(np.float32)

    def binarize(self, x: np.ndarray, cdim: int) -> Binarized:
        t, nd = self.tensors, x.ndim
        axes = tuple(i for i in range(1, nd) if i != cdim % nd)
        x64 = x.astype(np.float64)

        def mean(v):
            return v.mean(axis=axes, keepdims=True).astype(np.float32) if axes else v

        mu = mean(x64)
        tau = channel_view(t["act.k"], nd, cdim) * mu + channel_view(t["act.b"], nd, cdim)
        m = mean(np.abs(x64 - tau))
        alpha = np.exp(channel_view(t["act.a"], nd, cdim) * (m - np.float32(1.0)))
        alpha = self._averaged(alpha, cdim % nd)
        c = x.shape[cdim]
        if 1 < alpha.shape[cdim] < c:  # group means, repeated over their channels
            alpha = np.repeat(alpha, self.alpha_group, axis=cdim % nd).take(range(c), cdim)
        return x - tau, alpha.astype(np.float32), None

    def threshold(self, xs: np.ndarray, ctx: RunContext) -> np.ndarray | None:
        t = self.tensors
        hw = xs.shape[1] * xs.shape[2]
        mu = (kernels.channel_sum(xs, threads=ctx.threads) / hw).astype(np.float32)
        return (t["act.k"].reshape(1, -1) * mu + t["act.b"].reshape(1, -1)).astype(np.float32)

    def alpha(self, dev: np.ndarray | None, hw: int) -> np.ndarray | None:
        m = (dev / hw).astype(np.float32)
        alpha = np.exp(self.tensors["act.a"].reshape(1, -1) * (m - np.float32(1.0))).astype(
            np.float32)
        return self._averaged(alpha, 1)


#: binarizer kind (as written in ``.bdn`` ``act`` attributes) -> entry.
ACTIVATIONS: dict[str, type[Binarizer]] = {b.kind: b for b in (
    Sign, XNOR, RSign, BiSRNet, AdaBin, DAB, Identity)}


def _binarized_values(pre: np.ndarray, mult: Any, offset: Any) -> np.ndarray:
    """``mult * sign(pre) + offset``, formed exactly in float32."""
    val = np.sign(pre).astype(np.float32)
    val = val if mult is None else val * mult
    return val if offset is None else val + offset


# ---------------------------------------------------------------------------------------------
# binary layers


def _activation_attrs(act: Any) -> str | None:
    """The ``act`` attribute: ``{"kind": a kind of ACTIVATIONS, **its attributes}``."""
    if not isinstance(act, dict) or not isinstance(act.get("kind"), str) or \
            act["kind"] not in ACTIVATIONS:
        return f"must name an activation binarizer of {sorted(ACTIVATIONS)}, got {act!r}"
    try:
        check_fields("", {k: v for k, v in act.items() if k != "kind"}, {},
                     ACTIVATIONS[act["kind"]].attr_specs)
    except ValueError as exc:
        return str(exc).lstrip(": ")
    return None


def _words(channels: int) -> int:
    # uint64 words of one packed pixel: 64 input channels per word
    return -(-channels // 64)


class _BinaryLayer(ModuleOp):
    """What the binary layers share: output scale/bias, weights, the activation binarizer."""

    attr_specs = {"act": _activation_attrs, "in_channels": integer(1),
                  "weight": choice("bits", "float")}
    optional_attrs = {"groups": integer(1), "pad_mode": choice("zero", "one"),
                      "bn_folded": text()}
    #: the weight tensors for ``weight="bits"`` and ``"float"``
    weight_specs: ClassVar[dict[str, dict[str, TensorSpec]]] = {
        "bits": {"w_bits": TensorSpec(4, "uint64")}, "float": {"w_float": TensorSpec(4)}}

    @classmethod
    def tensor_table(cls, attrs: dict[str, Any]) -> dict[str, TensorSpec]:
        act = ACTIVATIONS[attrs["act"]["kind"]]
        return {"out_scale": TensorSpec(), "out_bias": TensorSpec(),
                **cls.weight_specs[attrs["weight"]],
                **{f"act.{k}": spec for k, spec in act.tensor_specs.items()}}

    @classmethod
    def check(cls, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        cin, groups = attrs["in_channels"], attrs.get("groups", 1)
        o = tensors["out_scale"].shape[0]
        require(tensors["out_bias"].shape == (o,), f"out_bias must have the {o} channels of "
                "out_scale")
        require(cin % groups == 0, f"{cin} input channels not divisible by groups {groups}")
        for k, spec in ACTIVATIONS[attrs["act"]["kind"]].tensor_specs.items():
            want = cin if spec.size == "in" else spec.size
            require(tensors[f"act.{k}"].size == want,
                    f"tensor 'act.{k}' has {tensors[f'act.{k}'].size} values, needs {want}")
        w = tensors["w_bits" if attrs["weight"] == "bits" else "w_float"]
        want = cls.weight_shape(attrs, o)[attrs["weight"]]
        require(w.shape == want, f"weights of shape {list(w.shape)}, the attributes need "
                f"{list(want)}")

    @classmethod
    def weight_shape(cls, attrs: dict[str, Any], out: int) -> dict[str, tuple[int, ...]]:
        """The ``w_bits`` and ``w_float`` shapes the attributes and ``out`` channels imply."""
        raise NotImplementedError

    def __init__(self, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        super().__init__(attrs, tensors)
        act_kind = attrs["act"]["kind"]
        if act_kind not in ACTIVATIONS:
            raise ValueError(f"unknown activation binarizer {act_kind!r}")
        self.binarizer = ACTIVATIONS[act_kind](attrs["act"], tensors)
        self.out_scale = tensors["out_scale"]
        self.out_bias = tensors["out_bias"]
        self.cin = int(attrs["in_channels"])
        self.float_weights = attrs["weight"] == "float"
        self.groups = int(attrs.get("groups", 1))
        self.pad_mode = attrs.get("pad_mode", "zero")
        if self.pad_mode not in ("zero", "one"):
            raise ValueError(f"unknown pad_mode {self.pad_mode!r}")
        self.w_bits = None if self.float_weights else tensors["w_bits"]
        self._wf: np.ndarray | None = None

    def weight_float(self) -> np.ndarray:
        """The float weight tensor (+-1 signs, or the exact float weights), built once."""
        if self._wf is None:
            self._wf = (self.tensors["w_float"].astype(np.float32) if self.float_weights
                        else self._unpack_weights())
        return self._wf

    def _unpack_weights(self) -> np.ndarray:
        # OIHW +-1 weights from the (O, KH, KW, I/g) packed bits
        cg = self.cin // self.groups
        s = kernels.unpack_nhwc(self.w_bits, cg)
        return np.ascontiguousarray(s.transpose(0, 3, 1, 2), np.float32)


class BinaryConv(_BinaryLayer):
    """Binary ``conv2d``; the paths are in the module docstring."""

    kind = "bconv"
    attr_specs = {**_BinaryLayer.attr_specs, **CONV_GEOMETRY}

    @classmethod
    def check(cls, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        super().check(attrs, tensors)
        check_conv_geometry(attrs, tensors["out_scale"].shape[0])

    @classmethod
    def weight_shape(cls, attrs: dict[str, Any], out: int) -> dict[str, tuple[int, ...]]:
        cg, (kh, kw) = attrs["in_channels"] // attrs["groups"], attrs["kernel"]
        return {"bits": (out, kh, kw, _words(cg)), "float": (out, cg, kh, kw)}

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return conv_out_shape(self.attrs, shape, self.cin, self.out_scale.shape[0])

    @property
    def fusable(self) -> bool:
        """Whether the epilogue can be fused (:mod:`bidense.runtime.fusion`): binary weights
        and a threshold-form binarizer, the one-pass packed path."""
        return not self.float_weights and self.binarizer.threshold_form

    def run(self, x: np.ndarray, ctx: RunContext, epi: dict[str, Any] | None = None
            ) -> tuple[np.ndarray, str]:
        """Run the layer on ``x``; ``epi`` is a fused epilogue: ``bypass`` (NHWC), then
        ``PReLU(y + pre; slope) + post`` (see :mod:`bidense.runtime.fusion`)."""
        b = self.binarizer
        if self.fusable:
            xs = nhwc(x)
            tau = b.threshold(xs, ctx)
            bits, ties, dev = kernels.pack_threshold(xs, tau, absdev=b.needs_deviation,
                                                     threads=ctx.threads)
            alpha = b.alpha(dev, xs.shape[1] * xs.shape[2])
            return self._run_packed(x, xs, tau, bits, ties, alpha, ctx, epi)
        if not b.binary:
            y, path = self._float(x, None, ctx), "float (fp activations)"
        else:
            pre, mult, off = b.binarize(x, 1)
            if self.float_weights or mult is not None or off is not None:
                y = self._float(_binarized_values(pre, mult, off), x, ctx)
                path = "float (" + ("affine binary values" if off is not None else
                                    "float weights") + ")"
            else:
                xs = nhwc(pre)
                bits, ties, _ = kernels.pack_threshold(xs, None, threads=ctx.threads)
                return self._run_packed(x, xs, None, bits, ties, None, ctx, epi)
        return (nchw(apply_epilogue(nhwc(y), epi)) if epi else y), path

    def _run_packed(self, x: np.ndarray, xs: np.ndarray, tau: np.ndarray | None,
                    bits: np.ndarray, ties: int, alpha: np.ndarray | None, ctx: RunContext,
                    epi: dict[str, Any] | None) -> tuple[np.ndarray, str]:
        """The packed paths on channels-last data: the binarized input is
        ``alpha * sign(xs - tau)`` (``bits``, ``ties`` from ``kernels.pack_threshold``); the conv
        writes NHWC with the fused epilogue. ``x`` is the layer input (XNOR's ``K``)."""
        depthwise = self.groups == self.cin and self.w_bits.shape[0] == self.cin
        kh, kw = self.attrs["kernel"]
        geo = dict(kernel=(kh, kw), stride=self.attrs["stride"], padding=self.attrs["padding"],
                   dilation=self.attrs["dilation"])
        tt = None if tau is None else (tau if tau.ndim == 1 else tau[:, None, None, :])
        conv = kernels.binary_conv2d
        group = self.binarizer.alpha_group
        per_word = False
        if alpha is not None and alpha.shape[1] not in (1, self.cin):
            # DAB's group alpha: per word of a dense conv, else repeated per channel
            per_word = group % 64 == 0 and self.groups == 1
            if per_word:
                conv = functools.partial(kernels.binary_conv2d_group_alpha, alpha=alpha,
                                         group=group)
            else:
                alpha = np.repeat(alpha, group, axis=1)[:, : self.cin]
        if alpha is not None and alpha.shape[1] > 1 and not depthwise and not per_word:
            # per-channel alpha on a dense conv: the float path (engines.md 7 (2)), a float32
            # conv of sign(x - tau) * alpha_c with the +-1 weights
            s = np.sign(xs - tt).astype(np.float32)
            val = s * alpha[:, None, None, :]
            if self.pad_mode == "one" and any(self.attrs["padding"]):
                y = nhwc(self._conv_pad_one(val, alpha, ctx))
            else:
                y = nhwc(conv2d(nchw(val), self.weight_float(), self.attrs["stride"],
                                self.attrs["padding"], self.attrs["dilation"], 1,
                                threads=ctx.threads))
            e = epi or {}
            y = kernels.epilogue_numpy(y, self.out_scale, False, self.out_bias, e.get("bypass"),
                                       e.get("slope"), e.get("pre"), e.get("post"))
            return nchw(y), "DAB float path (per-channel alpha)" + (" +zeros" if ties else "")
        scale = self.out_scale
        if per_word:
            path = "packed, DAB group alpha (per word)"
        elif alpha is not None:
            scale = (alpha * self.out_scale[None, :]).astype(np.float32)
            path = "packed, DAB shared alpha folded" if alpha.shape[1] == 1 else \
                "depthwise exact-alpha"
        else:
            path = "depthwise packed" if depthwise else "packed"
        k_scaled = self.binarizer.k_scaled
        fuse = not ties and not k_scaled
        e = (epi or {}) if fuse else {}
        y = conv(
            bits, self.w_bits, self.cin, groups=self.groups, scale=scale,
            bias=self.out_bias if fuse else None, pad_mode=self.pad_mode, threads=ctx.threads,
            backend=ctx.backend, bypass=e.get("bypass"), prelu=e.get("slope"),
            prelu_pre=e.get("pre"), prelu_post=e.get("post"), **geo)
        if ties:
            # torch.sign(0) = 0: run again with the ties as -1; sign = (s_+ + s_-) / 2 exactly
            pre = xs if tt is None else (xs - tt).astype(np.float32)
            bits2 = kernels.pack_nhwc(np.where(pre == 0, np.float32(-1), pre),
                                      threads=ctx.threads, backend=ctx.backend)
            y2 = conv(bits2, self.w_bits, self.cin, groups=self.groups, scale=scale, bias=None,
                      pad_mode=self.pad_mode, threads=ctx.threads, backend=ctx.backend, **geo)
            y = (y + y2) * np.float32(0.5)
        if k_scaled:
            y = y * nhwc(self._xnor_k(x, ctx))
        if not fuse:
            y = apply_epilogue(y + self.out_bias, epi)
        return nchw(y), path + (" +zeros" if ties else "")

    def _conv_pad_one(self, val: np.ndarray, alpha: np.ndarray, ctx: RunContext) -> np.ndarray:
        # "one" padding on the DAB float path pads with +alpha_c (a +1 sign times its alpha)
        ph, pw = self.attrs["padding"]
        n, h, w, c = val.shape
        full = np.broadcast_to(alpha[:, None, None, :], (n, h + 2 * ph, w + 2 * pw, c)).copy()
        full[:, ph:ph + h, pw:pw + w] = val
        return conv2d(nchw(full), self.weight_float(), self.attrs["stride"], (0, 0),
                      self.attrs["dilation"], 1, threads=ctx.threads)

    def _xnor_k(self, x: np.ndarray, ctx: RunContext) -> np.ndarray:
        """XNOR-Net's ``K``: the channel mean of ``|x|`` box-filtered over the kernel window."""
        a = np.abs(x).mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        kh, kw = self.attrs["kernel"]
        box = np.full((1, 1, kh, kw), 1.0 / (kh * kw), np.float32)
        return conv2d(a, box, self.attrs["stride"], self.attrs["padding"],
                      self.attrs["dilation"], 1, threads=ctx.threads)

    def _float(self, val: np.ndarray, x: np.ndarray | None, ctx: RunContext) -> np.ndarray:
        """Float conv of the binarized values, then the layer's K and scale/bias."""
        if self.pad_mode == "one" and any(self.attrs["padding"]):
            raise ValueError("pad_mode='one' is supported on the packed paths only")
        y = conv2d(val, self.weight_float(), self.attrs["stride"], self.attrs["padding"],
                   self.attrs["dilation"], self.groups, threads=ctx.threads)
        if self.binarizer.k_scaled and x is not None:
            y = y * self._xnor_k(x, ctx)
        y = y * self.out_scale[None, :, None, None] + self.out_bias[None, :, None, None]
        return y.astype(np.float32, copy=False)


class BinaryConvTranspose(_BinaryLayer):
    """Binary ``conv_transpose2d`` (``stride == kernel``): always the float path, its weights
    carry a per-input-channel scale."""

    kind = "bconvT"
    attr_specs = {**_BinaryLayer.attr_specs, **CONV_GEOMETRY}
    weight_specs = {"bits": {"w_bits": TensorSpec(4, "uint64"), "w_scale_in": TensorSpec()},
                    "float": {"w_float": TensorSpec(4)}}

    @classmethod
    def check(cls, attrs: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        super().check(attrs, tensors)
        require(attrs["stride"] == attrs["kernel"] and attrs["padding"] == [0, 0]
                and attrs["dilation"] == [1, 1] and attrs["groups"] == 1,
                "runs stride == kernel, no padding, dilation or groups only")
        require("w_scale_in" not in tensors or tensors["w_scale_in"].shape ==
                (attrs["in_channels"],), "w_scale_in must have one value per input channel")

    @classmethod
    def weight_shape(cls, attrs: dict[str, Any], out: int) -> dict[str, tuple[int, ...]]:
        cin, (kh, kw) = attrs["in_channels"], attrs["kernel"]
        return {"bits": (kh, kw, out, _words(cin)), "float": (cin, out, kh, kw)}

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, _, h, w = spatial_4d(shape, self.cin)
        kh, kw = self.attrs["kernel"]
        return n, self.out_scale.shape[0], h * kh, w * kw

    def _unpack_weights(self) -> np.ndarray:
        s = kernels.unpack_nhwc(self.w_bits, self.cin)  # (KH, KW, O, I)
        w = s.transpose(3, 2, 0, 1) * self.tensors["w_scale_in"][:, None, None, None]
        return np.ascontiguousarray(w, np.float32)  # (I, O, KH, KW) as PyTorch

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        b = self.binarizer
        if not b.binary:
            return self._float(x, None), "float (fp activations)"
        return (self._float(_binarized_values(*b.binarize(x, 1)), x),
                "float (transposed, per-input-channel weight scale)")

    def _float(self, val: np.ndarray, x: np.ndarray | None) -> np.ndarray:
        y = conv_transpose_kernel_stride(val, self.weight_float(), self.attrs["kernel"])
        if self.binarizer.k_scaled and x is not None:
            y = y * np.abs(x).mean(axis=(1, 2, 3), keepdims=True, dtype=np.float64).astype(
                np.float32)
        y = y * self.out_scale[None, :, None, None] + self.out_bias[None, :, None, None]
        return y.astype(np.float32, copy=False)


class BinaryLinear(_BinaryLayer):
    """Binary ``linear`` on the last axis: ``packed (linear)`` for sign-type inputs with binary
    weights, else ``float (linear)``."""

    kind = "blinear"
    weight_specs = {"bits": {"w_bits": TensorSpec(4, "uint64")},
                    "float": {"w_float": TensorSpec(2)}}

    @classmethod
    def weight_shape(cls, attrs: dict[str, Any], out: int) -> dict[str, tuple[int, ...]]:
        require(attrs.get("groups", 1) == 1, "a binary linear layer has no groups")
        cin = attrs["in_channels"]
        return {"bits": (out, 1, 1, _words(cin)), "float": (out, cin)}

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        check_channels(shape, -1, self.cin, "the layer")
        return shape[:-1] + (self.out_scale.shape[0],)

    def run(self, x: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, str]:
        b = self.binarizer
        lead = x.shape[:-1]
        c = x.shape[-1]
        pre, mult, off = b.binarize(x, -1)
        if not b.binary or self.float_weights or mult is not None or off is not None:
            val = x if not b.binary else _binarized_values(pre, mult, off)
            w = self.tensors["w_float"] if self.float_weights else self.weight_float()[:, :, 0, 0]
            y = val.reshape(-1, c) @ w.T
            path = "float (linear)"
        else:
            xs = np.ascontiguousarray(pre.reshape(1, 1, -1, c), np.float32)
            has_zero = kernels.count_zeros(xs) > 0
            bits = [kernels.pack_nhwc(xs, threads=ctx.threads, backend=ctx.backend)]
            if has_zero:
                bits.append(kernels.pack_nhwc(np.where(xs == 0, np.float32(-1), xs),
                                              threads=ctx.threads, backend=ctx.backend))
            outs = [kernels.binary_conv2d(bi, self.w_bits, c, 1, threads=ctx.threads,
                                          backend=ctx.backend) for bi in bits]
            y = outs[0] if len(outs) == 1 else (outs[0] + outs[1]) * np.float32(0.5)
            y = y.reshape(-1, y.shape[-1])
            path = "packed (linear)" + (" +zeros" if has_zero else "")
        y = y * self.out_scale
        if b.k_scaled:
            y = y * np.abs(x).reshape(-1, c).mean(axis=1, keepdims=True, dtype=np.float64
                                                  ).astype(np.float32)
        y = y + self.out_bias
        return np.ascontiguousarray(y.reshape(lead + (-1,)), np.float32), path


#: kind -> op class of the binary module kinds.
BINARY_MODULE_OPS: dict[str, type[ModuleOp]] = {op.kind: op for op in (
    BinaryConv, BinaryConvTranspose, BinaryLinear)}
