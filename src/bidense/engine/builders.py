"""Build model, data, loss and metric from a resolved config (the only place that maps config
keys onto library calls)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .config import DEFAULTS, HEADLINE_METRIC, _merge, yaml_load


def config_from_yaml(text: str) -> dict[str, Any]:
    """A checkpoint's stored YAML config merged over today's defaults."""
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, yaml_load(text) or {}, "", "checkpoint config")
    return cfg


def headline_metric(cfg: dict[str, Any]) -> tuple[str, str]:
    name, mode = HEADLINE_METRIC[cfg["model"]["task"]]
    chosen = cfg["train"]["best_metric"]
    if chosen:
        lower_better = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "mae"}
        return chosen, "min" if chosen in lower_better else "max"
    return name, mode


def build_model(cfg: dict[str, Any], num_classes: int | None) -> nn.Module:
    from ..models import create_model

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
    from ..data import transforms as T

    data, task = cfg["data"], cfg["model"]["task"]
    if not train:
        return T.eval_transforms(task)
    if data["crop_size"] is None:
        return T.Compose([T.RandomHorizontalFlip(), T.Normalize(), T.ToTensor()])
    return T.train_transforms(task, data["crop_size"], scale_range=data["scale_range"])


def build_dataset_split(cfg: dict[str, Any], split: str, train: bool):
    from ..data import build_dataset

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


def build_loss_fn(cfg: dict[str, Any], num_classes: int | None) -> nn.Module:
    from ..losses import build_loss

    task = cfg["model"]["task"]
    if task == "depth":
        return build_loss(task, min_depth=cfg["eval"]["min_depth"])
    return build_loss(task)


def build_metric(cfg: dict[str, Any], num_classes: int | None):
    from .. import metrics as M

    task, ev = cfg["model"]["task"], cfg["eval"]
    if task == "seg":
        if not num_classes:
            raise ValueError("segmentation needs model.num_classes (the dataset did not say)")
        return M.SegmentationMetric(num_classes, protocol=ev["protocol"])
    if task == "depth":
        max_depth = ev["max_depth"] or cfg["model"]["max_depth"]
        return M.DepthMetric(ev["min_depth"], max_depth, crop=ev["crop"])
    if task == "saliency":
        return M.SaliencyMetric()
    return M.RoadMetric()


def postprocess(out: torch.Tensor, task: str) -> torch.Tensor:
    """Model output -> what the metric takes: class map, depth, or probability."""
    if task == "seg":
        return out.argmax(dim=1)
    if task == "depth":
        return out
    return torch.sigmoid(out)
