"""The task table: one entry per dense-prediction task, read by data, models, engine and CLI.

A task is a *name* (``seg``, ``depth``, ``saliency``, ``road``). Everything that differs between
tasks is a field of its :class:`TaskSpec` here, never an ``if task == ...`` branch elsewhere:

=========  =================  =========  ==========  ===========  =============  ============
task       head output        loss       metric      postprocess  headline       picture
=========  =================  =========  ==========  ===========  =============  ============
seg        K logits           seg        seg         argmax       mIoU (max)     labels
depth      1 map, sigmoid x   silog      depth       identity     abs_rel (min)  depth
           max_depth (metres)
saliency   1 logit map        saliency   saliency    sigmoid      max_f (max)    probability
road       1 logit map        road       road        sigmoid      max_f (max)    probability
=========  =================  =========  ==========  ===========  =============  ============

The loss, metric and postprocess columns are registry names: :func:`bidense.losses.build_loss`,
:func:`bidense.metrics.build_metric` and :func:`postprocess` resolve them. This module imports
nothing from bidense and not torch, so every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TASKS", "TaskSpec", "get_task", "head_channels", "lower_is_better", "postprocess"]


@dataclass(frozen=True)
class TaskSpec:
    """What one task is, in every layer.

    Attributes:
        name: the task's name (``model.task`` in configs).
        title: human-readable name for reports and pages.
        multiclass: True when the model predicts ``num_classes`` logits and targets are
            ``(H, W)`` class ids (seg); else one output channel and ``(1, H, W)`` target maps.
        head_hidden: hidden channels of the dense head (``None``: the decoder's width).
        head_output: ``"logits"`` or ``"depth"`` (sigmoid x ``max_depth``, metres).
        target_dtype: dtype of the target tensor (``int64`` labels or ``float32`` maps).
        target_fill: what padded/rotated target pixels hold: ``"ignore"`` (the ignore index) or
            ``0.0`` (depth 0 = invalid, saliency background).
        target_check: how a dataset validates a loaded target: ``"labels"`` (class ids below
            ``num_classes`` or the ignore index), ``"finite"`` (no NaN/inf depth) or ``None``.
        scale_range: the training preset's random-scale range (``None``: no scaling, depth).
        rotation: the training preset's random rotation in degrees, always applied (``None``:
            only when the caller asks for one).
        jitter: whether the training preset jitters brightness by default.
        brightness: that jitter's brightness range.
        loss: loss registry name (:func:`bidense.losses.build_loss`).
        metric: metric registry name (:func:`bidense.metrics.build_metric`).
        postprocess: ``"argmax"``, ``"identity"`` or ``"sigmoid"``: model output -> what the
            metric and pictures take (class map, depth, probability).
        headline: the metric that ranks runs (``best.pt``, reports).
        headline_mode: ``"max"`` or ``"min"``.
        picture: ``"labels"`` (class overlay), ``"depth"`` (colour map) or ``"probability"``
            (heat-map overlay).
        raw_suffix: file suffix of the raw output written by ``predict``.
    """

    name: str
    title: str
    multiclass: bool
    head_hidden: int | None
    head_output: str
    target_dtype: str
    target_fill: str | float
    target_check: str | None
    scale_range: tuple[float, float] | None
    rotation: float | None
    jitter: bool
    brightness: tuple[float, float]
    loss: str
    metric: str
    postprocess: str
    headline: str
    headline_mode: str
    picture: str
    raw_suffix: str

    def fill_value(self, ignore_index: int = 255) -> float:
        """The fill value for padded target pixels."""
        return float(ignore_index) if self.target_fill == "ignore" else float(self.target_fill)


TASKS: dict[str, TaskSpec] = {
    "seg": TaskSpec(
        name="seg", title="semantic segmentation", multiclass=True, head_hidden=None,
        head_output="logits",
        target_dtype="int64", target_fill="ignore", target_check="labels",
        scale_range=(0.5, 2.0), rotation=None, jitter=False, brightness=(0.9, 1.1),
        loss="seg", metric="seg", postprocess="argmax", headline="mIoU", headline_mode="max",
        picture="labels", raw_suffix="label.png",
    ),
    "depth": TaskSpec(
        name="depth", title="monocular depth", multiclass=False, head_hidden=32,
        head_output="depth",
        target_dtype="float32", target_fill=0.0, target_check="finite",
        scale_range=None, rotation=2.5, jitter=True, brightness=(0.75, 1.25),
        loss="silog", metric="depth", postprocess="identity", headline="abs_rel",
        headline_mode="min", picture="depth", raw_suffix="depth.npy",
    ),
    "saliency": TaskSpec(
        name="saliency", title="salient-object segmentation", multiclass=False, head_hidden=32,
        head_output="logits",
        target_dtype="float32", target_fill=0.0, target_check=None,
        scale_range=(0.75, 1.25), rotation=None, jitter=True, brightness=(0.9, 1.1),
        loss="saliency", metric="saliency", postprocess="sigmoid", headline="max_f",
        headline_mode="max", picture="probability", raw_suffix="prob.npy",
    ),
    "road": TaskSpec(
        name="road", title="road segmentation", multiclass=False, head_hidden=32,
        head_output="logits",
        target_dtype="float32", target_fill="ignore", target_check=None,
        scale_range=(0.75, 1.5), rotation=None, jitter=True, brightness=(0.9, 1.1),
        loss="road", metric="road", postprocess="sigmoid", headline="max_f",
        headline_mode="max", picture="probability", raw_suffix="prob.npy",
    ),
}

#: metrics (any task) where a smaller value is better; used when a config names its own
#: ``train.best_metric``
_LOWER_IS_BETTER = frozenset({"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "mae"})


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` of ``task`` (a spec is returned unchanged)."""
    if isinstance(task, TaskSpec):
        return task
    spec = TASKS.get(task) if isinstance(task, str) else None
    if spec is None:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return spec


def head_channels(task: str | TaskSpec, num_classes: int | None) -> int:
    """Validate ``num_classes`` for ``task`` and return the model's output channels."""
    spec = get_task(task)
    if spec.multiclass:
        if num_classes is None:
            raise ValueError(f"task {spec.name!r} needs num_classes (e.g. 151 for ADE20K)")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        return int(num_classes)
    if num_classes not in (None, 1):
        raise ValueError(f"task {spec.name!r} predicts one channel; got num_classes={num_classes}")
    return 1


def lower_is_better(metric: str) -> bool:
    """True for error metrics (abs_rel, rmse, mae, ...), False for scores (mIoU, F, ...)."""
    return metric in _LOWER_IS_BETTER


def postprocess(out: Any, task: str | TaskSpec, channel_dim: int = 1) -> Any:
    """Model output -> what metrics and pictures take, per the task's ``postprocess`` entry.

    Works on torch tensors and numpy arrays alike (``argmax`` over ``channel_dim``; ``sigmoid``
    as ``1 / (1 + exp(-x))``).
    """
    kind = get_task(task).postprocess
    return _POSTPROCESS[kind](out, channel_dim)


def _argmax(out: Any, dim: int) -> Any:
    return out.argmax(dim) if hasattr(out, "dim") else out.argmax(axis=dim)


def _sigmoid(out: Any, dim: int) -> Any:
    if hasattr(out, "sigmoid"):
        return out.sigmoid()
    return (1.0 / (1.0 + np.exp(-np.asarray(out, np.float64)))).astype(np.float32)


_POSTPROCESS = {"argmax": _argmax, "identity": lambda out, dim: out, "sigmoid": _sigmoid}
