"""ResNet-18/34 backbones (He et al., CVPR 2016) in plain torch, one encoder for every method.

The stage's block is a choice of :data:`RESNET_BLOCKS` (``block``; by default ``"basic"`` for
fp32 and ``"bireal"`` for every binary method):

* ``"basic"`` (fp32): torchvision-style BasicBlock (conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU),
  1x1 strided conv + BN downsampling shortcut.
* ``"bireal"``, baseline layout: the Bi-Real block layout (Liu et al., "Bi-Real Net", ECCV 2018):
  a real-valued identity shortcut around **every** binary 3x3 unit,
  ``out = act(BN(BinConv(x)) + sc(x))``; the downsampling shortcut is
  ``AvgPool2d(2) -> FP Conv1x1 -> BN``. ``act`` is the method's block non-linearity (RPReLU for
  ReActNet, none for Bi-Real, ...).
* ``"bireal"``, bidense layout: every 3x3 unit is a BiDenseConv2d whose CFB bypass is the
  shortcut; the strided units are ``BiDenseDown`` (k3 s2 conv + CFB(AvgPool(3, 2, 1)(x)),
  bidense-method.md §6); followed by LearnableBias + PReLU. No extra residual.
* ``"ding"`` (the ``ding_*`` models, methods ``ding`` and ``fp32``): two
  :class:`~bidense.nn.DingUnit` s per block (Bi-Real layout with RSign, learned-scale weights and
  RPReLU, ``shared/reference/ding2024.md`` D0/D4; FP convs for fp32, the same topology). The
  downsampling shortcut is AvgPool2d(2) -> FP 1x1 -> BN (``down_shortcut="fp"``) or AvgPool +
  CFB (``"cfb"``).

Stem (FP for every method): conv7x7/2 (3->64) + BN + ReLU + maxpool 3x3/2. The forward returns
the four stage outputs at strides 4/8/16/32 (64/128/256/512 channels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from bidense import nn as bnn

from .methods import FP32, MethodSpec

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
                bnn.BiDenseDown(cin, cout, act_binarizer=spec.act)
                if stride != 1
                else spec.unit(cin, cout, 3, 1, 1)
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


def _basic_block(
    cin: int, cout: int, stride: int, spec: MethodSpec, down_shortcut: str
) -> list[nn.Module]:
    return [BasicBlockFP(cin, cout, stride)]


def _bireal_block(
    cin: int, cout: int, stride: int, spec: MethodSpec, down_shortcut: str
) -> list[nn.Module]:
    return [nn.Sequential(BinaryUnit(cin, cout, stride, spec), BinaryUnit(cout, cout, 1, spec))]


def _ding_block(
    cin: int, cout: int, stride: int, spec: MethodSpec, down_shortcut: str
) -> list[nn.Module]:
    # The two units sit directly in the stage (no per-block container): ``stages.i.n``.
    binary = spec.is_binary
    return [
        bnn.DingUnit(cin, cout, 3, stride, down_shortcut, binary),  # type: ignore[arg-type]
        bnn.DingUnit(cout, cout, 3, 1, down_shortcut, binary),  # type: ignore[arg-type]
    ]


#: Block kinds of :class:`ResNet`: ``builder(c_in, c_out, stride, spec, down_shortcut)`` -> the
#: modules one basic block adds to its stage.
RESNET_BLOCKS: dict[str, Callable[[int, int, int, MethodSpec, str], list[nn.Module]]] = {
    "basic": _basic_block,
    "bireal": _bireal_block,
    "ding": _ding_block,
}


class ResNet(nn.Module):
    """ResNet feature extractor (BasicBlock) for any method; returns C1..C4.

    Args:
        layers: blocks per stage ((2, 2, 2, 2) for ResNet-18, (3, 4, 6, 3) for ResNet-34).
        method: the method's spec.
        widths: stage widths.
        in_chans: input channels.
        block: a key of :data:`RESNET_BLOCKS`; ``None``: ``"basic"`` for fp32, ``"bireal"``
            for binary methods.
        down_shortcut: downsampling shortcut of the ``"ding"`` units, ``"fp"`` or ``"cfb"``.
    """

    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 2, 2),
        method: MethodSpec = FP32,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_chans: int = 3,
        block: str | None = None,
        down_shortcut: str = "fp",
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(layers) != 4 or min(layers) < 1 or min(widths) < 1:
            raise ValueError(f"ResNet: need 4 widths and 4 block counts >= 1, got "
                             f"{tuple(widths)} / {tuple(layers)}")
        if block is None:
            block = "bireal" if method.is_binary else "basic"
        if block not in RESNET_BLOCKS:
            raise ValueError(f"ResNet: block must be one of {tuple(RESNET_BLOCKS)}, got {block!r}")
        if down_shortcut != "fp" and block != "ding":
            raise ValueError(f"ResNet: down_shortcut={down_shortcut!r} needs block 'ding'")
        make_block = RESNET_BLOCKS[block]
        self.method = method.name
        self.out_channels = [int(w) for w in widths]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        cin = self.out_channels[0]
        for i, (n, w) in enumerate(zip(layers, self.out_channels)):
            blocks: list[nn.Module] = []
            for j in range(int(n)):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks += make_block(cin, w, stride, method, down_shortcut)
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
