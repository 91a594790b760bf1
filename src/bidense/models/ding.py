r"""``ding`` models: binary ResNet-18 encoder, binary dual attention at 1/8, multi-branch decoder.

After Ding et al., *The Binary Quantized Neural Network for Dense Prediction via Specially
Designed Upsampling and Attention*, arXiv 2405.17776 (2024). The paper's base architectures are
not known to us; the whole layout below is **our design** (``shared/reference/ding2024.md`` D4),
built from the ding layers of :mod:`bidense.nn` (D0-D2: ``DingUnit``, ``MultiBranchUpsample``,
``BinaryDualAttention``).

Encoder: the ResNet of :mod:`bidense.models.resnet` with ``block="ding"``: FP stem (conv7x7/2 +
BN + ReLU + maxpool 3x3/2), four stages of widths 64/128/256/512 at strides 4/8/16/32 with 2
basic blocks each; a basic block is two binary 3x3 :class:`~bidense.nn.DingUnit` s, each with its
own real-valued shortcut (Bi-Real Net, Liu et al. ECCV 2018); the downsampling shortcut is
AvgPool2d(2) -> FP 1x1 -> BN (``shortcut="fp"``) or AvgPool + CFB (``shortcut="cfb"``).

Decoder (width :math:`C_d` = 128; :math:`\ell_i` = binary 1x1 unit :math:`C_i \to C_d` with CFB
shortcut)::

    D32 = l4(E4)
    D16 = unit3x3(Up x2(D32) + l3(E3))
    D8  = Attention(unit3x3(Up x2(D16) + l2(E2)))        # on the 1/8 map
    D4  = unit3x3(Up x2(D8) + l1(E1))
    head: FP Conv1x1(C_d -> K) at 1/4, bilinear x4 of the logits to the input size
          (final_mbu=True: Up x4 of the features, head at full resolution)

``Up`` is :class:`~bidense.nn.MultiBranchUpsample` (``upsample="multibranch"``; ``"bilinear"``
and ``"transposed"`` are its single-branch ablation baselines). ``attention="binary"`` is
:class:`~bidense.nn.BinaryDualAttention` (which ends in a binary 3x3 unit); ``"none"`` and ``"fp"``
(:class:`~bidense.nn.FullPrecisionDualAttention`, full N x N PAM + CAM in FP32) are followed by
the same kind of unit, so the three ablation models differ only in the attention.

Methods (:attr:`MethodSpec.ding_models`): ``"ding"`` (binary, D0 binarizers) and ``"fp32"``
(the same topology with every binary conv and the attention's matmuls in FP). Tasks ``seg``
(K logits), ``road`` and ``saliency`` (one logit), ``depth`` (sigmoid x ``max_depth``). Input H
and W must be multiples of 32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bidense.nn import (
    BinaryDualAttention,
    DingUnit,
    FullPrecisionDualAttention,
    MultiBranchUpsample,
)
from bidense.tasks import get_task, head_channels

from .methods import METHOD_SPECS, MethodSpec
from .registry import create_model, register_model
from .resnet import ResNet

__all__ = [
    "DING_METHODS",
    "DingNet",
    "ding_resnet18",
    "ding_resnet_tiny",
]

#: Methods the ``ding`` models accept (:attr:`MethodSpec.ding_models`), sorted.
DING_METHODS: tuple[str, ...] = tuple(sorted(n for n, s in METHOD_SPECS.items() if s.ding_models))
UPSAMPLE_MODES: dict[str, tuple[str, ...]] = {
    "multibranch": ("nearest", "bilinear", "transposed", "pixelshuffle"),
    "mbu": ("nearest", "bilinear", "transposed", "pixelshuffle"),
    "bilinear": ("bilinear",),
    "transposed": ("transposed",),
}
ATTENTION_MODES: tuple[str, ...] = ("binary", "none", "fp")


class DingNet(nn.Module):
    """The ``ding`` dense-prediction network (our design D4; see the module docstring).

    Args:
        task: ``seg``, ``road``, ``saliency`` or ``depth``.
        num_classes: K for ``seg`` (required), None or 1 otherwise.
        method: the method's spec: ``ding`` (binary) or ``fp32`` (same topology in FP).
        widths, blocks: encoder stage widths and blocks per stage.
        decoder_channels: decoder width :math:`C_d` (128).
        upsample: ``"multibranch"`` (alias ``"mbu"``), ``"bilinear"`` or ``"transposed"``.
        attention: ``"binary"``, ``"none"`` or ``"fp"``.
        grid: pooled key/value grid of the binary attention (8x8).
        gate: ``"static"`` or ``"conditioned"`` upsampling gates.
        binary_values: binary aggregation in the attention's position part.
        shortcut: encoder downsampling shortcut, ``"fp"`` or ``"cfb"``.
        final_mbu: upsample the features x4 with the upsampler and run the head at full size.
        max_depth: depth scale for ``task="depth"``.
        in_chans: input channels.
        arch: name recorded on the model.

    Attributes: ``task``, ``method``, ``num_classes``, ``arch``.
    """

    def __init__(
        self,
        task: str = "seg",
        num_classes: int | None = None,
        method: MethodSpec = METHOD_SPECS["ding"],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (2, 2, 2, 2),
        decoder_channels: int = 128,
        upsample: str = "multibranch",
        attention: str = "binary",
        grid: int | Sequence[int] = (8, 8),
        gate: str = "static",
        binary_values: bool = False,
        shortcut: str = "fp",
        final_mbu: bool = False,
        max_depth: float = 10.0,
        in_chans: int = 3,
        arch: str = "ding_resnet18",
    ) -> None:
        super().__init__()
        task_spec = get_task(task)
        k = head_channels(task_spec, num_classes)
        if not method.ding_models:
            raise ValueError(
                f"{arch}: method must be one of {DING_METHODS}, got {method.name!r}"
            )
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(
                f"{arch}: upsample must be one of {tuple(UPSAMPLE_MODES)}, got {upsample!r}"
            )
        if attention not in ATTENTION_MODES:
            raise ValueError(
                f"{arch}: attention must be one of {ATTENTION_MODES}, got {attention!r}"
            )
        binary = method.is_binary
        self.task, self.method, self.num_classes, self.arch = task_spec.name, method.name, k, arch
        self.depth_output = task_spec.head_output == "depth"
        self.max_depth = float(max_depth)
        self.upsample_mode, self.attention_mode = upsample, attention
        self.final_mbu = bool(final_mbu)
        cd = int(decoder_channels)
        branches = UPSAMPLE_MODES[upsample]

        def up(scale: int) -> MultiBranchUpsample:
            return MultiBranchUpsample(cd, cd, scale, branches, gate=gate, binary=binary)  # type: ignore[arg-type]

        def unit(cin: int, cout: int, ksize: int) -> DingUnit:
            return DingUnit(cin, cout, ksize, 1, binary=binary)

        self.encoder = ResNet(
            blocks, method, widths, in_chans, block="ding", down_shortcut=shortcut
        )
        c1, c2, c3, c4 = self.encoder.out_channels
        self.lateral = nn.ModuleList([unit(c, cd, 1) for c in (c1, c2, c3, c4)])
        self.up16, self.up8, self.up4 = up(2), up(2), up(2)
        self.fuse16, self.fuse8, self.fuse4 = unit(cd, cd, 3), unit(cd, cd, 3), unit(cd, cd, 3)
        self.attention: nn.Module
        if attention == "binary":
            self.attention = BinaryDualAttention(
                cd, grid, binary_values=binary_values and binary, binary=binary
            )
        elif attention == "fp":
            self.attention = nn.Sequential(FullPrecisionDualAttention(cd), unit(cd, cd, 3))
        else:
            self.attention = unit(cd, cd, 3)
        self.up_final = up(4) if self.final_mbu else None
        self.classifier = nn.Conv2d(cd, k, 1, bias=True)

    def decode(self, feats: list[Tensor]) -> Tensor:
        """Decoder features at 1/4 (or full size with ``final_mbu``)."""
        e1, e2, e3, e4 = feats
        d32 = self.lateral[3](e4)
        d16 = self.fuse16(self.up16(d32) + self.lateral[2](e3))
        d8 = self.attention(self.fuse8(self.up8(d16) + self.lateral[1](e2)))
        d4 = self.fuse4(self.up4(d8) + self.lateral[0](e1))
        return self.up_final(d4) if self.up_final is not None else d4

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K, H, W) for seg; (B, 1, H, W) logits for road/saliency; metres for depth."""
        if x.dim() != 4:
            raise ValueError(f"{self.arch}: expected an NCHW input, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"{self.arch}: input height and width must be multiples of 32, "
                             f"got {h}x{w}")
        y = self.classifier(self.decode(self.encoder(x)))
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        if self.depth_output:
            y = torch.sigmoid(y) * self.max_depth
        return y

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, task={self.task!r}, method={self.method!r}, "
                f"upsample={self.upsample_mode!r}, attention={self.attention_mode!r}")


def _scaled(widths: Sequence[int], width: float) -> tuple[int, ...]:
    if not width > 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return tuple(max(8, round(w * width)) for w in widths)


@register_model("ding_resnet18")
def _ding_resnet18(
    task: str,
    num_classes: int,
    method: MethodSpec,
    max_depth: float,
    width: float = 1.0,
    **kw: Any,
) -> DingNet:
    widths = _scaled((64, 128, 256, 512), width)
    return DingNet(task, num_classes, method, widths=widths, blocks=(2, 2, 2, 2),
                   decoder_channels=_scaled((128,), width)[0], max_depth=max_depth,
                   arch="ding_resnet18", **kw)


@register_model("ding_resnet_tiny")
def _ding_resnet_tiny(
    task: str, num_classes: int, method: MethodSpec, max_depth: float, **kw: Any
) -> DingNet:
    kw.setdefault("grid", (4, 4))
    return DingNet(task, num_classes, method, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1),
                   decoder_channels=32, max_depth=max_depth, arch="ding_resnet_tiny", **kw)


def ding_resnet18(
    task: str = "seg",
    num_classes: int | None = None,
    method: str | MethodSpec = "ding",
    max_depth: float = 10.0,
    width: float = 1.0,
    **kw: Any,
) -> nn.Module:
    """``ding`` ResNet-18 model (D4); ``width`` scales every channel count (encoder 64..512,
    decoder 128). Options of :class:`DingNet` (``upsample``, ``attention``, ``grid``, ``gate``,
    ``binary_values``, ``shortcut``, ``final_mbu``) pass through.

    ``create_model("ding_resnet18", ...)`` with the ``ding`` method by default."""
    return create_model("ding_resnet18", task=task, num_classes=num_classes, method=method,
                        max_depth=max_depth, width=width, **kw)


def ding_resnet_tiny(
    task: str = "seg",
    num_classes: int | None = None,
    method: str | MethodSpec = "ding",
    max_depth: float = 10.0,
    **kw: Any,
) -> nn.Module:
    """Small CPU preset of ``ding_resnet18`` for tests and the ablation: widths 16/32/64/128,
    one basic block per stage, decoder width 32, attention grid 4x4.

    ``create_model("ding_resnet_tiny", ...)`` with the ``ding`` method by default."""
    return create_model("ding_resnet_tiny", task=task, num_classes=num_classes, method=method,
                        max_depth=max_depth, **kw)
