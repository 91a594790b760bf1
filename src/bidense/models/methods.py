"""The method table: a binarization method is a *name*, resolved once to its :class:`MethodSpec`.

One architecture file serves every method. The name is resolved exactly once, at the outermost
entry (:func:`~bidense.models.create_model`, :func:`~bidense.models.binarize`); below that every
architecture takes the :class:`MethodSpec` itself and asks it for

* ``unit(c_in, c_out, k, ...)``: a "conv + BN" unit. For ``fp32`` this is ``Conv2d -> BN``; for
  the CNN baselines ``BinaryConv2d -> BN`` with the method's binarizers (the "BN-ConvNeXt/UperNet"
  skeleton of baselines.md); for ``bidense`` a ``BiDenseConv2d`` (DAB -> binary conv -> BN, plus
  the CFB bypass, bidense-method.md §5).
* ``nonlinearity(channels, where)``: the real-valued non-linearity between units.
* ``layout``: ``"fp32"`` (the original full-precision architecture), ``"baseline"`` (block
  residuals, binary k2s2 transition + BN) or ``"bidense"`` (no block residual, CFB in every conv,
  Transition with CFB).
* ``transition``: the ConvNeXt stage transition (``"fp32"`` LN + conv 2x2/2, ``"unit"`` binary
  k2s2 unit + BN, ``"bisr"`` the BiSRNet Down, ``"bidense"`` BiDenseTransition).
* ``ding_models``: whether the ``ding_*`` models accept the method (``ding`` and ``fp32``).

Non-linearities (baselines.md):

=========  =====================================  ==========================================
method     block                                  decoder
=========  =====================================  ==========================================
fp32       GELU                                   ReLU
bnn        GELU (reference BNN skeleton)          ReLU
xnor       GELU (our choice, as BNN)              ReLU
bireal     none (Bi-Real Net has no real-valued   none
           non-linearity besides the shortcut)
reactnet   RPReLU (ReActNet, with zeta)           RPReLU
adabin     Maxout (AdaBin)                        Maxout
bisrnet    LearnableBias + PReLU (reference)      LearnableBias + PReLU
bidense    LearnableBias + PReLU (§8)             LearnableBias + PReLU
=========  =====================================  ==========================================

Binarizers (activation / weight, registry names of :mod:`bidense.binarize`): bnn sign/sign,
xnor xnor/magnitude_aware, bireal approx_sign/magnitude_aware, reactnet rsign/mean_abs,
adabin adabin/adabin, bisrnet bisrnet/mean_abs, bidense dab/mean_abs (via BiDenseConv2d).
Linear layers swapped by the converter use the same names except bidense, whose BinaryLinear
uses RSign and the row-centred mean|W| weights (bidense-method.md §7). The ViT backbone ignores
this table: every binary method gets the BiViT-style ViT of bidense-method.md §9 (vit.py).

Ablations of BiDense's two parts (:data:`ABLATION_SPECS`; resolvable by :func:`get_method` but
not in :data:`METHODS`, so the per-method suites do not run them):

==============  ==========  ====================================================================
method          layout      what changes against ``bidense`` (DAB + CFB)
==============  ==========  ====================================================================
bidense_no_dab  bidense     "CFB alone": RSign in place of DAB in every BiDense block (the
                            reference's ``cfb_*`` ablation binarizes with ReActConv2d's
                            LearnableBias + ApproxSign, baselines.md), same layout otherwise
bidense_no_cfb  baseline    "DAB alone": the baseline skeleton (block residuals, binary k2s2
                            transition + BN, no CFB) with DAB / mean|W| convs and
                            LearnableBias + PReLU, as bidense
==============  ==========  ====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn
from torch.nn.common_types import _size_2_t

from bidense import nn as bnn
from bidense.binarize import get_activation_binarizer, get_weight_binarizer


@dataclass(frozen=True)
class MethodSpec:
    """How one binarization method builds its layers.

    Attributes:
        name: method name (a key of :data:`METHOD_SPECS` or :data:`ABLATION_SPECS`); models
            record it as ``model.method``.
        layout: ``"fp32"``, ``"baseline"`` or ``"bidense"`` (see module docstring).
        act: activation binarizer registry name for convolutions (``None`` for fp32).
        weight: weight binarizer registry name for convolutions.
        linear_act: activation binarizer name for linear layers.
        linear_weight: weight binarizer name for linear layers.
        block_nonlin: non-linearity inside backbone blocks.
        decoder_nonlin: non-linearity in the decoder.
        transition: ConvNeXt stage transition (``"fp32"``, ``"unit"``, ``"bisr"``,
            ``"bidense"``; see module docstring).
        ding_models: the ``ding_*`` models (``ding.py``) accept this method.
    """

    name: str
    layout: str
    act: str | None
    weight: str | None
    linear_act: str | None
    linear_weight: str | None
    block_nonlin: str
    decoder_nonlin: str
    transition: str = "unit"
    ding_models: bool = False

    @property
    def is_binary(self) -> bool:
        """True for every method except ``fp32``."""
        return self.layout != "fp32"

    # -- binarizers ---------------------------------------------------------------------
    def act_binarizer(self, channels: int, *, linear: bool = False) -> nn.Module:
        """A fresh activation binarizer for a layer with ``channels`` input channels."""
        name = self.linear_act if linear else self.act
        return get_activation_binarizer(name, channels, channel_dim=-1 if linear else 1)

    def weight_binarizer(self, rows: int, *, linear: bool = False) -> nn.Module:
        """A fresh weight binarizer for a layer whose weight has ``rows`` rows (dim 0)."""
        name = self.linear_weight if linear else self.weight
        return get_weight_binarizer(name, rows)

    # -- layers -------------------------------------------------------------------------
    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t = 0,
        groups: int = 1,
        bias: bool = False,
        dilation: _size_2_t = 1,
    ) -> nn.Module:
        """A bare convolution of this method (no BN, no bypass).

        fp32 gives ``nn.Conv2d``; every binary method gives ``BinaryConv2d`` with its
        binarizers (bidense: DAB activations, mean|W| weights).
        """
        if not self.is_binary:
            return nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
            )
        return bnn.BinaryConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            act_binarizer=self.act_binarizer(in_channels),
            weight_binarizer=self.weight_binarizer(out_channels),
        )

    def conv_transpose(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t = 0,
        output_padding: _size_2_t = 0,
        groups: int = 1,
        bias: bool = False,
        dilation: _size_2_t = 1,
    ) -> nn.Module:
        """A bare transposed convolution of this method (no BN, no bypass).

        A transposed conv's weight is ``(C_in, C_out / groups, kh, kw)``: its weight binarizer
        gets ``C_in`` rows, so the weight scales are **per input channel** (bidense-method.md
        §1), for the architectures and the converter alike.
        """
        if not self.is_binary:
            return nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
                bias, dilation,
            )
        return bnn.BinaryConvTranspose2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            act_binarizer=self.act_binarizer(in_channels),
            weight_binarizer=self.weight_binarizer(in_channels),
        )

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
        """A linear layer of this method for (B, N, C) tokens."""
        if not self.is_binary:
            return nn.Linear(in_features, out_features, bias=bias)
        return bnn.BinaryLinear(
            in_features,
            out_features,
            bias=bias,
            act_binarizer=self.act_binarizer(in_features, linear=True),
            weight_binarizer=self.weight_binarizer(out_features, linear=True),
        )

    def unit(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
        bypass: bool = True,
    ) -> nn.Module:
        """A "conv + BN" unit: ``Conv -> BN`` (fp32, baselines) or ``BiDenseConv2d`` (bidense
        layout, binarizing its input with :attr:`act`: DAB for bidense).

        ``bypass`` only matters for the bidense layout (the CFB of bidense-method.md §5); it must
        be False where the resolution changes.
        """
        if self.layout == "bidense":
            return bnn.BiDenseConv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                groups=groups,
                bias=bias,
                bypass=bypass,
                act_binarizer=self.act,
            )
        conv = self.conv(in_channels, out_channels, kernel_size, stride, padding, groups, bias)
        return nn.Sequential(conv, nn.BatchNorm2d(out_channels))

    def nonlinearity(self, channels: int, where: str = "block") -> nn.Module:
        """The method's real-valued non-linearity (``where`` is ``"block"`` or ``"decoder"``)."""
        if where not in ("block", "decoder"):
            raise ValueError(f"where must be 'block' or 'decoder', got {where!r}")
        kind = self.block_nonlin if where == "block" else self.decoder_nonlin
        return make_nonlinearity(kind, channels)


#: Non-linearity kinds: ``kind -> builder(channels)`` (NCHW).
NONLINEARITIES: dict[str, Callable[[int], nn.Module]] = {
    "gelu": lambda channels: nn.GELU(),
    "relu": lambda channels: nn.ReLU(inplace=False),
    "identity": lambda channels: nn.Identity(),
    "prelu": lambda channels: nn.PReLU(channels, init=0.25),
    "bias_prelu": lambda channels: nn.Sequential(
        bnn.LearnableBias(channels), nn.PReLU(channels, init=0.25)
    ),
    "rprelu": bnn.RPReLU,
    "maxout": bnn.Maxout,
}


def make_nonlinearity(kind: str, channels: int) -> nn.Module:
    """Build a non-linearity by kind name (:data:`NONLINEARITIES`) for ``channels`` channels."""
    if kind not in NONLINEARITIES:
        raise ValueError(f"unknown non-linearity kind {kind!r}")
    return NONLINEARITIES[kind](channels)


#: Every method by name.
METHOD_SPECS: dict[str, MethodSpec] = {
    "fp32": MethodSpec(
        "fp32", "fp32", None, None, None, None, "gelu", "relu", transition="fp32",
        ding_models=True,
    ),
    "bnn": MethodSpec("bnn", "baseline", "sign", "sign", "sign", "sign", "gelu", "relu"),
    "xnor": MethodSpec(
        "xnor", "baseline", "xnor", "magnitude_aware", "xnor", "magnitude_aware", "gelu", "relu"
    ),
    "bireal": MethodSpec(
        "bireal",
        "baseline",
        "approx_sign",
        "magnitude_aware",
        "approx_sign",
        "magnitude_aware",
        "identity",
        "identity",
    ),
    "reactnet": MethodSpec(
        "reactnet", "baseline", "rsign", "mean_abs", "rsign", "mean_abs", "rprelu", "rprelu"
    ),
    "adabin": MethodSpec(
        "adabin", "baseline", "adabin", "adabin", "adabin", "adabin", "maxout", "maxout"
    ),
    "bisrnet": MethodSpec(
        "bisrnet",
        "baseline",
        "bisrnet",
        "mean_abs",
        "bisrnet",
        "mean_abs",
        "bias_prelu",
        "bias_prelu",
        transition="bisr",
    ),
    "bidense": MethodSpec(
        "bidense",
        "bidense",
        "dab",
        "mean_abs",
        "rsign",
        "centered_mean_abs",
        "bias_prelu",
        "bias_prelu",
        transition="bidense",
    ),
    # Ding et al. 2024 "learned scaling" binarizers (ding2024.md D0); the ding_* models use their
    # own units, other architectures get the baseline layout with these binarizers.
    "ding": MethodSpec(
        "ding", "baseline", "rsign", "learned_scale", "rsign", "learned_scale", "rprelu", "rprelu",
        ding_models=True,
    ),
}

METHODS: tuple[str, ...] = tuple(METHOD_SPECS)

#: The BiDense ablations (see module docstring): built by the same architecture files, not in
#: :data:`METHODS`. ``bidense_no_dab`` = "CFB alone", ``bidense_no_cfb`` = "DAB alone".
ABLATION_SPECS: dict[str, MethodSpec] = {
    "bidense_no_dab": replace(METHOD_SPECS["bidense"], name="bidense_no_dab", act="rsign"),
    "bidense_no_cfb": replace(
        METHOD_SPECS["bidense"], name="bidense_no_cfb", layout="baseline", transition="unit"
    ),
}

_SPECS: dict[str, MethodSpec] = {**METHOD_SPECS, **ABLATION_SPECS}

#: The full-precision method: the default of every architecture.
FP32: MethodSpec = METHOD_SPECS["fp32"]


def get_method(method: str | MethodSpec) -> MethodSpec:
    """Resolve a method name (:data:`METHODS` or :data:`ABLATION_SPECS`) to its
    :class:`MethodSpec` (a spec is returned unchanged).

    Only the outermost entries call this (:func:`~bidense.models.create_model`,
    :func:`~bidense.models.binarize`); the architectures receive the spec.
    """
    if isinstance(method, MethodSpec):
        return method
    if not isinstance(method, str) or method.lower() not in _SPECS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(_SPECS)}")
    return _SPECS[method.lower()]
