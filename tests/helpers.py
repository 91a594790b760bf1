"""Small helpers shared by several test files (imported as ``helpers``: pytest puts ``tests/``
on ``sys.path``)."""

from __future__ import annotations

import torch
from torch import nn

#: a bidense UperNet-ConvNeXt-micro on 8 + 4 synthetic 32x32 scenes for one epoch: the smallest
#: run that exercises the whole training loop
TINY_SEG = [
    "name=tiny",
    "device=cpu",
    "model.name=upernet_convnext_micro",
    "model.method=bidense",
    "data.dataset=synthetic",
    "data.batch_size=4",
    "data.kwargs={size: [32, 32]}",
    "data.train_kwargs={num_images: 8}",
    "data.val_kwargs={num_images: 4}",
    "train.epochs=1",
    "train.progress=off",
]


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, drawn from torch's global RNG.

    Explicit random values rather than a few train-mode forwards, which leave degenerate
    statistics (exact cancellations around 0 that float rounding decides).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.05)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
