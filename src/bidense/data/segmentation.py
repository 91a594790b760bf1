"""Semantic segmentation datasets in their published on-disk layouts: ADE20K, Cityscapes, VOC."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import DenseDataset, Sample, resolve_root
from .errors import DatasetError, DatasetFileNotFoundError
from .io import (
    check_exists,
    find_by_stem,
    open_image,
    pair_by_stem,
    read_label,
    read_rgb,
    report_problem,
)

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "Cityscapes",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_TO_TRAIN",
    "cityscapes_label_to_train",
    "NYU40_CLASSES",
    "NYU894_TO_40",
    "nyu40_labels",
    "VOC2012",
    "VOC_CLASSES",
    "voc_palette",
]

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

#: Our labelId -> trainId table (ecosystem.md §5); every other id, including -1, maps to 255.
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


#: The NYUv2-40 classes of Gupta, Arbelaez and Malik (CVPR 2013), in their order (40-class id
#: k + 1 is index k here); names as in their ``classMapping40.mat``, spelling included.
NYU40_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)

#: Gupta et al.'s ``mapClass`` (``classMapping40.mat``): entry i is the 1-based NYU40 class of
#: the raw NYUv2 label i + 1 (the 894 ``names`` of ``nyu_depth_v2_labeled.mat``). Classes 1-37
#: each take exactly one raw label; 38-40 (other structure / furniture / prop) take the rest.
NYU894_TO_40: tuple[int, ...] = (
    40, 40, 3, 22, 5, 40, 12, 38, 40, 40, 2, 39, 40, 40, 26, 40, 24, 40, 7, 40, 1, 40, 40, 34, 38,
    29, 40, 8, 40, 40, 40, 40, 38, 40, 40, 14, 40, 38, 40, 40, 40, 15, 39, 40, 30, 40, 40, 39, 40,
    39, 38, 40, 38, 40, 37, 40, 38, 38, 9, 40, 40, 38, 40, 11, 38, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 38, 13, 40, 40, 6, 40, 23, 40, 39, 10, 16, 40, 40, 40, 40, 38, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 38, 40, 39, 40, 40, 40, 40, 39, 38, 40, 40, 40, 40, 40, 40, 18, 40, 40,
    19, 28, 33, 40, 40, 40, 40, 40, 40, 40, 40, 40, 38, 27, 36, 40, 40, 40, 40, 21, 40, 20, 35, 40,
    40, 40, 40, 40, 40, 40, 40, 38, 40, 40, 40, 4, 32, 40, 40, 39, 40, 39, 40, 40, 40, 40, 40, 17,
    40, 40, 25, 40, 39, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 38, 38, 40,
    40, 39, 40, 39, 40, 38, 39, 38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 38, 40, 40, 38,
    38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 38, 40, 40, 40, 40, 40, 39, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 39, 40, 40, 40, 38, 40, 40, 39, 40, 40, 38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 31, 40, 40, 40, 40, 40, 40,
    40, 38, 40, 40, 38, 39, 39, 40, 40, 40, 40, 40, 40, 40, 40, 40, 38, 40, 39, 40, 40, 39, 40, 40,
    40, 38, 40, 40, 40, 40, 40, 40, 40, 40, 38, 39, 40, 40, 40, 40, 40, 40, 38, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 38, 39, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 40, 38, 40,
    40, 40, 38, 40, 39, 40, 40, 40, 39, 39, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 39, 40, 40, 39, 39, 40, 40, 40, 40, 38, 40, 40, 38, 39,
    39, 40, 39, 40, 39, 38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 38, 40, 39, 40, 40,
    40, 40, 40, 39, 39, 40, 40, 40, 40, 40, 40, 39, 39, 40, 40, 38, 39, 39, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 39, 39, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 39, 40, 40, 39, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 38, 40, 40, 40, 40, 40, 40, 40, 39, 38, 39, 40, 38,
    39, 40, 39, 40, 39, 40, 40, 40, 40, 40, 40, 40, 40, 38, 40, 40, 40, 40, 40, 38, 40, 40, 39, 40,
    40, 40, 39, 40, 38, 40, 40, 40, 40, 40, 40, 40, 40, 38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 39, 38, 40, 40, 38, 40, 40, 38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 38, 40, 40, 38, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 38, 38, 38, 40, 40, 40, 38, 40, 40, 40, 38, 38, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 38, 40, 38, 39, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    39, 40, 39, 40, 40, 40, 40, 38, 38, 40, 40, 40, 38, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 39, 40, 40, 39, 40, 40, 39, 39, 40, 40, 40, 40, 40, 40, 40, 40, 39, 39, 39, 40, 40,
    40, 40, 39, 40, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 40,
    40, 40, 40, 40, 40, 40, 40, 40, 38, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 38, 40, 39, 40, 40,
    40, 40, 38, 40, 40, 40, 40, 40, 38, 40, 40, 40, 40, 40, 40, 40, 39, 40, 40, 40, 40, 40, 40, 40,
    40, 40, 39, 40, 40,
)  # fmt: skip


_NYU40_LUT = np.array((255,) + tuple(c - 1 for c in NYU894_TO_40), dtype=np.int64)


def nyu40_labels(raw_labels: np.ndarray) -> np.ndarray:
    """Raw NYUv2 labels (0 = unlabeled, 1..894) -> NYU40 class ids 0..39, unlabeled -> 255."""
    raw = np.asarray(raw_labels).astype(np.int64)
    bad = raw[(raw < 0) | (raw >= len(_NYU40_LUT))]
    if bad.size:
        raise DatasetError(f"NYUv2 label {int(bad[0])} outside [0, {len(NYU894_TO_40)}]")
    return _NYU40_LUT[raw]


def cityscapes_label_to_train(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes labelIds (0..33; -1 or 255 for the licence plate) to trainIds (255 ignore)."""
    lut = np.full(256, 255, dtype=np.int64)
    for k, v in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[k] = v
    ids = np.asarray(label_ids).astype(np.int64)
    return lut[np.where(ids < 0, 255, ids)]


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved, as in the VOC devkit): ``(n, 3)`` uint8."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


class ADE20K(DenseDataset):
    """``ADEChallengeData2016/{images,annotations}/{training,validation}`` (SceneParsing 2016).

    Labels are 0..150 with 0 = "other". With ``reduce_zero_label`` (default, the mmseg/paper
    convention) 0 -> 255 (ignore) and k -> k - 1, giving 150 classes; otherwise the raw 0..150
    labels are returned as 151 classes.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[..., Any] | None = None, reduce_zero_label: bool = True,
                 seed: int | None = None) -> None:
        super().__init__(split, "seg", transform, seed)
        sub = {"train": "training", "training": "training", "val": "validation",
               "validation": "validation"}.get(split)
        if sub is None:
            raise ValueError(f"ADE20K split must be 'train' or 'val', got {split!r}")
        self.root = resolve_root(root, "ADEChallengeData2016")
        self.reduce_zero_label = reduce_zero_label
        self.num_classes = 150 if reduce_zero_label else 151
        self.class_names = ADE20K_CLASSES if reduce_zero_label else ("other",) + ADE20K_CLASSES
        img_dir, ann_dir = self.root / "images" / sub, self.root / "annotations" / sub
        images = find_by_stem(img_dir, (".jpg", ".jpeg", ".png"))
        labels = find_by_stem(ann_dir, (".png",))
        keys = pair_by_stem(images, labels, img_dir, ann_dir, orphans=False)
        self.samples = [Sample(k, images[k], labels[k]) for k in keys]
        self._require_samples(img_dir)

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return read_rgb(sample.image)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        raw = read_label(sample.target)
        if raw.max(initial=0) > 150:
            bad = int(raw.max())
            raise DatasetError(f"{sample.target}: label value {bad} outside [0, 150]")
        if not self.reduce_zero_label:
            return raw
        return np.where(raw == 0, 255, raw - 1)


class Cityscapes(DenseDataset):
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/<split>/<city>/*_labelIds.png``.

    Cityscapes fine annotations. Images ``leftImg8bit/<split>/<city>/<x>_leftImg8bit.png``; labels
    ``gtFine/<split>/<city>/<x>_gtFine_labelIds.png`` mapped to the 19 trainIds with our own table
    (:data:`CITYSCAPES_LABEL_TO_TRAIN`), or ``<x>_gtFine_labelTrainIds.png`` read as is.
    ``label_type``: ``"labelIds"``, ``"trainIds"`` or ``"auto"`` (trainIds file when present).
    """

    num_classes = 19
    class_names = CITYSCAPES_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[..., Any] | None = None, label_type: str = "auto",
                 seed: int | None = None) -> None:
        super().__init__(split, "seg", transform, seed)
        if label_type not in ("labelIds", "trainIds", "auto"):
            raise ValueError(f"label_type must be labelIds, trainIds or auto, got {label_type!r}")
        self.root = resolve_root(root, "cityscapes")
        self.label_type = label_type
        img_dir = check_exists(self.root / "leftImg8bit" / split, "image folder")
        gt_dir = self.root / "gtFine" / split
        for p in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = p.name[: -len("_leftImg8bit.png")]
            city = p.parent.name
            lab = gt_dir / city / f"{stem}_gtFine_labelIds.png"
            trn = gt_dir / city / f"{stem}_gtFine_labelTrainIds.png"
            if label_type == "trainIds" or (label_type == "auto" and trn.exists()):
                target, kind = trn, "trainIds"
            else:
                target, kind = lab, "labelIds"
            if not target.exists():
                report_problem(DatasetFileNotFoundError(f"{target}: label not found"))
                continue
            self.samples.append(Sample(f"{city}/{stem}", p, target, {"kind": kind}))
        self._require_samples(img_dir)

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return read_rgb(sample.image)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        raw = read_label(sample.target)
        if sample.extra["kind"] == "trainIds":
            return raw
        bad = (raw > 33) & (raw != 255)
        if bad.any():
            raise DatasetError(f"{sample.target}: labelId value {int(raw[bad].max())} "
                               "outside [0, 33]")
        return cityscapes_label_to_train(raw)


class VOC2012(DenseDataset):
    """``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/<split>.txt}``.

    PASCAL VOC 2012 segmentation.

    Labels are palette PNGs whose indices are the classes (0..20, 255 = border/ignore). An RGB
    label (colour-coded with the VOC palette) is mapped back to indices. ``label_dir`` can point at
    e.g. ``SegmentationClassAug`` (SBD-augmented labels, stored as grey indices).
    """

    num_classes = 21
    class_names = VOC_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[..., Any] | None = None,
                 label_dir: str = "SegmentationClass", seed: int | None = None) -> None:
        super().__init__(split, "seg", transform, seed)
        self.root = resolve_root(root, "VOCdevkit/VOC2012", "VOC2012")
        list_file = check_exists(self.root / "ImageSets" / "Segmentation" / f"{split}.txt",
                                 "split list")
        ids = [ln.strip().split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
        for i, name in enumerate(ids, 1):
            img = self.root / "JPEGImages" / f"{name}.jpg"
            lab = self.root / label_dir / f"{name}.png"
            missing = [p for p in (img, lab) if not p.exists()]
            for p in missing:
                report_problem(DatasetError(f"{list_file}:{i}: {p} not found"))
            if not missing:
                self.samples.append(Sample(name, img, lab))
        self._require_samples(list_file)

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return read_rgb(sample.image)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        im = open_image(sample.target)
        if im.mode in ("P", "L"):
            return np.asarray(im).astype(np.int64)
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        pal = voc_palette().astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
        valid_idx = np.r_[np.arange(21), 255]
        lut = dict(zip(keys[valid_idx].tolist(), valid_idx.tolist(), strict=True))
        uniq, inv = np.unique(code, return_inverse=True)
        mapped = []
        for u in uniq.tolist():
            if u not in lut:
                raise DatasetError(f"{sample.target}: colour #{u:06x} is not a VOC class colour")
            mapped.append(lut[u])
        return np.asarray(mapped, dtype=np.int64)[inv].reshape(code.shape)
