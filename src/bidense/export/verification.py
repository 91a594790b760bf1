"""Check an exported ``.bdn`` file: the packed runtime's output against PyTorch eval."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from bidense.runtime import Runtime

__all__ = ["max_relative_error", "verify"]


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (relative to the reference output's scale)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(float(np.max(np.abs(b64))), 1e-30))


def verify(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor) -> float:
    """:func:`max_relative_error` of ``Runtime(path)(example_input)`` against ``model`` in eval
    mode on the same input (the model's train/eval mode is restored afterwards)."""
    was_training = model.training
    try:
        with torch.no_grad():
            reference = model.eval()(example_input).numpy()
    finally:
        model.train(was_training)
    got = Runtime(path)(example_input.numpy())
    return max_relative_error(got, reference)
