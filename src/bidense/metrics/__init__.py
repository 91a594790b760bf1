"""Streaming evaluation metrics for dense prediction (torch + numpy only).

Every metric has ``update(pred, target)``, ``compute() -> dict``, ``reset()``, ``merge(other)``
and ``all_reduce()`` (alias ``sync()``), which sums the tensor state over ``torch.distributed``
ranks when a process group is initialised and does nothing otherwise. Conventions are documented
in ``docs/metrics.md``.
"""

from .base import Metric
from .depth import DEPTH_KEYS, DepthMetric, crop_bounds, crop_mask
from .road import RoadMetric
from .saliency import SaliencyMetric, e_measure, f_measure, s_measure
from .segmentation import SegmentationMetric

__all__ = [
    "DEPTH_KEYS",
    "DepthMetric",
    "Metric",
    "RoadMetric",
    "SaliencyMetric",
    "SegmentationMetric",
    "crop_bounds",
    "crop_mask",
    "e_measure",
    "f_measure",
    "s_measure",
]
