"""Metric registry: the names :attr:`bidense.tasks.TaskSpec.metric` gives -> metric classes."""

from __future__ import annotations

from typing import Any

from .base import Metric
from .depth import DepthMetric
from .road import RoadMetric
from .saliency import SaliencyMetric
from .segmentation import SegmentationMetric

__all__ = ["METRICS", "build_metric"]

METRICS: dict[str, type[Metric]] = {
    "seg": SegmentationMetric,
    "depth": DepthMetric,
    "saliency": SaliencyMetric,
    "road": RoadMetric,
}


def build_metric(name: str, **kwargs: Any) -> Metric:
    """Construct metric ``name`` (a :data:`METRICS` key), passing ``kwargs`` on; a task's metric
    is ``build_metric(get_task(t).metric, ...)``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {sorted(METRICS)}")
    return METRICS[name](**kwargs)
