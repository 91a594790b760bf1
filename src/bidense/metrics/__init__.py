"""Streaming evaluation metrics for dense prediction (torch + numpy only).

Every metric has ``update(pred, target)``, ``compute() -> dict``, ``reset()``, ``merge(other)``
and ``all_reduce()`` (alias ``sync()``), which sums the tensor state over ``torch.distributed``
ranks when a process group is initialised and does nothing otherwise. Conventions are documented
in ``docs/metrics.md``. :func:`build_metric` constructs one by the name a task's
:class:`bidense.tasks.TaskSpec` gives.
"""

from .base import Metric
from .depth import DEPTH_KEYS, DepthMetric, crop_bounds, crop_mask
from .registry import METRICS, build_metric
from .road import RoadMetric
from .saliency import SaliencyMetric, e_measure, f_measure, s_measure, weighted_f_measure
from .segmentation import SegmentationMetric

__all__ = [
    "DEPTH_KEYS",
    "METRICS",
    "DepthMetric",
    "Metric",
    "RoadMetric",
    "SaliencyMetric",
    "SegmentationMetric",
    "build_metric",
    "crop_bounds",
    "crop_mask",
    "e_measure",
    "f_measure",
    "s_measure",
    "weighted_f_measure",
]
