"""Weight binarizers. Scales are per index of dim 0 of the weight tensor.

For a ``ConvTranspose2d`` weight (C_in, C_out/g, kh, kw) that makes the scale per *input* channel,
exactly as the BiDense reference does (bidense-method.md §1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import WeightBinarizer, register_binarizer
from .functional import (
    ede_schedule,
    ede_sign,
    mean_abs_sign,
    scaled_sign_clip_ste,
    sign_clip_ste,
)


def _row_view(v: Tensor, w: Tensor) -> Tensor:
    return v.view((-1,) + (1,) * (w.dim() - 1))


@register_binarizer("weight", "sign")
class SignWeight(WeightBinarizer):
    r"""BNN weights (Hubara, Courbariaux et al., 2016): :math:`W_b = \operatorname{sign}(W)`,
    clip-STE backward, no scale.

    Paper (default): latent weights are clipped to [-1, 1] after every update
    (``clip_latent = True``, applied by :func:`bidense.binarize.clip_latent_weights`).
    ``variant="reference"`` (BiDense reference): no latent clipping.
    """

    def __init__(self, out_channels: int | None = None, variant: str = "paper") -> None:
        super().__init__(out_channels)
        if variant not in ("paper", "reference"):
            raise ValueError(f"sign weight variant must be 'paper' or 'reference', got {variant!r}")
        self.variant = variant
        self.clip_latent = variant == "paper"

    def forward(self, w: Tensor) -> Tensor:
        return sign_clip_ste(w)


@register_binarizer("weight", "mean_abs")
class MeanAbsWeight(WeightBinarizer):
    r"""Scaled sign weights (Bi-Real/ReActNet official code; BiDense §1).

    :math:`\hat W_o = \gamma_o \operatorname{sign}(W_o)`, :math:`\gamma_o = \operatorname{mean}
    |W_o|` over all but dim 0, **detached**; backward clip-STE on W (``clamp(W,-1,1)`` used
    straight-through), not multiplied by :math:`\gamma`. ``detach_scale=False`` lets the gradient
    flow through :math:`\gamma` as well (Bi-Real paper's magnitude-aware gradient, XNOR-Net).
    """

    def __init__(self, out_channels: int | None = None, detach_scale: bool = True) -> None:
        super().__init__(out_channels)
        self.detach_scale = detach_scale

    def forward(self, w: Tensor) -> Tensor:
        if self.detach_scale:
            return mean_abs_sign(w)
        gamma = w.abs().mean(dim=self._reduce_dims(w), keepdim=True)
        return gamma * sign_clip_ste(w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, detach_scale={self.detach_scale}"


@register_binarizer("weight", "magnitude_aware")
class MagnitudeAwareWeight(MeanAbsWeight):
    r"""Bi-Real Net paper weights (Liu et al., ECCV 2018) and XNOR-Net's
    :math:`\alpha_o \operatorname{sign}(W_o)`, :math:`\alpha_o = \|W_o\|_1 / n`: the same value as
    ``mean_abs`` but the scale is not detached, so
    :math:`\partial C/\partial W_i = \partial C/\partial \hat W_i (1/n + \alpha 1_{|W_i|\le 1})`
    (to first order).
    """

    def __init__(self, out_channels: int | None = None) -> None:
        super().__init__(out_channels, detach_scale=False)


@register_binarizer("weight", "centered_mean_abs")
class CenteredMeanAbsWeight(WeightBinarizer):
    r"""Row-centred sign with an uncentred scale (BiDense BinaryLinear §7, BiViT fc1/fc2 §9).

    :math:`W' = W - \operatorname{mean}_{row} W`, :math:`\hat W = \gamma \operatorname{sign}(W')`
    with :math:`\gamma = \operatorname{mean}_{row}|W|` (uncentred, detached); clip-STE on
    :math:`W'`, not multiplied by :math:`\gamma` (as the reference code).
    """

    def forward(self, w: Tensor) -> Tensor:
        dims = self._reduce_dims(w)
        gamma = w.detach().abs().mean(dim=dims, keepdim=True)
        centred = w - w.mean(dim=dims, keepdim=True)
        return scaled_sign_clip_ste(centred, gamma)


@register_binarizer("weight", "learned_scale")
class LearnedScaleWeight(WeightBinarizer):
    r"""BiViT-style weights with a learnable per-row scale (He et al., ICCV 2023; BiDense §9).

    :math:`\hat W = \lambda_o \operatorname{sign}(W - \operatorname{mean}_{row} W)`, clip-STE on
    the centred weight; :math:`\lambda` is a parameter initialised at the first forward to
    :math:`\operatorname{mean}|W_{row}|` (the ``initialized`` buffer records that, so a loaded
    state dict is never re-initialised).
    """

    def __init__(self, out_channels: int | None = None) -> None:
        super().__init__(out_channels)
        if out_channels is None or out_channels <= 0:
            raise ValueError("weight binarizer 'learned_scale' needs a positive `out_channels`")
        self.scale = nn.Parameter(torch.ones(out_channels))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, w: Tensor) -> Tensor:
        dims = self._reduce_dims(w)
        if not bool(self.initialized):
            with torch.no_grad():
                self.scale.copy_(w.abs().mean(dim=dims))
                self.initialized.fill_(True)
        centred = w - w.mean(dim=dims, keepdim=True)
        return _row_view(self.scale, w) * sign_clip_ste(centred)


@register_binarizer("weight", "adabin")
class AdaBinWeight(WeightBinarizer):
    r"""AdaBin weights (Tu et al., ECCV 2022), per output filter :math:`o`:

    :math:`\beta_o = \operatorname{mean}(W_o)`, :math:`\alpha_o = \|W_o - \beta_o\|_2/\sqrt{n}`
    with :math:`n` the filter's element count :math:`(C_{in}/g) k_h k_w`, and
    :math:`W_b = \alpha_o \operatorname{sign}(W_o - \beta_o) + \beta_o`. The sign is taken of the
    normalised :math:`(W-\beta)/\alpha` with IR-Net's EDE backward, annealed by
    :meth:`set_progress` from ``t_min`` to ``t_max`` (k = max(1/t, 1)).

    ``variant="reference"`` (BiDense reference): fixed k = 10, t = 0.1, and :math:`n` =
    ``fan_in`` given by the caller as :math:`C_{in} k_h k_w` ignoring groups.
    """

    def __init__(
        self,
        out_channels: int | None = None,
        variant: str = "paper",
        fan_in: int | None = None,
        t_min: float = 0.1,
        t_max: float = 10.0,
    ) -> None:
        super().__init__(out_channels)
        if variant not in ("paper", "reference"):
            raise ValueError(f"AdaBin variant must be 'paper' or 'reference', got {variant!r}")
        self.variant = variant
        self.fan_in = fan_in
        self.t_min, self.t_max = t_min, t_max
        self.register_buffer("progress", torch.zeros(()))

    def set_progress(self, fraction: float) -> None:
        self.progress.fill_(min(max(float(fraction), 0.0), 1.0))

    def ede_parameters(self) -> tuple[float, float]:
        if self.variant == "reference":
            return 10.0, 0.1
        return ede_schedule(float(self.progress), self.t_min, self.t_max)

    def forward(self, w: Tensor) -> Tensor:
        dims = self._reduce_dims(w)
        beta = w.mean(dim=dims, keepdim=True)
        sq = (w - beta).pow(2).sum(dim=dims, keepdim=True)
        n = w[0].numel()
        if self.variant == "reference" and self.fan_in is not None:
            n = int(self.fan_in)
        alpha = (sq / n).sqrt().clamp_min(1e-12)
        k, t = self.ede_parameters()
        return alpha * ede_sign((w - beta) / alpha, k, t) + beta

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant}"
