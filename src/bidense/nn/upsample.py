r"""Multi-branch parallel binary upsampling (after Ding et al. 2024).

X. Ding, L. Shan, G. Zhao, M. Wu, W. Zhou, W. Li, *The Binary Quantized Neural Network for Dense
Prediction via Specially Designed Upsampling and Attention*, arXiv 2405.17776 (2024). No code is
public and the paper's formulas are not known to us: from the abstract and third-party summaries
we only know that the upsampler runs **parallel branches merged by learned sigmoid gates with
Hadamard products**. The branch operators, the gate shape and the bypass are **our design** D1 of
``shared/reference/ding2024.md``; the class docstring marks which parts are which. Op counts:
:func:`bidense.profile.module_ops`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import RPReLU
from .binary import BinaryConvTranspose2d
from .bypass import channel_adaptive_bypass
from .units import DING_ACT, DING_WEIGHT, unit_conv

__all__ = ["UPSAMPLE_BRANCHES", "MultiBranchUpsample"]

#: Branch operators of :class:`MultiBranchUpsample`, in their default order.
UPSAMPLE_BRANCHES: tuple[str, ...] = ("nearest", "bilinear", "transposed", "pixelshuffle")


class MultiBranchUpsample(nn.Module):
    r"""Multi-branch parallel binary upsampling ``(B, C_in, H, W) -> (B, C_out, sH, sW)``.

    **From the paper** (Ding et al., arXiv 2405.17776, via summaries): several parallel branches,
    each learned on its own, merged with learned weights written with sigmoids and Hadamard
    products, to mimic full-precision upsampling with binary operations.

    **Our design** (ding2024.md D1): the branches (``branches`` selects any subset, in order)

    ============== ======================================================================
    ``nearest``     nearest xs -> binary 3x3 conv (p1) -> BN
    ``bilinear``    bilinear xs (align_corners=False) -> binary 3x3 conv -> BN
                    (interpolate *before* binarizing: bilinear output is real-valued)
    ``transposed``  binary ConvTranspose2d(k=s, stride=s) -> BN
    ``pixelshuffle`` binary 1x1 conv to C_out s^2 -> BN -> PixelShuffle(s)
    ============== ======================================================================

    gates per branch b and output channel c,
    :math:`g_{b,c} = \sigma(\theta_{b,c} + [\varphi(\operatorname{GAP}(x))]_{b,c})` with
    :math:`\theta` learnable, init 0 (every gate starts at 0.5), and :math:`\varphi` an FP 1x1
    conv ``C_in -> n_b C_out`` on the pooled input, zero-initialised, only for
    ``gate="conditioned"`` (``"static"``: :math:`\varphi = 0`); and the output

    .. math::
        y = \operatorname{RPReLU}\Big(\sum_b g_b \odot \operatorname{Branch}_b(x)
            + \operatorname{CFB}(\operatorname{nearest}_s(x), C_{out})\Big)

    where the CFB bypass (BiDense) keeps real-valued information. Binary convs use the D0
    binarizers (RSign, learned-scale weights). A single ``bilinear`` or ``transposed`` branch is
    the plain ablation baseline. ``binary=False`` gives the same topology with FP convs.

    Cost per image with :math:`N_{out} = s^2 HW`: ``nearest``/``bilinear``
    :math:`9 C_{in} C_{out} N_{out}` BOPs each, ``transposed``/``pixelshuffle``
    :math:`C_{in} C_{out} N_{out}` BOPs each, :math:`\varphi` :math:`C_{in} n_b C_{out}` FP MACs;
    the rest is elementwise (:func:`bidense.profile.module_ops`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        branches: Sequence[str] = UPSAMPLE_BRANCHES,
        gate: Literal["static", "conditioned"] = "static",
        binary: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
            raise ValueError(f"MultiBranchUpsample: scale must be an int >= 2, got {scale!r}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(
                f"MultiBranchUpsample: channels must be >= 1, got {in_channels} -> {out_channels}"
            )
        branches = tuple(branches)
        if not branches or len(set(branches)) != len(branches):
            raise ValueError(f"MultiBranchUpsample: need distinct branches, got {branches}")
        bad = [b for b in branches if b not in UPSAMPLE_BRANCHES]
        if bad:
            raise ValueError(
                f"MultiBranchUpsample: unknown branch(es) {bad}; choose from {UPSAMPLE_BRANCHES}"
            )
        if gate not in ("static", "conditioned"):
            raise ValueError(
                f"MultiBranchUpsample: gate must be 'static' or 'conditioned', got {gate!r}"
            )
        self.in_channels, self.out_channels, self.scale = int(in_channels), int(out_channels), scale
        self.branch_names = branches
        self.gate_mode = gate
        self.binary = bool(binary)
        cin, cout, s = self.in_channels, self.out_channels, scale
        mods: dict[str, nn.Module] = {}
        for name in branches:
            if name in ("nearest", "bilinear"):
                mods[name] = nn.Sequential(
                    unit_conv(cin, cout, 3, 1, 1, binary), nn.BatchNorm2d(cout)
                )
            elif name == "transposed":
                conv: nn.Module = (
                    BinaryConvTranspose2d(
                        cin, cout, s, stride=s, act_binarizer=DING_ACT, weight_binarizer=DING_WEIGHT
                    )
                    if binary
                    else nn.ConvTranspose2d(cin, cout, s, stride=s, bias=False)
                )
                mods[name] = nn.Sequential(conv, nn.BatchNorm2d(cout))
            else:
                mods[name] = nn.Sequential(
                    unit_conv(cin, cout * s * s, 1, 1, 0, binary),
                    nn.BatchNorm2d(cout * s * s),
                    nn.PixelShuffle(s),
                )
        self.branches = nn.ModuleDict(mods)
        nb = len(branches)
        self.gate_logits = nn.Parameter(torch.zeros(nb, cout))
        self.gate_proj: nn.Conv2d | None = None
        if gate == "conditioned":
            self.gate_proj = nn.Conv2d(cin, nb * cout, 1, bias=False)
            nn.init.zeros_(self.gate_proj.weight)
        self.act = RPReLU(cout)

    def gates(self, x: Tensor) -> Tensor:
        """Gate values :math:`g` of shape (B, n_b, C_out) for input ``x``."""
        logits = self.gate_logits.unsqueeze(0).expand(x.shape[0], -1, -1)
        if self.gate_proj is not None:
            pooled = F.adaptive_avg_pool2d(x, 1)
            logits = logits + self.gate_proj(pooled).view(x.shape[0], *self.gate_logits.shape)
        return torch.sigmoid(logits)

    def branch_outputs(self, x: Tensor, near: Tensor | None = None) -> list[Tensor]:
        """Each branch's output (B, C_out, sH, sW), in ``branch_names`` order; ``near`` is the
        nearest xs input if already computed (it is shared with the bypass)."""
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if near is None:
            near = F.interpolate(x, size=size, mode="nearest")
        outs = []
        for name in self.branch_names:
            if name == "nearest":
                inp = near
            elif name == "bilinear":
                inp = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            else:
                inp = x
            outs.append(self.branches[name](inp))
        return outs

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MultiBranchUpsample expects input (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        g = self.gates(x)
        near = F.interpolate(x, size=size, mode="nearest")
        y = channel_adaptive_bypass(near, self.out_channels)
        for b, out in enumerate(self.branch_outputs(x, near)):
            y = y + g[:, b, :, None, None] * out
        return self.act(y)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, scale={self.scale}, "
            f"branches={self.branch_names}, gate={self.gate_mode!r}, binary={self.binary}"
        )
