"""ResNet-18/34 backbones (He et al., CVPR 2016) in plain torch, one file for every method.

* ``fp32``: torchvision-style BasicBlock (conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU), 1x1
  strided conv + BN downsampling shortcut.
* baselines: the Bi-Real block layout (Liu et al., "Bi-Real Net", ECCV 2018): a real-valued
  identity shortcut around **every** binary 3x3 unit, ``out = act(BN(BinConv(x)) + sc(x))``; the
  downsampling shortcut is ``AvgPool2d(2) -> FP Conv1x1 -> BN``. ``act`` is the method's block
  non-linearity (RPReLU for ReActNet, none for Bi-Real, ...).
* ``bidense``: every 3x3 unit is a BiDenseConv2d whose CFB bypass is the shortcut; the strided
  units are ``BiDenseDown`` (k3 s2 conv + CFB(AvgPool(3, 2, 1)(x)), bidense-method.md §6);
  followed by LearnableBias + PReLU. No extra residual.

Stem (FP for every method): conv7x7/2 (3->64) + BN + ReLU + maxpool 3x3/2. The forward returns
the four stage outputs at strides 4/8/16/32 (64/128/256/512 channels).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .methods import MethodSpec, _bnn, get_method

RESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}


class BasicBlockFP(nn.Module):
    """Full-precision ResNet BasicBlock."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class BinaryUnit(nn.Module):
    """One binary 3x3 unit with its own real-valued shortcut (Bi-Real layout, or BiDense CFB)."""

    def __init__(self, cin: int, cout: int, stride: int, spec: MethodSpec) -> None:
        super().__init__()
        self.bidense = spec.layout == "bidense"
        self.shortcut: nn.Module | None = None
        if self.bidense:
            self.conv = (
                _bnn().BiDenseDown(cin, cout) if stride != 1 else spec.unit(cin, cout, 3, 1, 1)
            )
        else:
            self.conv = spec.unit(cin, cout, 3, stride, 1)
            if stride != 1 or cin != cout:
                layers: list[nn.Module] = [nn.AvgPool2d(stride)] if stride != 1 else []
                layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
                self.shortcut = nn.Sequential(*layers)
            else:
                self.shortcut = nn.Identity()
        self.act = spec.nonlinearity(cout, "block")

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


class ResNet(nn.Module):
    """ResNet feature extractor (BasicBlock) for any method; returns C1..C4.

    Args:
        layers: blocks per stage ((2, 2, 2, 2) for ResNet-18, (3, 4, 6, 3) for ResNet-34).
        method: binarization method.
        widths: stage widths.
        in_chans: input channels.
    """

    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 2, 2),
        method: str | MethodSpec = "fp32",
        widths: Sequence[int] = (64, 128, 256, 512),
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        spec = get_method(method)
        self.method = spec.name
        self.out_channels = list(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        cin = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                if spec.is_binary:
                    blocks.append(
                        nn.Sequential(BinaryUnit(cin, w, stride, spec), BinaryUnit(w, w, 1, spec))
                    )
                else:
                    blocks.append(BasicBlockFP(cin, w, stride))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return ``[C1, C2, C3, C4]`` at strides 4, 8, 16, 32."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
