"""BiDense blocks: DAB -> binary conv -> BN (+ CFB bypass), and the resolution-changing variants.

Yin et al., *BiDense: Binarization for Dense Prediction*, arXiv 2411.10346 (2024); layouts as in
the reference code ``frickyinn/BiDense`` (bidense-method.md §5-§7).

Every block takes ``act_binarizer`` (default ``"dab"``): another activation binarizer registry
name (e.g. ``"rsign"``) keeps the block and its CFB bypass but drops DAB, the "CFB alone"
ablation (method ``bidense_no_dab``). ``dab_scale`` only configures a DAB.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.common_types import _size_2_t

from bidense.binarize import DAB, get_activation_binarizer

from .binary import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear
from .bypass import add_channel_adaptive_bypass

__all__ = [
    "BiDenseConv2d",
    "BiDenseConvTranspose2d",
    "BiDenseDown",
    "BiDenseUp",
    "BiDenseTransition",
    "BiDenseLinear",
]

DabScale = Literal["channel", "shared"]


def _block_act_binarizer(name: str, channels: int, dab_scale: DabScale) -> nn.Module:
    """The block's activation binarizer: a DAB with ``dab_scale`` for ``"dab"``, otherwise the
    registry's ``name`` (which takes no DAB option: a non-default ``dab_scale`` is refused)."""
    if name == "dab":
        return DAB(channels, channel_dim=1, scale=dab_scale)
    if dab_scale != "channel":
        raise ValueError(f"dab_scale={dab_scale!r} needs act_binarizer='dab', got {name!r}")
    return get_activation_binarizer(name, channels, channel_dim=1)


def _conv_keeps_size(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):
        return conv.padding == "same" or all(k == 1 for k in conv.kernel_size)
    return all(
        s == 1 and 2 * p == d * (k - 1)
        for k, s, p, d in zip(conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    )


def _conv_transpose_keeps_size(conv: nn.ConvTranspose2d) -> bool:
    # out = (H-1)s - 2p + d(k-1) + op + 1 equals H for every H iff s = 1 and the rest cancel
    return all(
        s == 1 and d * (k - 1) + op == 2 * p
        for k, s, p, d, op in zip(
            conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.output_padding
        )
    )


def _geometry(conv: nn.Module) -> str:
    return (
        f"kernel_size={conv.kernel_size}, stride={conv.stride}, padding={conv.padding}, "
        f"dilation={conv.dilation}"
    )


class _WrapsBinaryOp(nn.Module):
    """Blocks report the bit widths of the one binary op they wrap (attribute ``_op``)."""

    _op = "conv"

    @property
    def weight_bits(self) -> int:
        """Weight bit width of the wrapped binary op."""
        return getattr(self, self._op).weight_bits

    @property
    def act_bits(self) -> int:
        """Activation bit width of the wrapped binary op."""
        return getattr(self, self._op).act_bits


class _BiDenseBlock(_WrapsBinaryOp):
    conv: BinaryConv2d | BinaryConvTranspose2d
    norm: nn.BatchNorm2d
    bypass: bool
    in_channels: int
    out_channels: int

    @property
    def dab(self) -> DAB:
        """The block's DAB activation binarizer (``conv.act_binarizer``); an AttributeError when
        the block binarizes with another ``act_binarizer``."""
        binarizer = self.conv.act_binarizer
        if not isinstance(binarizer, DAB):
            raise AttributeError(
                f"{type(self).__name__} binarizes with {type(binarizer).__name__}, not DAB"
            )
        return binarizer

    def _attach(self, conv: nn.Module, bypass: bool, keeps_size: bool, geometry: str) -> None:
        """Store the conv, its BN and the bypass flag (shared by the conv and transposed blocks)."""
        self.conv = conv
        self.norm = nn.BatchNorm2d(conv.out_channels)
        self.in_channels = int(conv.in_channels)
        self.out_channels = int(conv.out_channels)
        self.bypass = bool(bypass)
        if self.bypass and not keeps_size:
            raise ValueError(
                f"{type(self).__name__}: bypass=True needs a size-preserving conv, got {geometry}; "
                "use bypass=False (see BiDenseDown/BiDenseUp/BiDenseTransition)"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self._finish(x, self.conv(x))

    def _finish(self, x: Tensor, y: Tensor) -> Tensor:
        y = self.norm(y)
        if self.bypass:
            if y.shape[-2:] != x.shape[-2:]:
                raise ValueError(
                    f"{type(self).__name__}: bypass=True needs equal spatial sizes, input "
                    f"{tuple(x.shape[-2:])} -> output {tuple(y.shape[-2:])}; use bypass=False "
                    "and add the bypass yourself (BiDenseDown/BiDenseUp/BiDenseTransition)"
                )
            # in place into the fresh BN output: no tiled copy of x, no extra output tensor
            y = add_channel_adaptive_bypass(y, x)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, w{self.weight_bits}a{self.act_bits}, "
            f"bypass={self.bypass}"
        )


class BiDenseConv2d(_BiDenseBlock):
    r"""BiDense binary conv block (Yin et al., arXiv 2411.10346, §3; bidense-method.md §5).

    .. math::
        y = \operatorname{BN}(\operatorname{BinConv}(\operatorname{DAB}(x)))
            \;[+\; \operatorname{CFB}(x, C_{out})]

    DAB is the Distribution-adaptive Binarizer (:class:`bidense.binarize.DAB`, per input
    channel), BinConv uses ``mean_abs`` weights (:math:`\gamma_o \operatorname{sign}(W_o)`,
    detached :math:`\gamma`, clip-STE), BN is ``BatchNorm2d(C_out)`` with defaults, and the CFB
    bypass (:func:`channel_adaptive_bypass`) adds the **real-valued** input. The block has no
    activation of its own. ``bypass=True`` requires a size-preserving conv (stride 1,
    :math:`2p = d(k-1)`); otherwise a ``ValueError`` is raised at construction.
    ``dab_scale="shared"`` selects our deployment-friendly DAB variant (not the paper's).
    ``act_binarizer`` names another activation binarizer in place of DAB (the "CFB alone"
    ablation). Submodules: ``conv`` (a :class:`BinaryConv2d` whose ``act_binarizer`` is the DAB),
    ``norm``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t | str = 0,
        dilation: _size_2_t = 1,
        groups: int = 1,
        bias: bool = False,
        bypass: bool = True,
        act_binarizer: str = "dab",
        dab_scale: DabScale = "channel",
    ) -> None:
        super().__init__()
        conv = BinaryConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            act_binarizer=_block_act_binarizer(act_binarizer, in_channels, dab_scale),
            weight_binarizer="mean_abs",
        )
        self._attach(conv, bypass, _conv_keeps_size(conv), _geometry(conv))


class BiDenseConvTranspose2d(_BiDenseBlock):
    r"""BiDense block with a binary transposed conv (bidense-method.md §5):
    :math:`y = \operatorname{BN}(\operatorname{BinConvT}(\operatorname{DAB}(x)))
    [+ \operatorname{CFB}(x, C_{out})]`.

    The ``mean_abs`` weight scale is per **input** channel, as in the reference (see
    :class:`BinaryConvTranspose2d`). ``bypass=True`` requires a size-preserving transposed conv
    (stride 1, :math:`d(k-1) + \text{output\_padding} = 2p`). ``act_binarizer`` and ``dab_scale``
    as :class:`BiDenseConv2d`. Arguments after ``padding`` are keyword-only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t = 0,
        *,
        output_padding: _size_2_t = 0,
        dilation: _size_2_t = 1,
        groups: int = 1,
        bias: bool = False,
        bypass: bool = True,
        act_binarizer: str = "dab",
        dab_scale: DabScale = "channel",
    ) -> None:
        super().__init__()
        conv = BinaryConvTranspose2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            act_binarizer=_block_act_binarizer(act_binarizer, in_channels, dab_scale),
            weight_binarizer="mean_abs",
        )
        self._attach(conv, bypass, _conv_transpose_keeps_size(conv), _geometry(conv))


class _Resample(_WrapsBinaryOp):
    conv: BiDenseConv2d | BiDenseConvTranspose2d
    out_channels: int

    def _bypass(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return add_channel_adaptive_bypass(self.conv(x), self._bypass(x))

    def extra_repr(self) -> str:
        return f"{self.conv.in_channels}, {self.out_channels}, w{self.weight_bits}a{self.act_bits}"


class BiDenseDown(_Resample):
    r"""BiDense /2 downsampling (DPT decoder; bidense-method.md §6).

    :math:`y = \operatorname{BiDenseConv2d}_{k3,s2,p1}(x)\,[\text{no bypass}] +
    \operatorname{CFB}(\operatorname{AvgPool2d}(3, 2, 1)(x), C_{out})`, pooling with PyTorch's
    default ``count_include_pad=True``. Output size :math:`\lfloor (H-1)/2 \rfloor + 1`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dab_scale: DabScale = "channel",
        act_binarizer: str = "dab",
    ) -> None:
        super().__init__()
        self.conv = BiDenseConv2d(
            in_channels, out_channels, 3, stride=2, padding=1, bypass=False,
            act_binarizer=act_binarizer, dab_scale=dab_scale,
        )
        self.pool = nn.AvgPool2d(3, 2, 1)
        self.out_channels = int(out_channels)

    def _bypass(self, x: Tensor) -> Tensor:
        return self.pool(x)


class BiDenseTransition(_Resample):
    r"""BiDense ConvNeXt stage transition, /2 (bidense-method.md §6).

    :math:`y = \operatorname{BiDenseConv2d}_{k2,s2}(x)\,[\text{no bypass}] +
    \operatorname{CFB}(\operatorname{AvgPool2d}(2, 2)(x), C_{out})`. Output size
    :math:`\lfloor H/2 \rfloor`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dab_scale: DabScale = "channel",
        act_binarizer: str = "dab",
    ) -> None:
        super().__init__()
        self.conv = BiDenseConv2d(
            in_channels, out_channels, 2, stride=2, bypass=False,
            act_binarizer=act_binarizer, dab_scale=dab_scale,
        )
        self.pool = nn.AvgPool2d(2, 2)
        self.out_channels = int(out_channels)

    def _bypass(self, x: Tensor) -> Tensor:
        return self.pool(x)


class BiDenseUp(_Resample):
    r"""BiDense xs upsampling (DPT decoder; bidense-method.md §6).

    :math:`y = \operatorname{BiDenseConvTranspose2d}_{k=s,\,stride=s}(x)\,[\text{no bypass}] +
    \operatorname{CFB}(\operatorname{interpolate}(x, \text{scale\_factor}=s,
    \text{mode}=\text{nearest}), C_{out})`. Output size :math:`sH \times sW`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        dab_scale: DabScale = "channel",
        act_binarizer: str = "dab",
    ) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"BiDenseUp: scale must be a positive int, got {scale!r}")
        self.conv = BiDenseConvTranspose2d(
            in_channels, out_channels, scale, stride=scale, bypass=False,
            act_binarizer=act_binarizer, dab_scale=dab_scale,
        )
        self.scale = scale
        self.out_channels = int(out_channels)

    def _bypass(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"


class BiDenseLinear(_WrapsBinaryOp):
    r"""BiDense binary linear layer for tokens (B, N, C) (bidense-method.md §7; reference
    ``BinaryLinear``, unused by the released models).

    .. math::
        y = \operatorname{RSign}(x)\,\hat W^\top + \text{bias}, \qquad
        y \leftarrow \operatorname{LayerNorm}_{\epsilon=10^{-6}}(y)
            + \operatorname{CFB}_{1d}(x, C_{out}) \text{ if bypass}

    RSign is ReActNet's learnable-threshold sign with ApproxSign backward (the reference's
    LearnableBias + ApproxSign; DAB is not used here). :math:`\hat W = \gamma_o
    \operatorname{sign}(W_o - \operatorname{mean}(W_o))` with :math:`\gamma_o =
    \operatorname{mean}|W_o|` of the **uncentred** row, detached, clip-STE on the centred row
    (``centered_mean_abs``). The bypass uses contiguous grouping, as the reference's 1-D CFB.
    """

    _op = "linear"

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, bypass: bool = True
    ) -> None:
        super().__init__()
        self.linear = BinaryLinear(
            in_features,
            out_features,
            bias=bias,
            act_binarizer="rsign",
            weight_binarizer="centered_mean_abs",
        )
        self.norm = nn.LayerNorm(out_features, eps=1e-6) if bypass else None
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bypass = bool(bypass)

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)
        if self.norm is not None:
            y = add_channel_adaptive_bypass(self.norm(y), x, grouping="contiguous", channel_dim=-1)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, w{self.weight_bits}a{self.act_bits}, "
            f"bypass={self.bypass}"
        )
