"""Depth datasets: NYUv2 (labeled ``.mat`` v7.3 + ``splits.mat``; BTS file lists), KITTI Eigen."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import DenseDataset, Sample, resolve_root
from .errors import DatasetError
from .io import check_exists, read_depth_png, read_rgb, report_problem
from .segmentation import NYU40_CLASSES, nyu40_labels

__all__ = ["NYUv2", "NYUv2Seg40", "DepthFileList", "NYUv2BTS", "KITTIDepth", "kb_crop_box"]


def kb_crop_box(height: int, width: int, size: Sequence[int] = (352, 1216)) -> tuple[int, int]:
    """Top-left of the KITTI KB crop: the bottom ``size[0]`` rows, centred ``size[1]`` columns."""
    ch, cw = size
    if height < ch or width < cw:
        raise ValueError(f"image {height}x{width} is smaller than the KB crop {ch}x{cw}")
    return height - ch, (width - cw) // 2


class NYUv2(DenseDataset):
    """NYU Depth v2 labeled set: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5) + ``splits.mat``.

    The ``.mat`` stores ``images`` as N x 3 x W x H and ``depths``/``labels`` as N x W x H (MATLAB
    column-major order seen through HDF5), so the last two axes are swapped to get H x W =
    480 x 640. ``splits.mat`` (v5, read with scipy) holds **1-based** ``trainNdxs`` (795) and
    ``testNdxs`` (654). ``task="depth"`` gives the in-painted ``depths`` in metres
    (``raw_depth=True``: ``rawDepths``, 0 = invalid); ``task="seg"`` gives the raw 894-class
    ``labels`` with 0 (unlabeled) -> 255 and k -> k - 1.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", task: str = "depth",
                 transform: Callable[..., Any] | None = None,
                 mat_file: str | os.PathLike | None = None,
                 splits_file: str | os.PathLike | None = None, raw_depth: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(split, task, transform, seed)
        if task not in ("depth", "seg"):
            raise ValueError(f"NYUv2 task must be 'depth' or 'seg', got {task!r}")
        if split not in ("train", "test", "val"):
            raise ValueError(f"NYUv2 split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        self.mat_file = check_exists(mat_file or root / "nyu_depth_v2_labeled.mat", "NYUv2 .mat")
        self.splits_file = check_exists(splits_file or root / "splits.mat", "splits.mat")
        self.raw_depth = raw_depth
        self._key = "labels" if task == "seg" else ("rawDepths" if raw_depth else "depths")
        import h5py
        from scipy.io import loadmat

        try:
            with h5py.File(self.mat_file, "r") as f:
                for k in ("images", self._key):
                    if k not in f:
                        raise DatasetError(f"{self.mat_file}: dataset {k!r} missing")
                shape = f["images"].shape
                tshape = f[self._key].shape
                if self.task == "seg":
                    self.num_classes = int(f["names"].shape[-1]) if "names" in f else 894
        except OSError as exc:
            raise DatasetError(f"{self.mat_file}: not an HDF5 (v7.3) .mat file ({exc})") from None
        if len(shape) != 4 or shape[1] != 3 or tuple(tshape) != (shape[0], shape[2], shape[3]):
            raise DatasetError(f"{self.mat_file}: images {shape} / {self._key} {tshape} are not "
                               "N x 3 x W x H / N x W x H")
        n = shape[0]
        try:
            splits = loadmat(self.splits_file)
        except (ValueError, OSError, TypeError) as exc:
            raise DatasetError(f"{self.splits_file}: unreadable splits.mat ({exc})") from None
        key = "trainNdxs" if split == "train" else "testNdxs"
        if key not in splits:
            raise DatasetError(f"{self.splits_file}: variable {key!r} missing")
        idx = np.asarray(splits[key]).astype(np.int64).ravel()
        if idx.size and (idx.min() < 1 or idx.max() > n):
            raise DatasetError(f"{self.splits_file}: {key} values outside the 1-based range "
                               f"[1, {n}]")
        self.indices = idx - 1
        self.samples = [Sample(f"nyu_{i:04d}", self.mat_file, self.mat_file, {"index": int(i)})
                        for i in self.indices]
        self._require_samples(self.splits_file)
        self._h5: Any = None
        self._h5_pid: int | None = None

    def _file(self) -> Any:
        # h5py handles must not cross fork(): reopen once per process.
        if self._h5 is None or self._h5_pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.mat_file, "r")
            self._h5_pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        return state

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        img = np.asarray(self._file()["images"][sample.extra["index"]])  # 3 x W x H
        return np.ascontiguousarray(img.transpose(2, 1, 0)).astype(np.uint8)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        t = np.asarray(self._file()[self._key][sample.extra["index"]]).T
        if self.task == "depth":
            return np.ascontiguousarray(t, dtype=np.float32)
        t = t.astype(np.int64)
        return np.where(t == 0, 255, t - 1)


class NYUv2Seg40(NYUv2):
    """NYUv2 labeled set in the 40 classes of Gupta, Arbelaez and Malik (CVPR 2013), the common
    ``nyuv2-40`` segmentation benchmark: the same files and splits as :class:`NYUv2`, the raw
    894-class ``labels`` mapped by :data:`~bidense.data.segmentation.NYU894_TO_40` to ids 0..39
    (:data:`~bidense.data.segmentation.NYU40_CLASSES`), unlabeled (0) -> 255.
    """

    class_names = NYU40_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train", task: str = "seg",
                 transform: Callable[..., Any] | None = None,
                 mat_file: str | os.PathLike | None = None,
                 splits_file: str | os.PathLike | None = None, seed: int | None = None) -> None:
        if task != "seg":
            raise ValueError(f"NYUv2Seg40 is a segmentation dataset, got task {task!r}")
        super().__init__(root, split, "seg", transform, mat_file=mat_file,
                         splits_file=splits_file, seed=seed)
        self.num_classes = len(NYU40_CLASSES)

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        raw = np.asarray(self._file()["labels"][sample.extra["index"]]).T
        try:
            return nyu40_labels(raw)
        except DatasetError as exc:
            raise DatasetError(f"{self.mat_file}: {sample.name}: {exc}") from None


class DepthFileList(DenseDataset):
    """Depth pairs from a BTS-style list, one ``"rgb depth focal"`` line per item.

    Paths are relative to ``data_path`` (image) and ``gt_path`` (depth); a leading ``/`` is
    ignored. Depth PNGs hold uint16 values divided by ``depth_scale`` (1000 for NYU, 256 for KITTI);
    0 = invalid. Lines whose depth is ``None`` have no GT: with ``missing_gt="skip"`` they are
    dropped, with ``"keep"`` they are returned with an all-invalid target and ``has_target`` False
    (``self.num_missing_gt`` counts them either way). With ``kb_crop`` the KITTI KB crop (bottom
    352 rows, centred 1216 columns; ``kb_crop_size``) is applied to image and depth.
    """

    def __init__(self, list_file: str | os.PathLike, data_path: str | os.PathLike,
                 gt_path: str | os.PathLike | None = None, split: str = "train",
                 depth_scale: float = 1000.0, transform: Callable[..., Any] | None = None,
                 missing_gt: str = "skip", kb_crop: bool = False,
                 kb_crop_size: Sequence[int] = (352, 1216), check_files: bool = True,
                 seed: int | None = None) -> None:
        super().__init__(split, "depth", transform, seed)
        if missing_gt not in ("skip", "keep"):
            raise ValueError(f"missing_gt must be 'skip' or 'keep', got {missing_gt!r}")
        self.list_file = check_exists(list_file, "file list")
        self.data_path = Path(data_path)
        self.gt_path = Path(gt_path) if gt_path is not None else self.data_path
        self.depth_scale = float(depth_scale)
        self.kb_crop = kb_crop
        self.kb_crop_size = tuple(int(s) for s in kb_crop_size)
        self.num_missing_gt = 0
        for i, line in enumerate(self.list_file.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                report_problem(DatasetError(f"{self.list_file}:{i}: expected 'rgb depth [focal]', "
                                            f"got {line.strip()!r}"))
                continue
            img = self.data_path / parts[0].lstrip("/")
            gt = None if parts[1] == "None" else self.gt_path / parts[1].lstrip("/")
            try:
                focal = float(parts[2]) if len(parts) > 2 else float("nan")
            except ValueError:
                report_problem(DatasetError(
                    f"{self.list_file}:{i}: focal {parts[2]!r} is not a number"))
                continue
            if gt is None:
                self.num_missing_gt += 1
                if missing_gt == "skip":
                    continue
            missing = [p for p in (img, gt) if check_files and p is not None and not p.exists()]
            for p in missing:
                report_problem(DatasetError(f"{self.list_file}:{i}: {p} not found"))
            if missing:
                continue
            name = parts[0].lstrip("/").rsplit(".", 1)[0]
            self.samples.append(Sample(name, img, gt, {"focal": focal}))
        self._require_samples(self.list_file)

    def _crop(self, arr: np.ndarray) -> np.ndarray:
        if not self.kb_crop:
            return arr
        ch, cw = self.kb_crop_size
        try:
            top, left = kb_crop_box(arr.shape[0], arr.shape[1], self.kb_crop_size)
        except ValueError as exc:
            raise DatasetError(f"{self.list_file}: {exc}") from None
        return arr[top:top + ch, left:left + cw]

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return self._crop(read_rgb(sample.image))

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray | None:  # noqa: D102
        if sample.target is None:
            return None
        return self._crop(read_depth_png(sample.target, self.depth_scale))

    def __getitem__(self, index: int) -> dict[str, Any]:
        out = super().__getitem__(index)
        out["focal"] = self.samples[index if index >= 0 else index + len(self)].extra["focal"]
        return out


class NYUv2BTS(DepthFileList):
    """NYUv2 BTS "sync" set: ``nyudepthv2_{train,test}_files_with_gt.txt`` lists, depth PNG mm.

    Defaults: train images under ``root/sync``, test under ``root/official_splits/test``; lists in
    ``root`` (or pass ``list_file``/``data_path``).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[..., Any] | None = None,
                 list_file: str | os.PathLike | None = None,
                 data_path: str | os.PathLike | None = None,
                 gt_path: str | os.PathLike | None = None, **kw: Any) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"NYUv2BTS split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        list_file = list_file or root / f"nyudepthv2_{split}_files_with_gt.txt"
        default = root / ("sync" if split == "train" else "official_splits/test")
        data_path = data_path or (default if default.is_dir() else root)
        super().__init__(list_file, data_path, gt_path, split=split, depth_scale=1000.0,
                         transform=transform, **kw)


class KITTIDepth(DepthFileList):
    """KITTI Eigen split: ``eigen_{train,test}_files_with_gt.txt``, uint16/256 PNGs, KB crop.

    Images come from the raw drives under ``data_path`` (default ``root/raw`` if present, else
    ``root``), GT from ``gt_path`` (default ``root/data_depth_annotated`` if present, else
    ``root``). Lines whose GT is ``None`` (45 of the 697 test lines) are skipped for ``train`` and
    kept without GT for ``test`` (``missing_gt`` overrides); ``num_missing_gt`` reports them.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[..., Any] | None = None,
                 list_file: str | os.PathLike | None = None,
                 data_path: str | os.PathLike | None = None,
                 gt_path: str | os.PathLike | None = None, missing_gt: str | None = None,
                 kb_crop: bool = True, **kw: Any) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"KITTIDepth split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        list_file = list_file or root / f"eigen_{split}_files_with_gt.txt"
        data_path = data_path or resolve_root(root, "raw")
        gt_path = gt_path or resolve_root(root, "data_depth_annotated")
        super().__init__(list_file, data_path, gt_path, split=split, depth_scale=256.0,
                         transform=transform,
                         missing_gt=missing_gt or ("skip" if split == "train" else "keep"),
                         kb_crop=kb_crop, **kw)


