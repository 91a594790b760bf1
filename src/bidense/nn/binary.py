"""Binary convolution, transposed convolution and linear layers.

Each layer holds its latent weight as ``weight`` and two binarizers, ``act_binarizer`` and
``weight_binarizer`` (see :mod:`bidense.binarize`), given by registry name or as a module. The
forward pass is ``op(act_binarizer(x), weight_binarizer(weight))``, optionally times the
activation binarizer's ``output_scale`` (XNOR-Net's K), plus the bias.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.common_types import _size_2_t

from bidense.binarize import get_activation_binarizer, get_weight_binarizer

__all__ = ["BinaryConv2d", "BinaryConvTranspose2d", "BinaryLinear", "LATENT_INIT_STD"]

#: How a binary conv pads its binarized input: "zero" (PyTorch; the reference) or "one" (+1 bit).
PAD_MODES = ("zero", "one")

#: Latent weight init std of the BiDense reference (W ~ N(0, 0.001^2)).
LATENT_INIT_STD = 1e-3

BinarizerSpec = str | nn.Module | None


class _BinaryMixin:
    """Bit-width bookkeeping shared by the binary layers."""

    act_binarizer: nn.Module
    weight_binarizer: nn.Module

    @property
    def weight_bits(self) -> int:
        """Bit width of the weights the op sees (1, or 32 for an identity binarizer)."""
        return int(getattr(self.weight_binarizer, "bits", 32))

    @property
    def act_bits(self) -> int:
        """Bit width of the activations the op sees (1, or 32 for an identity binarizer)."""
        return int(getattr(self.act_binarizer, "bits", 32))

    def _bits_repr(self) -> str:
        return f"w{self.weight_bits}a{self.act_bits}"


def _apply_scale_and_bias(
    y: Tensor, scale: Tensor | None, bias: Tensor | None, cdim: int
) -> Tensor:
    if scale is not None:
        y = y * scale
    if bias is not None:
        shape = [1] * y.dim()
        shape[cdim] = -1
        y = y + bias.view(shape)
    return y


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    r"""2-D convolution on binarized activations and weights.

    :math:`y = \operatorname{conv}(B_a(x), B_w(W)) \odot K + \text{bias}`, where :math:`B_a` is
    ``act_binarizer`` (default ``approx_sign``: sign forward, Bi-Real ApproxSign backward, Liu et
    al., ECCV 2018), :math:`B_w` is ``weight_binarizer`` (default ``mean_abs``:
    :math:`\hat W_o = \gamma_o \operatorname{sign}(W_o)`, :math:`\gamma_o = \operatorname{mean}
    |W_o|` detached, clip-STE; Bi-Real/ReActNet code, BiDense arXiv 2411.10346 §3.1) and
    :math:`K` is the activation binarizer's ``output_scale`` (XNOR-Net, Rastegari et al., ECCV
    2016; ``None`` and thus skipped for every other binarizer).

    Zero padding is applied by ``F.conv2d`` to the *binarized* tensor, so border taps contribute 0
    (ternary at the border, as the BiDense reference). ``pad_mode="one"`` pads with a +1 bit
    instead (the value ``act_binarizer.positive_value(x)``, e.g. DAB's alpha), which keeps the
    border binary so a packed kernel needs no border correction (LCE/OpenVINO "one-padding"; our
    training option, not the paper's). The latent weight is initialised as
    :math:`W \sim N(0, 0.001^2)` (BiDense reference).
    Input is NCHW; ``act_binarizer`` is built with ``channels=in_channels, channel_dim=1``.
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
        act_binarizer: BinarizerSpec = "approx_sign",
        weight_binarizer: BinarizerSpec = "mean_abs",
        pad_mode: str = "zero",
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode="zeros",
        )
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.act_binarizer = get_activation_binarizer(act_binarizer, in_channels, channel_dim=1)
        self.weight_binarizer = get_weight_binarizer(weight_binarizer, out_channels)

    def reset_parameters(self) -> None:
        """Default PyTorch init for the bias, N(0, 0.001^2) for the latent weight."""
        super().reset_parameters()
        nn.init.normal_(self.weight, 0.0, LATENT_INIT_STD)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        xb = self.act_binarizer(x)
        wb = self.weight_binarizer(self.weight)
        padding = self.padding
        if self.pad_mode == "one" and not isinstance(padding, str) and any(padding):
            xb = self._one_pad(x, xb)
            padding = (0, 0)
        y = F.conv2d(xb, wb, None, self.stride, padding, self.dilation, self.groups)
        scale = self.act_binarizer.output_scale(
            x, tuple(self.weight.shape), self.stride, self.padding, self.dilation, self.groups
        )
        return _apply_scale_and_bias(y, scale, self.bias, 1)

    def _one_pad(self, x: Tensor, xb: Tensor) -> Tensor:
        ph, pw = self.padding  # type: ignore[misc]
        border = F.pad(xb.new_zeros((1, 1) + tuple(xb.shape[-2:])), (pw, pw, ph, ph), value=1.0)
        return F.pad(xb, (pw, pw, ph, ph)) + border * self.act_binarizer.positive_value(x)

    def extra_repr(self) -> str:
        extra = ", pad_mode=one" if self.pad_mode == "one" else ""
        return f"{super().extra_repr()}, {self._bits_repr()}{extra}"


class BinaryConvTranspose2d(_BinaryMixin, nn.ConvTranspose2d):
    r"""2-D transposed convolution on binarized activations and weights.

    :math:`y = \operatorname{conv\_transpose}(B_a(x), B_w(W)) \odot K + \text{bias}`, as
    :class:`BinaryConv2d`. The weight has PyTorch's transposed layout
    ``(C_in, C_out/groups, kh, kw)`` and the weight binarizer scales per index of dim 0, so the
    default ``mean_abs`` scale is one :math:`\gamma` **per input channel**, exactly as the BiDense
    reference (bidense-method.md §1); it is not a per-output factor.

    Arguments after ``padding`` are keyword-only, because PyTorch's and the reference's positional
    orders differ. ``forward(x, output_size=None)`` accepts ``output_size`` like PyTorch.
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
        act_binarizer: BinarizerSpec = "approx_sign",
        weight_binarizer: BinarizerSpec = "mean_abs",
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            groups=groups,
            bias=bias,
            dilation=dilation,
            padding_mode="zeros",
        )
        self.act_binarizer = get_activation_binarizer(act_binarizer, in_channels, channel_dim=1)
        # dim 0 of a transposed-conv weight is the input channel
        self.weight_binarizer = get_weight_binarizer(weight_binarizer, in_channels)

    def reset_parameters(self) -> None:
        """Default PyTorch init for the bias, N(0, 0.001^2) for the latent weight."""
        super().reset_parameters()
        nn.init.normal_(self.weight, 0.0, LATENT_INIT_STD)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        xb = self.act_binarizer(x)
        wb = self.weight_binarizer(self.weight)
        y = F.conv_transpose2d(
            xb, wb, None, self.stride, self.padding, output_padding, self.groups, self.dilation
        )
        scale = self.act_binarizer.output_scale(
            x,
            tuple(self.weight.shape),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            transposed=True,
        )
        return _apply_scale_and_bias(y, scale, self.bias, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bits_repr()}"


class BinaryLinear(_BinaryMixin, nn.Linear):
    r"""Linear layer on binarized tokens and weights, input (..., C) e.g. (B, N, C).

    :math:`y = B_a(x) B_w(W)^\top \odot K + \text{bias}`, with the binarizers of
    :class:`BinaryConv2d` (``act_binarizer`` built with ``channel_dim=-1``; ``mean_abs`` gives one
    detached :math:`\gamma` per output row). Latent weight init :math:`N(0, 0.001^2)`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        act_binarizer: BinarizerSpec = "approx_sign",
        weight_binarizer: BinarizerSpec = "mean_abs",
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.act_binarizer = get_activation_binarizer(act_binarizer, in_features, channel_dim=-1)
        self.weight_binarizer = get_weight_binarizer(weight_binarizer, out_features)

    def reset_parameters(self) -> None:
        """Default PyTorch init for the bias, N(0, 0.001^2) for the latent weight."""
        super().reset_parameters()
        nn.init.normal_(self.weight, 0.0, LATENT_INIT_STD)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects input (..., {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        xb = self.act_binarizer(x)
        wb = self.weight_binarizer(self.weight)
        y = F.linear(xb, wb)
        scale = self.act_binarizer.output_scale(x, tuple(self.weight.shape))
        return _apply_scale_and_bias(y, scale, self.bias, -1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bits_repr()}"
