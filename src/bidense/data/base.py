"""Base class shared by every dataset: sample list, validation, seeded transforms, tensors."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import tasks
from .errors import DatasetError
from .io import check_finite_depth, check_same_size, check_seg_labels
from .transforms import JointTransform, image_to_tensor, target_to_tensor

__all__ = ["Sample", "DenseDataset", "resolve_root"]


@dataclass
class Sample:
    """One dataset item on disk: a name, an image path, a target path (or None) and extras."""

    name: str
    image: Path | None
    target: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_root(root: str | os.PathLike, *candidates: str) -> Path:
    """Return the first ``root/candidate`` that is a directory, else ``root`` itself.

    Lets users pass either the dataset folder or its parent (``.../VOCdevkit`` or
    ``.../VOCdevkit/VOC2012``).
    """
    r = Path(root).expanduser()
    for c in candidates:
        if (r / c).is_dir():
            return r / c
    return r


class DenseDataset(Dataset):
    """A dense-prediction dataset returning ``{"image", "target", "name", "has_target"}``.

    - ``image``: float32 tensor ``(3, H, W)`` (in [0, 1] without a transform; normalised by the
      usual presets);
    - ``target``: int64 ``(H, W)`` class ids with ``ignore_index`` for ``seg``; float32
      ``(1, H, W)`` metres with 0 = invalid for ``depth``; float32 ``(1, H, W)`` in {0, 1} for
      ``saliency``; float32 ``(1, H, W)`` in {0, 1} with 255 = don't care for ``road``;
    - ``name``: a stable sample id; ``has_target``: False for items without ground truth (their
      target is all ignore / all invalid).

    ``transform`` is a :mod:`bidense.data.transforms` pipeline called as
    ``transform(image, target, rng)``; any other callable is called as ``transform(image, target)``.
    Augmentation randomness is per item: with ``seed`` set, item ``i`` in epoch ``e`` uses
    ``numpy.random.default_rng([seed, e, i])`` (identical for any number of DataLoader workers;
    call :meth:`set_epoch` every epoch); with ``seed=None`` each process draws from a generator
    seeded by ``torch.initial_seed()``, which DataLoader varies per worker and epoch.

    Subclasses fill ``self.samples`` and implement :meth:`read_image` / :meth:`read_target`.
    """

    task: str = "seg"
    num_classes: int | None = None
    ignore_index: int = 255
    class_names: tuple[str, ...] | None = None

    def __init__(self, split: str, task: str, transform: Callable[..., Any] | None = None,
                 seed: int | None = None) -> None:
        tasks.get_task(task)  # an unknown task fails here, not at the first item
        self.split = split
        self.task = task
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.samples: list[Sample] = []
        self._gen: np.random.Generator | None = None
        self._gen_key: tuple[int, int] | None = None

    @property
    def spec(self) -> tasks.TaskSpec:
        """The task's entry in :data:`bidense.tasks.TASKS`."""
        return tasks.get_task(self.task)

    # -- to implement -------------------------------------------------------------------------
    def read_image(self, sample: Sample) -> np.ndarray:
        """Return the ``(H, W, 3)`` uint8 image of ``sample``."""
        raise NotImplementedError

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray | None:
        """Return the mapped ``(H, W)`` target of ``sample`` or None when there is no GT."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _require_samples(self, where: object) -> None:
        if not self.samples:
            raise DatasetError(f"{where}: empty split {self.split!r} (no samples found)")

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (used when ``seed`` is set)."""
        self.epoch = int(epoch)

    def empty_target(self, shape: Sequence[int]) -> np.ndarray:
        """Target standing in for missing GT: all ignore (seg/road) or all 0 (depth/saliency),
        the task's ``target_fill`` in its ``target_dtype``."""
        fill = self.spec.fill_value(self.ignore_index)
        return np.full(tuple(shape), fill, dtype=self.spec.target_dtype)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Read and validate item ``index`` before transforms: ``(image, target, has_target)``."""
        sample = self.samples[index]
        image = self.read_image(sample)
        target = self.read_target(sample, image)
        where = sample.target if sample.target is not None else sample.image
        if target is None:
            return image, self.empty_target(image.shape[:2]), False
        check_same_size(image, target, sample.image, where)
        if self.spec.target_check is not None:
            _TARGET_CHECKS[self.spec.target_check](self, target, where)
        return image, target, True

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng([self.seed, self.epoch, index])
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), -1 if info is None else info.id)
        if self._gen is None or self._gen_key != key:
            self._gen = np.random.default_rng([torch.initial_seed() % (2**63), key[1] + 1])
            self._gen_key = key
        return self._gen

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image, target, has_target = self.load_raw(index)
        if self.transform is not None:
            if isinstance(self.transform, JointTransform):
                image, target = self.transform(image, target, self._rng(index))
            else:
                image, target = self.transform(image, target)
        if not isinstance(image, torch.Tensor):
            image = image_to_tensor(np.asarray(image))
        if not isinstance(target, torch.Tensor):
            target = target_to_tensor(np.asarray(target), self.task)
        return {"image": image, "target": target, "name": self.samples[index].name,
                "has_target": has_target}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, task={self.task!r}, "
                f"n={len(self)}, num_classes={self.num_classes})")


def _check_labels(dataset: DenseDataset, target: np.ndarray, where: object) -> None:
    if dataset.num_classes is not None:
        check_seg_labels(target, dataset.num_classes, dataset.ignore_index, where)


def _check_depth(dataset: DenseDataset, target: np.ndarray, where: object) -> None:
    check_finite_depth(target, where)


#: ``TaskSpec.target_check`` -> ``check(dataset, target, where)``, raising :class:`DatasetError`:
#: class ids in range (or the ignore index) when the dataset knows its class count; finite depth
_TARGET_CHECKS: dict[str, Callable[[DenseDataset, np.ndarray, object], None]] = {
    "labels": _check_labels,
    "finite": _check_depth,
}
