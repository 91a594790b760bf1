"""Salient-object datasets (ECSSD, DUTS, any image/mask folder pair) and KITTI Road."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import DenseDataset, Sample, resolve_root
from .errors import DatasetError
from .io import (
    IMAGE_EXTENSIONS,
    find_by_stem,
    pair_by_stem,
    read_binary_mask,
    read_rgb,
    report_problem,
)

__all__ = ["SaliencyFolder", "ECSSD", "DUTS", "KITTIRoad", "kitti_road_gt_to_mask"]


class SaliencyFolder(DenseDataset):
    """``root/<image_dir>/*`` + ``root/<mask_dir>/*`` (default ``images``, ``masks``) by stem.

    Folder names and extensions are configurable because SOD repositories rename them freely
    (``Imgs``, ``GT``, ``mask``, ...). Masks are binarised as ``mask > 128`` (PySODMetrics). With
    ``strict`` (default) an image without a mask is an error; otherwise it is dropped.
    """

    num_classes = 1

    def __init__(self, root: str | os.PathLike, image_dir: str = "images",
                 mask_dir: str = "masks", split: str = "test",
                 transform: Callable[..., Any] | None = None,
                 image_exts: Sequence[str] = IMAGE_EXTENSIONS,
                 mask_exts: Sequence[str] = (".png", ".bmp", ".jpg"), mask_suffix: str = "",
                 strict: bool = True, seed: int | None = None) -> None:
        super().__init__(split, "saliency", transform, seed)
        self.root = Path(root)
        img_dir, msk_dir = self.root / image_dir, self.root / mask_dir
        images = find_by_stem(img_dir, image_exts)
        masks = find_by_stem(msk_dir, mask_exts, suffix=mask_suffix)
        keys = (pair_by_stem(images, masks, img_dir, msk_dir, "mask", orphans=False) if strict
                else sorted(images.keys() & masks.keys()))
        self.samples = [Sample(k, images[k], masks[k]) for k in keys]
        self._require_samples(img_dir)

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return read_rgb(sample.image)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        return read_binary_mask(sample.target)


class ECSSD(SaliencyFolder):
    """ECSSD (1,000 images): ``images/*.jpg`` + ``ground_truth_mask/*.png`` by default."""

    def __init__(self, root: str | os.PathLike, split: str = "test",
                 transform: Callable[..., Any] | None = None, image_dir: str = "images",
                 mask_dir: str = "ground_truth_mask", **kw: Any) -> None:
        super().__init__(resolve_root(root, "ECSSD"), image_dir, mask_dir, split, transform, **kw)


class DUTS(SaliencyFolder):
    """DUTS: ``DUTS-TR/DUTS-TR-{Image,Mask}`` (train) or ``DUTS-TE/DUTS-TE-{Image,Mask}`` (test)."""

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[..., Any] | None = None, image_dir: str | None = None,
                 mask_dir: str | None = None, **kw: Any) -> None:
        tag = {"train": "TR", "test": "TE", "TR": "TR", "TE": "TE"}.get(split)
        if tag is None:
            raise ValueError(f"DUTS split must be 'train' or 'test', got {split!r}")
        base = resolve_root(root, f"DUTS/DUTS-{tag}", f"DUTS-{tag}")
        super().__init__(base, image_dir or f"DUTS-{tag}-Image", mask_dir or f"DUTS-{tag}-Mask",
                         split, transform, **kw)


def kitti_road_gt_to_mask(gt: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """KITTI Road GT colours -> float32 mask: road (blue > 0, magenta) = 1, red = 0, black = ignore.

    Black (0, 0, 0) marks "don't care" and becomes ``ignore_index``.
    """
    gt = np.asarray(gt)
    if gt.ndim != 3 or gt.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) colour GT, got shape {gt.shape}")
    out = (gt[..., 2] > 0).astype(np.float32)
    out[(gt[..., :3] == 0).all(axis=-1)] = float(ignore_index)
    return out


class KITTIRoad(DenseDataset):
    """``data_road/{training,testing}/image_2/*.png`` + ``training/gt_image_2/<cat>_road_*.png``.

    KITTI Road, perspective view. Images ``training/image_2/{um,umm,uu}_0000NN.png``, GT
    ``training/gt_image_2/{cat}_road_0000NN.png`` (magenta road, red non-road, black don't care
    -> 255). KITTI gives no test GT, so validation is a seeded carve of training: a
    ``val_fraction`` of each category (``seed``) goes to ``split="val"``, the rest to ``"train"``;
    ``"trainval"`` is all 289 images, ``"test"`` the unlabeled test images (``has_target``
    False). Target: float32 {0, 1} with 255 = don't care; ``num_classes = 1`` (one road logit).
    """

    num_classes = 1
    class_names = ("road",)
    CATEGORIES: tuple[str, ...] = ("um", "umm", "uu")

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[..., Any] | None = None, val_fraction: float = 0.2,
                 split_seed: int = 0, categories: Sequence[str] = CATEGORIES,
                 seed: int | None = None) -> None:
        super().__init__(split, "road", transform, seed)
        if split not in ("train", "val", "trainval", "test"):
            raise ValueError(f"KITTIRoad split must be train/val/trainval/test, got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = resolve_root(root, "data_road")
        sub = "testing" if split == "test" else "training"
        img_dir = self.root / sub / "image_2"
        images = find_by_stem(img_dir, (".png",))
        gt_dir = self.root / "training" / "gt_image_2"
        chosen: list[Sample] = []
        for cat in categories:
            names = sorted(k for k in images if k.rsplit("_", 1)[0] == cat)
            if split in ("train", "val"):
                # Per-category carve so val mixes um/umm/uu like the full set.
                rng = np.random.default_rng([split_seed, len(cat), sum(map(ord, cat))])
                perm = rng.permutation(len(names))
                n_val = int(round(val_fraction * len(names)))
                keep = perm[:n_val] if split == "val" else perm[n_val:]
                names = [names[i] for i in sorted(keep)]
            for k in names:
                gt = None
                if split != "test":
                    idx = k.rsplit("_", 1)[1]
                    gt = gt_dir / f"{cat}_road_{idx}.png"
                    if not gt.exists():
                        report_problem(DatasetError(
                            f"{gt}: road GT for image {images[k]} not found"))
                        continue
                chosen.append(Sample(k, images[k], gt))
        self.samples = chosen
        self._require_samples(img_dir)

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return read_rgb(sample.image)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray | None:  # noqa: D102
        if sample.target is None:
            return None
        return kitti_road_gt_to_mask(read_rgb(sample.target), self.ignore_index)
