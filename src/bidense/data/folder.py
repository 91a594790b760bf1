"""A generic image/label folder for any task."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import DenseDataset, Sample
from .errors import DatasetError
from .io import (
    IMAGE_EXTENSIONS,
    check_exists,
    find_by_stem,
    read_binary_mask,
    read_depth_png,
    read_label,
    read_rgb,
)

__all__ = ["ImageLabelFolder"]


class ImageLabelFolder(DenseDataset):
    """Images in ``root/image_dir`` paired by stem with labels in ``root/label_dir``.

    If ``root/image_dir/<split>`` exists the split subfolders are used (``images/train`` with
    ``labels/train``). Labels by task: ``seg`` one-channel PNG class ids (``num_classes`` required,
    values checked, ``ignore_index`` allowed); ``depth`` uint16 PNG / ``depth_scale`` or ``.npy``
    float metres; ``saliency`` mask > 128; ``road`` one-channel PNG with 0 = not road, any other
    value = road, except ``ignore_index`` (255) = don't care. ``label_suffix`` is stripped from
    label stems (e.g. ``"_mask"``).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", task: str = "seg",
                 transform: Callable[..., Any] | None = None, image_dir: str = "images",
                 label_dir: str = "labels", num_classes: int | None = None,
                 ignore_index: int = 255, class_names: Sequence[str] | None = None,
                 depth_scale: float = 1000.0, label_suffix: str = "",
                 image_exts: Sequence[str] = IMAGE_EXTENSIONS,
                 label_exts: Sequence[str] = (".png", ".npy", ".tif", ".tiff", ".bmp"),
                 seed: int | None = None) -> None:
        super().__init__(split, task, transform, seed)
        if task == "seg" and num_classes is None:
            raise ValueError("ImageLabelFolder(task='seg') needs num_classes")
        self.root = check_exists(root, "dataset root")
        self.num_classes = num_classes if task == "seg" else 1
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names) if class_names is not None else None
        self.depth_scale = depth_scale
        img_dir, lab_dir = self.root / image_dir, self.root / label_dir
        if (img_dir / split).is_dir():
            img_dir, lab_dir = img_dir / split, lab_dir / split
        images = find_by_stem(img_dir, image_exts)
        labels = find_by_stem(lab_dir, label_exts, suffix=label_suffix)
        missing = sorted(set(images) - set(labels))
        if missing:
            raise DatasetError(f"{lab_dir}: no label for image {images[missing[0]]} "
                               f"({len(missing)} image(s) without a label)")
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise DatasetError(f"{img_dir}: no image for label {labels[orphans[0]]} "
                               f"({len(orphans)} label(s) without an image)")
        self.samples = [Sample(k, images[k], labels[k]) for k in sorted(images)]
        self._require_samples(img_dir)

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return read_rgb(sample.image)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        path = Path(sample.target)  # type: ignore[arg-type]
        if path.suffix == ".npy":
            try:
                arr = np.load(path)
            except (ValueError, OSError) as exc:
                raise DatasetError(f"{path}: unreadable .npy ({exc})") from None
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim != 2:
                raise DatasetError(f"{path}: label array has shape {arr.shape}, expected (H, W)")
            return arr.astype(np.float32 if self.task != "seg" else np.int64)
        if self.task == "seg":
            return read_label(path)
        if self.task == "depth":
            return read_depth_png(path, self.depth_scale)
        if self.task == "saliency":
            return read_binary_mask(path)
        lab = read_label(path)
        out = np.where(lab == self.ignore_index, self.ignore_index, lab > 0).astype(np.float32)
        return out
