"""DPT decoder (Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021).

As the BiDense reference (bidense-method.md §9), features F = 256, out_channels
[48, 96, 192, 384] for ViT-S:

* Projections ``unit1x1(C -> c_i)`` on the four token maps.
* Resize: x4 up, x2 up, identity, /2 down (476 px input: 136, 68, 34, 17).
* ``layer_i_rn``: ``unit3x3(c_i -> F)``.
* Residual conv unit (RCU) and fusion block: ``out = x0 (+ RCU1(x1))`` -> RCU2 -> bilinear
  (align_corners=True) to the next level's size (x2 for the last).
* ``output_conv1``: ``unit3x3(F -> 128)``; the model then resizes to the input and applies the
  task head.

Per layout:

* fp32: projections Conv1x1 (bias); resize ConvTranspose(k4, s4), ConvTranspose(k2, s2),
  identity, Conv3x3/2; layer_rn Conv3x3 without bias; RCU ``x + conv(ReLU(conv(ReLU(x))))`` with
  biases; output_conv1 Conv3x3.
* bidense: BiDenseConv2d everywhere, BiDenseUp x4 / x2 and BiDenseDown for the resize;
  RCU = LearnableBias -> PReLU -> BiDenseConv(3x3, bias) -> LearnableBias -> PReLU ->
  BiDenseConv(3x3, bias) with **no outer skip** (the CFB inside each conv plays that role).
* baselines (baselines.md, "ViT baselines"): binary conv + BN units, ReLU-style decoder
  non-linearity with the RCU's outer residual, binary transposed conv + BN for the up-resizes, and
  a full-precision output_conv1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from bidense import nn as bnn

from .methods import FP32, MethodSpec


class ResidualConvUnit(nn.Module):
    """DPT RCU for each layout (see module docstring)."""

    def __init__(self, features: int, spec: MethodSpec) -> None:
        super().__init__()
        self.skip = spec.layout != "bidense"
        if spec.layout == "fp32":
            self.act1: nn.Module = nn.ReLU()
            self.conv1: nn.Module = nn.Conv2d(features, features, 3, padding=1, bias=True)
            self.act2: nn.Module = nn.ReLU()
            self.conv2: nn.Module = nn.Conv2d(features, features, 3, padding=1, bias=True)
        else:
            self.act1 = spec.nonlinearity(features, "decoder")
            self.conv1 = spec.unit(features, features, 3, padding=1, bias=True)
            self.act2 = spec.nonlinearity(features, "decoder")
            self.conv2 = spec.unit(features, features, 3, padding=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.act2(self.conv1(self.act1(x))))
        return x + y if self.skip else y


class FusionBlock(nn.Module):
    """``out = x0 (+ RCU1(x1))`` -> RCU2 -> bilinear resize (align_corners=True)."""

    def __init__(self, features: int, spec: MethodSpec, has_lateral: bool) -> None:
        super().__init__()
        self.rcu1 = ResidualConvUnit(features, spec) if has_lateral else None
        self.rcu2 = ResidualConvUnit(features, spec)

    def forward(
        self, x0: Tensor, x1: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        out = x0
        if x1 is not None:
            if self.rcu1 is None:
                raise ValueError("this fusion block has no lateral input")
            out = out + self.rcu1(x1)
        out = self.rcu2(out)
        if size is None:
            return F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        return F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)


class DPTDecoder(nn.Module):
    """DPT reassemble + fusion decoder; output (B, ``out_channels``, 2h1, 2w1).

    Args:
        in_channels: channel width of each of the 4 token maps (ViT embed dim).
        features: fusion width F (256).
        stage_channels: projection widths c_i ([48, 96, 192, 384]).
        method: the method's spec.
        out_channels: output_conv1 width (128).
    """

    def __init__(
        self,
        in_channels: int,
        features: int = 256,
        stage_channels: Sequence[int] = (48, 96, 192, 384),
        method: MethodSpec = FP32,
        out_channels: int = 128,
    ) -> None:
        super().__init__()
        layout = method.layout
        fp = layout == "fp32"
        self.out_channels = out_channels
        cs = [int(c) for c in stage_channels]
        if len(cs) != 4:
            raise ValueError("DPTDecoder needs 4 stage channels")
        if fp:
            self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, 1) for c in cs)
        else:
            self.projects = nn.ModuleList(method.unit(in_channels, c, 1) for c in cs)
        if fp:
            resize: list[nn.Module] = [
                nn.ConvTranspose2d(cs[0], cs[0], 4, 4),
                nn.ConvTranspose2d(cs[1], cs[1], 2, 2),
                nn.Identity(),
                nn.Conv2d(cs[3], cs[3], 3, 2, 1),
            ]
        elif layout == "bidense":
            resize = [
                bnn.BiDenseUp(cs[0], cs[0], 4, act_binarizer=method.act),
                bnn.BiDenseUp(cs[1], cs[1], 2, act_binarizer=method.act),
                nn.Identity(),
                bnn.BiDenseDown(cs[3], cs[3], act_binarizer=method.act),
            ]
        else:
            resize = [
                nn.Sequential(method.conv_transpose(cs[0], cs[0], 4, 4), nn.BatchNorm2d(cs[0])),
                nn.Sequential(method.conv_transpose(cs[1], cs[1], 2, 2), nn.BatchNorm2d(cs[1])),
                nn.Identity(),
                method.unit(cs[3], cs[3], 3, 2, 1),
            ]
        self.resize = nn.ModuleList(resize)
        if fp:
            self.layer_rn = nn.ModuleList(
                nn.Conv2d(c, features, 3, padding=1, bias=False) for c in cs
            )
        else:
            self.layer_rn = nn.ModuleList(method.unit(c, features, 3, padding=1) for c in cs)
        self.refinenet = nn.ModuleList(FusionBlock(features, method, i < 3) for i in range(4))
        if layout == "bidense":
            self.output_conv1: nn.Module = method.unit(features, out_channels, 3, padding=1)
        else:
            # FP for fp32 and, as the reference's ViT baselines, for the binary baselines.
            self.output_conv1 = nn.Conv2d(features, out_channels, 3, padding=1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Map the 4 token maps (B, C, h, w) to one (B, out_channels, 8h, 8w) map."""
        layers = [
            rn(rs(pr(f)))
            for f, pr, rs, rn in zip(feats, self.projects, self.resize, self.layer_rn)
        ]
        path = self.refinenet[3](layers[3], size=layers[2].shape[-2:])
        path = self.refinenet[2](path, layers[2], size=layers[1].shape[-2:])
        path = self.refinenet[1](path, layers[1], size=layers[0].shape[-2:])
        path = self.refinenet[0](path, layers[0])
        return self.output_conv1(path)
