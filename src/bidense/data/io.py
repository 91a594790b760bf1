"""Low-level readers shared by the dataset classes.

Every reader raises a one-line :class:`~bidense.data.errors.DatasetError` (or
:class:`~bidense.data.errors.DatasetFileNotFoundError`) that names the file and the problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError, DatasetFileNotFoundError

__all__ = [
    "IMAGE_EXTENSIONS",
    "check_exists",
    "check_same_size",
    "check_seg_labels",
    "check_finite_depth",
    "find_by_stem",
    "open_image",
    "read_rgb",
    "read_label",
    "read_depth_png",
    "read_binary_mask",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def check_exists(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``Path(path)``; raise :class:`DatasetFileNotFoundError` if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise DatasetFileNotFoundError(f"{p}: {what} not found")
    return p


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image with PIL (fully loaded); one-line errors for missing/unreadable files."""
    p = check_exists(path, "image")
    try:
        with Image.open(p) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{p}: unreadable image ({msg})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as an ``(H, W, 3)`` uint8 RGB array (grayscale/RGBA/palette converted)."""
    im = open_image(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG as an ``(H, W)`` integer array without colour conversion.

    Palette (``P``) PNGs give their palette indices, ``L`` gives the grey value, and 16-bit PNGs
    (``I;16``/``I``) give the stored integers. Multi-channel images are rejected.
    """
    im = open_image(path)
    if im.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
        arr = np.asarray(im)
        return arr.astype(np.int64) if arr.dtype != np.int64 else arr
    raise DatasetError(f"{path}: label image has mode {im.mode!r}, expected one channel (P/L/I;16)")


def read_depth_png(path: str | os.PathLike, scale: float) -> np.ndarray:
    """Read a uint16 depth PNG and divide by ``scale`` (256 for KITTI, 1000 for NYU mm).

    Returns float32 metres, with 0 meaning invalid (the stored 0 stays 0).
    """
    im = open_image(path)
    arr = np.asarray(im)
    if arr.ndim != 2:
        raise DatasetError(
            f"{path}: depth PNG has {arr.ndim} dims (mode {im.mode}), expected 1 channel"
        )
    if im.mode in ("L", "P", "1"):
        raise DatasetError(f"{path}: depth PNG is 8-bit (mode {im.mode}), expected uint16")
    return (arr.astype(np.float64) / float(scale)).astype(np.float32)


def read_binary_mask(path: str | os.PathLike, threshold: int = 128) -> np.ndarray:
    """Read a saliency mask (0/255 PNG, grey or colour) as float32 ``{0, 1}``: ``mask > threshold``.

    This is the PySODMetrics preparation ``GT = mask > 128``.
    """
    im = open_image(path)
    if im.mode != "L":
        im = im.convert("L")
    return (np.asarray(im) > threshold).astype(np.float32)


def check_same_size(image: np.ndarray, target: np.ndarray, image_path: object,
                    target_path: object) -> None:
    """Raise if image and target spatial sizes differ."""
    if image.shape[:2] != target.shape[:2]:
        raise DatasetError(
            f"{target_path}: label size {target.shape[1]}x{target.shape[0]} (WxH) does not match "
            f"image {image_path} size {image.shape[1]}x{image.shape[0]}"
        )


def check_seg_labels(label: np.ndarray, num_classes: int, ignore_index: int, path: object) -> None:
    """Raise if a label holds a value outside ``[0, num_classes)`` other than ``ignore_index``."""
    bad = (label != ignore_index) & ((label < 0) | (label >= num_classes))
    if bad.any():
        vals = np.unique(label[bad])
        shown = ", ".join(str(int(v)) for v in vals[:5]) + (", ..." if vals.size > 5 else "")
        raise DatasetError(
            f"{path}: label values {shown} outside [0, {num_classes - 1}] "
            f"(ignore index {ignore_index})"
        )


def check_finite_depth(depth: np.ndarray, path: object) -> None:
    """Raise if a depth map holds NaN/inf or negative values."""
    if not np.isfinite(depth).all():
        n = int((~np.isfinite(depth)).sum())
        raise DatasetError(f"{path}: depth has {n} NaN/inf values")
    if (depth < 0).any():
        raise DatasetError(f"{path}: depth has negative values")


def find_by_stem(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS,
                 suffix: str = "", recursive: bool = False) -> dict[str, Path]:
    """Map file stem (``suffix`` removed) -> path for files in ``folder`` with given extensions.

    Raises :class:`DatasetFileNotFoundError` if the folder is missing and :class:`DatasetError` if
    two files share a stem (e.g. ``a.jpg`` and ``a.png``), since pairing would be ambiguous, or if
    a file with one of the extensions is a broken link (skipping it would drop its pair without a
    word).
    """
    d = check_exists(folder, "folder")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    out: dict[str, Path] = {}
    it = d.rglob("*") if recursive else d.iterdir()
    for p in sorted(it):
        if p.suffix.lower() not in exts:
            continue
        if p.is_symlink() and not p.exists():
            raise DatasetError(f"{p}: broken link (its target {os.readlink(p)} does not exist)")
        if not p.is_file():
            continue
        stem = p.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if recursive:
            stem = str(p.parent.relative_to(d) / stem)
        if stem in out:
            raise DatasetError(f"{p}: two files share the stem {stem!r} (also {out[stem]})")
        out[stem] = p
    return out


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """Normalise ``size`` (int or (H, W)) to an ``(H, W)`` tuple of ints."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))
