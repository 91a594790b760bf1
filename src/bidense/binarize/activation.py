"""Activation binarizers.

Each class's docstring gives the formula it implements and the paper it comes from. Where the
BiDense reference code deviates from a paper, the paper's form is the default and the reference's
is ``variant="reference"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ActivationBinarizer, register_binarizer
from .functional import (
    DAB_SCALES,
    approx_sign,
    dab,
    group_mean,
    shifted_approx_sign,
    sign_clip_ste,
    tanh_sign,
)


def _pair(v: int | tuple[int, ...], n: int = 2) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple | list) else (int(v),) * n


@register_binarizer("activation", "sign")
class SignActivation(ActivationBinarizer):
    r"""BNN activation (Hubara, Courbariaux et al., NeurIPS 2016).

    :math:`x_b = \operatorname{sign}(x)`, backward clip-STE :math:`1_{|x|\le 1}`. No scale.
    """

    def forward(self, x: Tensor) -> Tensor:
        return sign_clip_ste(x)


@register_binarizer("activation", "approx_sign")
class ApproxSignActivation(ActivationBinarizer):
    r"""Bi-Real Net ApproxSign (Liu et al., ECCV 2018).

    Forward :math:`\operatorname{sign}(x)`; backward :math:`\max(0, 2 - 2|x|)`, the derivative
    of the piecewise polynomial approximation of sign.
    """

    def forward(self, x: Tensor) -> Tensor:
        return approx_sign(x)


@register_binarizer("activation", "rsign")
class RSign(ActivationBinarizer):
    r"""ReActNet RSign (Liu et al., ECCV 2020).

    :math:`x_b = \operatorname{sign}(x - \alpha_c)` with a learnable per-channel threshold
    :math:`\alpha_c` (init 0); backward ApproxSign' of :math:`x - \alpha_c`, which also reaches
    :math:`\alpha_c`. (The BiDense reference writes it as LearnableBias :math:`x + b_c`, i.e.
    :math:`b = -\alpha`.)
    """

    def __init__(self, channels: int | None = None, channel_dim: int = 1) -> None:
        super().__init__(channels, channel_dim)
        self.threshold = nn.Parameter(torch.zeros(self._require_channels()))

    def forward(self, x: Tensor) -> Tensor:
        return shifted_approx_sign(x, self._per_channel(self.threshold, x))


@register_binarizer("activation", "xnor")
class XNORActivation(ActivationBinarizer):
    r"""XNOR-Net activation (Rastegari et al., ECCV 2016).

    :math:`x_b = \operatorname{sign}(I)` with clip-STE, and an output scale map
    :math:`K = A * k` where :math:`A = \frac{1}{C}\sum_c |I_c|` and :math:`k` is a
    :math:`k_h \times k_w` box filter of value :math:`1/(k_h k_w)` applied with the conv's own
    stride, padding and dilation, so :math:`I * W \approx (\operatorname{sign}(I) \circledast
    \operatorname{sign}(W)) \odot K \alpha`. ``use_k=False`` drops K (as many re-implementations
    do). Gradient flows into K (it is a function of the input).

    Our choices where the paper is silent: for a transposed conv K is the per-sample mean of A
    (one scalar per sample); for tokens (B, N, C) K is A per token.
    """

    def __init__(self, channels: int | None = None, channel_dim: int = 1, use_k: bool = True):
        super().__init__(channels, channel_dim)
        self.use_k = use_k

    def forward(self, x: Tensor) -> Tensor:
        return sign_clip_ste(x)

    def output_scale(
        self,
        x: Tensor,
        weight_shape: tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        transposed: bool = False,
    ) -> Tensor | None:
        if not self.use_k:
            return None
        a = x.abs().mean(dim=self.channel_dim, keepdim=True)
        if x.dim() != 4:
            return a
        if transposed:
            return a.mean(dim=(2, 3), keepdim=True)
        kh, kw = int(weight_shape[-2]), int(weight_shape[-1])
        box = a.new_full((1, 1, kh, kw), 1.0 / (kh * kw))
        pad = padding if isinstance(padding, str) else _pair(padding)
        return F.conv2d(a, box, None, _pair(stride), pad, _pair(dilation))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, use_k={self.use_k}"


@register_binarizer("activation", "adabin")
class AdaBinActivation(ActivationBinarizer):
    r"""AdaBin activation (Tu et al., ECCV 2022): adaptive binary set :math:`\{\beta-\alpha,
    \beta+\alpha\}`.

    Paper form (default): :math:`x_b = \alpha\,\operatorname{sign}(x - \beta) + \beta`, with
    learnable scalars :math:`\alpha` (init 1) and :math:`\beta` (init 0); the sign's backward is
    ApproxSign applied to :math:`(x-\beta)/\alpha`, as in the official code.
    ``variant="reference"``: the official/BiDense code's re-parametrisation
    :math:`\alpha\,(\operatorname{ApproxSign}((x-\beta)/\alpha) + \beta)` (centre
    :math:`\alpha\beta`).
    """

    def __init__(
        self, channels: int | None = None, channel_dim: int = 1, variant: str = "paper"
    ) -> None:
        super().__init__(channels, channel_dim)
        if variant not in ("paper", "reference"):
            raise ValueError(f"AdaBin variant must be 'paper' or 'reference', got {variant!r}")
        self.variant = variant
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def positive_value(self, x: Tensor) -> Tensor:
        if self.variant == "reference":
            return self.alpha * (1.0 + self.beta)
        return self.alpha + self.beta

    def forward(self, x: Tensor) -> Tensor:
        s = approx_sign((x - self.beta) / self.alpha)
        if self.variant == "reference":
            return self.alpha * (s + self.beta)
        return self.alpha * s + self.beta

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant}"


@register_binarizer("activation", "bisrnet")
class BiSRActivation(ActivationBinarizer):
    r"""BiSRNet binarizer (Cai et al., NeurIPS 2023).

    Redistribution :math:`x_r = k_c x + b_c` (k init 1, b init 0), then
    :math:`\operatorname{sign}(x_r)` whose backward is taken from :math:`\tanh(\beta x_r)`:
    :math:`\partial/\partial x_r = \beta(1 - \tanh^2(\beta x_r))`, with a learnable scalar
    :math:`\beta` (init 1) that receives gradient through the tanh.
    """

    def __init__(self, channels: int | None = None, channel_dim: int = 1) -> None:
        super().__init__(channels, channel_dim)
        c = self._require_channels()
        self.k = nn.Parameter(torch.ones(c))
        self.b = nn.Parameter(torch.zeros(c))
        self.beta = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        xr = self._per_channel(self.k, x) * x + self._per_channel(self.b, x)
        return tanh_sign(xr, self.beta)


@register_binarizer("activation", "dab")
class DAB(ActivationBinarizer):
    r"""Distribution-adaptive Binarizer (BiDense, Yin et al., arXiv 2411.10346, 2024).

    Per sample :math:`n` and input channel :math:`c`, statistics over the spatial (or token)
    positions:

    .. math::
        \mu_{n,c} &= \operatorname{mean}_{h,w} x \quad (\text{detached}) \\
        \tau_{n,c} &= k_c \mu_{n,c} + b_c, \qquad s = x - \tau \\
        m_{n,c} &= \operatorname{mean}_{h,w} |s| \quad (\text{detached}) \\
        \alpha_{n,c} &= \exp(a_c (m_{n,c} - 1)) \\
        y &= \alpha_{n,c} \cdot \operatorname{ApproxSign}(s)

    Gradients: x receives :math:`\alpha\,\operatorname{ApproxSign}'(s)` only; k and b only
    through s (:math:`\partial s/\partial k = -\mu`, :math:`\partial s/\partial b = -1`); a only
    through :math:`\alpha` (:math:`\partial\alpha/\partial a = (m-1)\alpha`).
    Init: :math:`a, k \sim N(0, 0.001^2)`, :math:`b = 0`, so the threshold starts at ~0 and the
    scale at ~1 (plain sign). The statistics are per sample, so train and eval are identical.

    ``scale="shared"`` is **our deployment-friendly variant, not the paper's**: the threshold stays
    per (n, c) but the scale is one scalar per sample, :math:`\bar\alpha_n = \operatorname{mean}_c
    \alpha_{n,c}`, so it factors out of a packed XNOR-popcount over all channels.
    ``scale="group"`` (also ours): one scale per sample and per group of ``group`` consecutive
    input channels, :math:`\bar\alpha_{n,g} = \operatorname{mean}_{c \in g} \alpha_{n,c}`
    (the last group possibly shorter). With ``group`` a multiple of the 64-channel packing word
    the packed conv stays exact, :math:`D = \sum_w \bar\alpha_{n,w} D_w` over the words
    :math:`w` (one multiply-add per word instead of per channel); ``group`` is ignored by the
    other variants.
    """

    def __init__(
        self,
        channels: int | None = None,
        channel_dim: int = 1,
        scale: str = "channel",
        group: int = 64,
    ) -> None:
        super().__init__(channels, channel_dim)
        if scale not in DAB_SCALES:
            raise ValueError(f"DAB scale must be one of {DAB_SCALES}, got {scale!r}")
        if isinstance(group, bool) or not isinstance(group, int) or group < 1:
            raise ValueError(f"DAB group must be a positive int, got {group!r}")
        c = self._require_channels()
        self.scale = scale
        self.group = group
        self.a = nn.Parameter(torch.randn(c) * 1e-3)
        self.k = nn.Parameter(torch.randn(c) * 1e-3)
        self.b = nn.Parameter(torch.zeros(c))

    def threshold_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(tau, alpha)`` broadcastable to ``x`` (used by the exporter as well)."""
        dims = self._stat_dims(x)

        def mean(t: Tensor) -> Tensor:
            # (B, C) input has no positions: each statistic is the value itself
            return t.mean(dim=dims, keepdim=True) if dims else t

        mu = mean(x.detach())
        tau = self._per_channel(self.k, x) * mu + self._per_channel(self.b, x)
        m = mean((x.detach() - tau.detach()).abs())
        alpha = torch.exp(self._per_channel(self.a, x) * (m - 1.0))
        if self.scale != "channel":
            group = self.group if self.scale == "group" else alpha.shape[self.channel_dim]
            alpha = group_mean(alpha, self.channel_dim, group)
        return tau, alpha

    def forward(self, x: Tensor) -> Tensor:
        # one fused autograd.Function (same values and gradients as the composition
        # ``alpha * approx_sign(x - tau)`` of :meth:`threshold_and_scale`, fewer temporaries)
        return dab(x, self.a, self.k, self.b, self.channel_dim, self.scale, self.group)

    def positive_value(self, x: Tensor) -> Tensor:
        return self.threshold_and_scale(x)[1]

    def extra_repr(self) -> str:
        group = f", group={self.group}" if self.scale == "group" else ""
        return f"{super().extra_repr()}, scale={self.scale}{group}"
