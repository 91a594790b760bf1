r"""The binary unit of the ``ding`` method: binary conv + BN + real-valued shortcut + RPReLU.

After Ding et al., *The Binary Quantized Neural Network for Dense Prediction via Specially
Designed Upsampling and Attention*, arXiv 2405.17776 (2024). The paper says only that its
binarizers use "learned scaling"; the unit below (its binarizers, its shortcuts) is **our
design** D0 of ``shared/reference/ding2024.md``. :class:`~bidense.nn.MultiBranchUpsample` and
:class:`~bidense.nn.BinaryDualAttention` build their binary convs with the same binarizers
(:func:`unit_conv`). Op counts: :func:`bidense.profile.module_ops`.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from .activations import RPReLU
from .binary import BinaryConv2d
from .bypass import channel_adaptive_bypass

__all__ = ["DING_ACT", "DING_WEIGHT", "DingUnit", "unit_conv"]

#: D0 binarizers of the ``ding`` method: RSign activations, learned-scale centred weights.
DING_ACT = "rsign"
DING_WEIGHT = "learned_scale"


def unit_conv(
    cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, binary: bool = True
) -> nn.Conv2d:
    """A bias-free ``k x k`` conv: a :class:`BinaryConv2d` with the D0 binarizers, or with
    ``binary=False`` a plain FP ``nn.Conv2d`` of the same shape (the FP32 same-topology model)."""
    if binary:
        return BinaryConv2d(
            cin, cout, k, stride=stride, padding=padding,
            act_binarizer=DING_ACT, weight_binarizer=DING_WEIGHT,
        )
    return nn.Conv2d(cin, cout, k, stride, padding, bias=False)


class DingUnit(nn.Module):
    r"""The ``ding`` method's binary unit (our design D0; Bi-Real/ReActNet layout).

    .. math::
        u(x) = \operatorname{RPReLU}\big(\operatorname{BN}(\operatorname{BinConv}(
               \operatorname{RSign}(x))) + \operatorname{shortcut}(x)\big)

    BinConv uses the ``learned_scale`` weights :math:`\hat W_o = \lambda_o
    \operatorname{sign}(W_o - \bar W_o)` (learnable :math:`\lambda_o`, init mean\|W_o\|; BiViT's
    parameterised scale, He et al. ICCV 2023) and RSign activations (ReActNet, Liu et al. ECCV
    2020). "Learned scaling" is all the paper summaries say; these particular binarizers are our
    choice. Shortcut: identity when shapes match; CFB (BiDense, Yin et al. arXiv 2411.10346) when
    only the channels change; ``AvgPool2d(stride)`` then an FP 1x1 conv + BN
    (``down_shortcut="fp"``, Bi-Real Net) or then CFB (``down_shortcut="cfb"``, no parameters)
    when the stride changes. ``binary=False`` replaces the binary conv by an FP ``Conv2d`` and
    keeps everything else (the "same topology in FP32" of D3).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        down_shortcut: Literal["fp", "cfb"] = "fp",
        binary: bool = True,
    ) -> None:
        super().__init__()
        if down_shortcut not in ("fp", "cfb"):
            raise ValueError(
                f"DingUnit: down_shortcut must be 'fp' or 'cfb', got {down_shortcut!r}"
            )
        if int(stride) < 1 or int(kernel_size) < 1:
            raise ValueError(f"DingUnit: bad kernel_size={kernel_size} or stride={stride}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = int(kernel_size), int(stride)
        self.down_shortcut = down_shortcut
        self.binary = bool(binary)
        self.conv = unit_conv(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, binary
        )
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else None
        self.proj: nn.Module | None = None
        if stride > 1 and down_shortcut == "fp":
            self.proj = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = RPReLU(out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        """The real-valued shortcut branch."""
        if self.pool is not None:
            x = self.pool(x)
        if self.proj is not None:
            return self.proj(x)
        return channel_adaptive_bypass(x, self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.conv(x))
        sc = self.shortcut(x)
        if sc.shape[-2:] != y.shape[-2:]:
            raise ValueError(
                f"DingUnit: stride {self.stride} needs H and W divisible by it, got input "
                f"{tuple(x.shape)}"
            )
        return self.act(y + sc)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial output size for an (h, w) input."""
        p, k, s = self.kernel_size // 2, self.kernel_size, self.stride
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
            f"binary={self.binary}, down_shortcut={self.down_shortcut!r}"
        )
