"""Prediction heads shared by the dense decoders (bidense-method.md §8 "Heads").

All heads run at full input resolution on the decoder's ``in_channels`` (128) features:

* ``seg``: unit3x3(C->C) -> ReLU -> FP Conv2d(C->K, k1, bias); logits (B, K, H, W).
* ``depth``: unit3x3(C->32) -> ReLU -> FP Conv2d(32->1, k1) -> sigmoid -> x max_depth;
  depth in metres (B, 1, H, W).
* ``saliency`` / ``road``: as depth without the sigmoid; one logit map (B, 1, H, W).

A "unit" is the method's conv + BN (:meth:`MethodSpec.unit`); for fp32 it is Conv(no bias) + BN.
The final 1x1 conv is full precision for every method. Widths and outputs per task are entries of
the task table (:mod:`bidense.tasks`: ``head_hidden``, ``head_output``, :func:`head_channels`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bidense.tasks import get_task, head_channels

from .methods import FP32, MethodSpec


class DenseHead(nn.Module):
    """Task head: method unit3x3 -> ReLU -> FP 1x1 (-> sigmoid x max_depth for depth).

    The task's :class:`~bidense.tasks.TaskSpec` gives the hidden width (``head_hidden``; the
    input width when ``None``) and the output (``head_output == "depth"``: sigmoid x max_depth).

    Args:
        in_channels: input feature channels (128 in the reference).
        task: ``seg``, ``depth``, ``saliency`` or ``road``.
        num_classes: K for seg (ignored otherwise).
        method: the method's spec.
        max_depth: depth scale (10 for NYU, 80 for KITTI).
    """

    def __init__(
        self,
        in_channels: int,
        task: str = "seg",
        num_classes: int | None = None,
        method: MethodSpec = FP32,
        max_depth: float = 10.0,
    ) -> None:
        super().__init__()
        spec = get_task(task)
        out = head_channels(spec, num_classes)
        self.task = spec.name
        self.depth_output = spec.head_output == "depth"
        self.max_depth = float(max_depth)
        hidden = in_channels if spec.head_hidden is None else spec.head_hidden
        self.conv = method.unit(in_channels, hidden, 3, padding=1)
        self.act = nn.ReLU()
        self.cls = nn.Conv2d(hidden, out, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.cls(self.act(self.conv(x)))
        if self.depth_output:
            y = torch.sigmoid(y) * self.max_depth
        return y


class DenseModel(nn.Module):
    """Encoder -> decoder -> full-resolution head; the common shape of every zoo model.

    ``decoder`` maps the backbone's feature list to one map of ``head.in_channels`` channels at
    any stride; it is resized bilinearly (align_corners=True, as the reference) to the input size
    before the head.

    Attributes:
        task: ``seg``, ``depth``, ``saliency`` or ``road``.
        method: binarization method name.
        num_classes: output channels (K for seg, 1 otherwise).
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder: nn.Module,
        head: DenseHead,
        *,
        task: str,
        method: str,
        num_classes: int,
        arch: str = "",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.head = head
        self.task = task
        self.method = method
        self.num_classes = num_classes
        self.arch = arch

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K, H, W) for seg, depth in metres or logits (B, 1, H, W) otherwise."""
        if x.dim() != 4:
            raise ValueError(f"expected an NCHW input, got shape {tuple(x.shape)}")
        y = self.decoder(self.backbone(x))
        y = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.head(y)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, task={self.task!r}, method={self.method!r}"
