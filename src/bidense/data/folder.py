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
    pair_by_stem,
    read_binary_mask,
    read_depth_png,
    read_label,
    read_rgb,
)

__all__ = ["ImageLabelFolder", "split_folders"]


def split_folders(root: Path, split: str, image_dir: str = "images",
                  label_dir: str = "labels") -> tuple[Path, Path]:
    """The ``(image folder, label folder)`` of ``split`` under ``root``.

    Images-first ``root/image_dir/<split>`` or split-first ``root/<split>/image_dir`` when that
    folder exists (both existing is a :class:`DatasetError`: which one is meant is not clear),
    else the flat ``root/image_dir``. A split folder wins over flat files beside it.
    """
    layouts = [(root / image_dir / split, root / label_dir / split),
               (root / split / image_dir, root / split / label_dir)]
    found = [pair for pair in layouts if pair[0].is_dir()]
    if len(found) > 1:
        raise DatasetError(f"{root}: both {found[0][0]} and {found[1][0]} exist; keep one "
                           f"layout for split {split!r}")
    return found[0] if found else (root / image_dir, root / label_dir)


class ImageLabelFolder(DenseDataset):
    """``root/images[/<split>]`` or ``root/<split>/images``, paired by stem with ``labels`` alike.

    Three layouts (:func:`split_folders`): images-first ``root/image_dir/<split>`` with
    ``root/label_dir/<split>``, or split-first ``root/<split>/image_dir`` with
    ``root/<split>/label_dir`` (both at once is an error); else flat ``root/image_dir`` with
    ``root/label_dir`` (the split is only a name). Labels by task: ``seg`` one-channel PNG class
    ids (``num_classes`` required, values checked, ``ignore_index`` allowed); ``depth`` uint16 PNG
    / ``depth_scale`` or ``.npy`` float metres; ``saliency`` mask > 128; ``road`` one-channel PNG
    with 0 = not road, any other value = road, except ``ignore_index`` (255) = don't care.
    ``label_suffix`` is stripped from label stems (e.g. ``"_mask"``).
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
        img_dir, lab_dir = split_folders(self.root, split, image_dir, label_dir)
        images = find_by_stem(img_dir, image_exts)
        labels = find_by_stem(lab_dir, label_exts, suffix=label_suffix)
        keys = pair_by_stem(images, labels, img_dir, lab_dir)
        self.samples = [Sample(k, images[k], labels[k]) for k in keys]
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
