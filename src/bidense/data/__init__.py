"""Datasets, the synthetic default and joint transforms for dense prediction.

Every dataset returns dicts ``{"image", "target", "name", "has_target"}`` (see
:class:`~bidense.data.base.DenseDataset`) and exposes ``task``, ``num_classes``, ``ignore_index``
and ``class_names``. Build one by name with :func:`build_dataset`.
"""

from .base import DenseDataset, Sample
from .check import DatasetLayout, DatasetReport, check_dataset, dataset_layouts
from .depth import DepthFileList, KITTIDepth, NYUv2, NYUv2BTS, NYUv2Seg40, kb_crop_box
from .errors import DatasetError, DatasetFileNotFoundError
from .folder import ImageLabelFolder, split_folders
from .io import collect_problems
from .registry import DATASETS, build_dataset, list_datasets
from .saliency import DUTS, ECSSD, KITTIRoad, SaliencyFolder, kitti_road_gt_to_mask
from .segmentation import (
    ADE20K,
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN,
    VOC2012,
    VOC_CLASSES,
    Cityscapes,
    cityscapes_label_to_train,
    voc_palette,
)
from .synthetic import OBJECT_CLASSES, ROAD_CLASSES, SyntheticScenes, generate_scenes, render_scene
from .transforms import eval_transforms, train_transforms

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_TO_TRAIN",
    "DATASETS",
    "DUTS",
    "DatasetError",
    "DatasetFileNotFoundError",
    "DatasetLayout",
    "DatasetReport",
    "DenseDataset",
    "DepthFileList",
    "ECSSD",
    "ImageLabelFolder",
    "KITTIDepth",
    "KITTIRoad",
    "NYUv2",
    "NYUv2BTS",
    "NYUv2Seg40",
    "OBJECT_CLASSES",
    "ROAD_CLASSES",
    "SaliencyFolder",
    "Sample",
    "SyntheticScenes",
    "VOC2012",
    "VOC_CLASSES",
    "Cityscapes",
    "build_dataset",
    "check_dataset",
    "cityscapes_label_to_train",
    "collect_problems",
    "dataset_layouts",
    "eval_transforms",
    "generate_scenes",
    "kb_crop_box",
    "kitti_road_gt_to_mask",
    "list_datasets",
    "render_scene",
    "split_folders",
    "train_transforms",
    "voc_palette",
]
