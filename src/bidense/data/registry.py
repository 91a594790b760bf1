"""Dataset factory: ``build_dataset(name, root, split, ...)`` and ``list_datasets()``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import tasks
from .base import DenseDataset
from .depth import KITTIDepth, NYUv2, NYUv2BTS, NYUv2Seg40
from .folder import ImageLabelFolder
from .saliency import DUTS, ECSSD, KITTIRoad, SaliencyFolder
from .segmentation import ADE20K, VOC2012, Cityscapes
from .synthetic import SyntheticScenes

__all__ = ["DATASETS", "build_dataset", "canonical_name", "list_datasets"]

_ALL_TASKS = tuple(tasks.TASKS)

#: name -> (class, tasks it serves; the first is the default)
DATASETS: dict[str, tuple[type[DenseDataset], tuple[str, ...]]] = {
    "synthetic": (SyntheticScenes, _ALL_TASKS),
    "ade20k": (ADE20K, ("seg",)),
    "cityscapes": (Cityscapes, ("seg",)),
    "voc2012": (VOC2012, ("seg",)),
    "nyuv2": (NYUv2, ("depth", "seg")),
    "nyuv2_bts": (NYUv2BTS, ("depth",)),
    "nyuv2_40": (NYUv2Seg40, ("seg",)),
    "kitti_depth": (KITTIDepth, ("depth",)),
    "ecssd": (ECSSD, ("saliency",)),
    "duts": (DUTS, ("saliency",)),
    "saliency_folder": (SaliencyFolder, ("saliency",)),
    "kitti_road": (KITTIRoad, ("road",)),
    "folder": (ImageLabelFolder, _ALL_TASKS),
}
_ALIASES = {"ade": "ade20k", "voc": "voc2012", "pascal_voc": "voc2012", "nyu": "nyuv2",
            "kitti": "kitti_depth", "kitti_eigen": "kitti_depth", "sod": "saliency_folder",
            "road": "kitti_road", "kittiroad": "kitti_road"}


def list_datasets() -> dict[str, tuple[str, ...]]:
    """Names accepted by :func:`build_dataset`, each with the tasks it serves."""
    return {k: v[1] for k, v in DATASETS.items()}


def canonical_name(name: str) -> str:
    """The :data:`DATASETS` key of ``name`` (case, ``-`` and aliases such as ``voc`` resolved)."""
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return key


def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                  task: str | None = None, transform: Callable[..., Any] | None = None,
                  **kw: Any) -> DenseDataset:
    """Build dataset ``name`` (see :func:`list_datasets`) reading ``root`` for ``split``.

    ``task`` defaults to the dataset's first task and must be one it serves; extra keyword
    arguments go to the dataset class. ``root`` may be None only for ``synthetic`` (cache dir).
    ``seed`` always means the *augmentation* seed; for ``synthetic`` it is passed on as
    ``aug_seed`` and the scene-generation seed is ``data_seed`` (default 0).
    """
    key = canonical_name(name)
    cls, served = DATASETS[key]
    task = task or served[0]
    if task not in served:
        raise ValueError(f"dataset {key!r} serves tasks {served}, not {task!r}")
    if root is None and key != "synthetic":
        raise ValueError(f"dataset {key!r} needs a root folder")
    if key in ("synthetic", "nyuv2", "folder"):
        kw["task"] = task
    if key == "synthetic":
        kw["aug_seed"] = kw.pop("seed", None)
        kw["seed"] = kw.pop("data_seed", 0)
    return cls(root, split=split, transform=transform, **kw)
