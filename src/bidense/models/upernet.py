"""UperNet decoder exactly as the BiDense reference (bidense-method.md §8, §10).

Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018, in the variant of
the BiDense reference:

* PSP on C4: branches ``AdaptiveAvgPool(b) -> unit1x1(C4 -> C4/4) -> act -> bilinear up``
  for b in {1, 2, 4, 6}; ``concat[C4, branches] -> unit3x3(-> C4) -> act -> Dropout2d(0.1)``.
* Laterals ``L_i = unit1x1(C_i -> F)`` for i = 2..4 (L4 from the PSP output); ``L1 = C1`` when
  C1 == F (otherwise a 1x1 lateral is added).
* Non-cumulative top-down with ONE shared smoothing conv S used three times:
  ``P_i = S(L_i + up(L_{i+1}))`` for i = 1, 2, 3 and ``P4 = L4``.
* Fuse: ``concat[P1, up(P2), up(P3), up(P4)] -> unit3x3(4F -> F) -> act``.
* out_conv1: ``unit3x3(F -> 128)`` at stride 4; the model then resizes to the input size.

All upsampling is bilinear with ``align_corners=True``. Per layout:

* fp32 (§10): PSP conv(no bias)+BN+ReLU; laterals conv1x1 with bias; S conv3x3 with bias;
  fuse conv3x3(no bias)+BN+ReLU; out_conv1 conv3x3 with bias.
* baselines (baselines.md): every conv is a binary conv + BN; ``S'(x) = x + BN(S(x))``;
  fuse conv+BN+act; out_conv1 conv+BN.
* bidense (§8): every conv is a BiDenseConv2d; PSP/bottleneck act LearnableBias+PReLU; fuse act
  LearnableBias+PReLU+LearnableBias; no residual around S.

The shared S is registered three times (``smooth.0/1/2``) so that ``state_dict()`` holds it three
times, as the reference's parameter convention counts it (§14); ``parameters()`` is unique.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bidense import nn as bnn

from .methods import FP32, MethodSpec


def _up(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class PSPBranch(nn.Module):
    """AdaptiveAvgPool(bin) -> conv unit 1x1 -> act; upsampled in ``forward``."""

    def __init__(self, in_ch: int, out_ch: int, bin_size: int, spec: MethodSpec) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(bin_size)
        self.conv = spec.unit(in_ch, out_ch, 1)
        self.act = spec.nonlinearity(out_ch, "decoder")

    def forward(self, x: Tensor) -> Tensor:
        return _up(self.act(self.conv(self.pool(x))), x.shape[-2:])


class UperNetDecoder(nn.Module):
    """UperNet decoder (PSP + FPN + fuse + out_conv1); output at stride 4 with 128 channels.

    Args:
        in_channels: channels of C1..C4.
        channels: FPN width F (default C1, as the reference: 96 for ConvNeXt-T).
        method: the method's spec.
        psp_channels: PSP branch width (default C4 // 4).
        bins: PSP pooling bins.
        out_channels: out_conv1 width (128).
        dropout: Dropout2d after the PSP bottleneck.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int | None = None,
        method: MethodSpec = FP32,
        psp_channels: int | None = None,
        bins: Sequence[int] = (1, 2, 4, 6),
        out_channels: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"UperNet needs 4 feature levels, got {len(in_channels)}")
        self.layout = method.layout
        c1, c2, c3, c4 = (int(c) for c in in_channels)
        fpn = int(channels) if channels is not None else c1
        psp = int(psp_channels) if psp_channels is not None else c4 // 4
        fp = not method.is_binary
        self.out_channels = out_channels

        self.psp_branches = nn.ModuleList(PSPBranch(c4, psp, b, method) for b in bins)
        cat = c4 + psp * len(bins)
        self.psp_bottleneck = nn.Sequential(
            method.unit(cat, c4, 3, padding=1),
            method.nonlinearity(c4, "decoder"),
            nn.Dropout2d(dropout),
        )

        def lateral(cin: int) -> nn.Module:
            if fp:
                return nn.Conv2d(cin, fpn, 1, bias=True)
            return method.unit(cin, fpn, 1)

        self.lateral1 = lateral(c1) if c1 != fpn else nn.Identity()
        self.laterals = nn.ModuleList(lateral(c) for c in (c2, c3, c4))
        if fp:
            smooth: nn.Module = nn.Conv2d(fpn, fpn, 3, padding=1, bias=True)
        else:
            smooth = method.unit(fpn, fpn, 3, padding=1)
        # The same module three times: shared weights, three state_dict entries (see module doc).
        self.smooth = nn.ModuleList([smooth, smooth, smooth])

        if self.layout == "bidense":
            fuse_act: nn.Module = nn.Sequential(
                bnn.LearnableBias(fpn), nn.PReLU(fpn, init=0.25), bnn.LearnableBias(fpn)
            )
        else:
            fuse_act = method.nonlinearity(fpn, "decoder")
        self.fuse = nn.Sequential(method.unit(4 * fpn, fpn, 3, padding=1), fuse_act)
        if fp:
            self.out_conv1: nn.Module = nn.Conv2d(fpn, out_channels, 3, padding=1, bias=True)
        else:
            self.out_conv1 = method.unit(fpn, out_channels, 3, padding=1)

    def _smooth(self, i: int, x: Tensor) -> Tensor:
        if self.layout == "baseline":
            return x + self.smooth[i](x)
        return self.smooth[i](x)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Map ``[C1, C2, C3, C4]`` to a stride-4 map of ``out_channels`` channels."""
        c1, c2, c3, c4 = feats
        x = torch.cat([c4] + [b(c4) for b in self.psp_branches], dim=1)
        psp = self.psp_bottleneck(x)
        lat = [self.lateral1(c1), self.laterals[0](c2), self.laterals[1](c3), self.laterals[2](psp)]
        # Non-cumulative top-down: each level adds the *lateral* of the level above.
        outs = [self._smooth(i, lat[i] + _up(lat[i + 1], lat[i].shape[-2:])) for i in range(3)]
        outs.append(lat[3])
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([outs[0]] + [_up(o, size) for o in outs[1:]], dim=1))
        return self.out_conv1(fused)
