"""Build model, data, loss and metric from a resolved config (the only place that maps config
keys onto library calls). What differs per task comes from its :class:`bidense.tasks.TaskSpec`;
what differs per loss or metric is one entry in :data:`LOSS_KWARGS` / :data:`METRIC_KWARGS`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import losses, metrics, tasks
from ..data import build_dataset
from ..data import transforms as T
from ..models import create_model
from .config import DEFAULTS, _merge, yaml_load


def config_from_yaml(text: str) -> dict[str, Any]:
    """A checkpoint's stored YAML config merged over today's defaults."""
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, yaml_load(text) or {}, "", "checkpoint config")
    return cfg


def headline_metric(cfg: dict[str, Any]) -> tuple[str, str]:
    """``(metric name, "max" | "min")`` that ranks checkpoints: ``train.best_metric`` if set,
    else the task's headline."""
    chosen = cfg["train"]["best_metric"]
    if chosen:
        return chosen, "min" if tasks.lower_is_better(chosen) else "max"
    spec = tasks.get_task(cfg["model"]["task"])
    return spec.headline, spec.headline_mode


def build_model(cfg: dict[str, Any], num_classes: int | None) -> nn.Module:
    m = cfg["model"]
    kwargs = dict(m["kwargs"] or {})
    return create_model(
        m["name"],
        task=m["task"],
        num_classes=num_classes,
        method=m["method"],
        max_depth=m["max_depth"],
        **kwargs,
    )


def _transforms(cfg: dict[str, Any], train: bool):
    data, task = cfg["data"], cfg["model"]["task"]
    if not train:
        return T.eval_transforms(task)
    if data["crop_size"] is None:
        return T.Compose([T.RandomHorizontalFlip(), T.Normalize(), T.ToTensor()])
    return T.train_transforms(task, data["crop_size"], scale_range=data["scale_range"])


def build_dataset_split(cfg: dict[str, Any], split: str, train: bool):
    data, task = cfg["data"], cfg["model"]["task"]
    kwargs = dict(data["kwargs"] or {})
    kwargs.update(data["train_kwargs"] if train else data["val_kwargs"])
    ds = build_dataset(
        data["dataset"],
        data["root"],
        split,
        task=task,
        transform=_transforms(cfg, train),
        seed=cfg["seed"] if train else None,
        **kwargs,
    )
    limit = data["limit_train"] if train else data["limit_val"]
    if limit:
        ds = _Limited(ds, int(limit))
    return ds


def build_datasets(cfg: dict[str, Any]):
    data = cfg["data"]
    return (
        build_dataset_split(cfg, data["train_split"], train=True),
        build_dataset_split(cfg, data["val_split"], train=False),
    )


class _Limited(torch.utils.data.Dataset):
    """The first ``n`` items of a dataset (keeps its attributes visible)."""

    def __init__(self, base, n: int) -> None:
        self.base, self.n = base, min(n, len(base))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.base[i]

    def __getattr__(self, name: str):
        if name in ("base", "n"):
            raise AttributeError(name)
        return getattr(self.base, name)


#: loss name (``TaskSpec.loss``) -> its keyword arguments from the config; absent: none
LOSS_KWARGS: dict[str, Callable[[dict[str, Any], int | None], dict[str, Any]]] = {
    "silog": lambda cfg, num_classes: {"min_depth": cfg["eval"]["min_depth"]},
}


def _segmentation_metric_kwargs(cfg: dict[str, Any], num_classes: int | None) -> dict[str, Any]:
    if not num_classes:
        raise ValueError("segmentation needs model.num_classes (the dataset did not say)")
    return {"num_classes": num_classes, "protocol": cfg["eval"]["protocol"]}


def _depth_metric_kwargs(cfg: dict[str, Any], num_classes: int | None) -> dict[str, Any]:
    ev = cfg["eval"]
    return {"min_depth": ev["min_depth"], "max_depth": ev["max_depth"] or cfg["model"]["max_depth"],
            "crop": ev["crop"]}


#: metric name (``TaskSpec.metric``) -> its keyword arguments from the config; absent: none
METRIC_KWARGS: dict[str, Callable[[dict[str, Any], int | None], dict[str, Any]]] = {
    "seg": _segmentation_metric_kwargs,
    "depth": _depth_metric_kwargs,
}


def build_loss_fn(cfg: dict[str, Any], num_classes: int | None) -> nn.Module:
    """The task's training loss (:func:`bidense.losses.build_loss`)."""
    name = tasks.get_task(cfg["model"]["task"]).loss
    kwargs = LOSS_KWARGS[name](cfg, num_classes) if name in LOSS_KWARGS else {}
    return losses.build_loss(name, **kwargs)


def build_metric(cfg: dict[str, Any], num_classes: int | None) -> metrics.Metric:
    """The task's evaluation metric (:func:`bidense.metrics.build_metric`)."""
    name = tasks.get_task(cfg["model"]["task"]).metric
    kwargs = METRIC_KWARGS[name](cfg, num_classes) if name in METRIC_KWARGS else {}
    return metrics.build_metric(name, **kwargs)
