"""Low-level readers shared by the dataset classes.

Every reader raises a one-line :class:`~bidense.data.errors.DatasetError` (or
:class:`~bidense.data.errors.DatasetFileNotFoundError`) that names the file and the problem.
Problems found while *listing* a dataset (a broken link, an unpaired file, a list line naming a
missing file) go through :func:`report_problem`, which raises, or records the problem and lets
the dataset skip that sample inside :func:`collect_problems` (what ``bidense datasets check``
uses to report every problem in one run).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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
    "collect_problems",
    "find_by_stem",
    "pair_by_stem",
    "report_problem",
    "open_image",
    "read_rgb",
    "read_label",
    "read_depth_png",
    "read_binary_mask",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: The list :func:`collect_problems` records into (None: :func:`report_problem` raises).
_PROBLEMS: ContextVar[list[DatasetError] | None] = ContextVar("bidense_data_problems",
                                                              default=None)


@contextmanager
def collect_problems() -> Iterator[list[DatasetError]]:
    """Record listing problems instead of raising the first one, for the ``with`` block.

    Inside the block, :func:`report_problem` appends to the yielded list and the dataset being
    built skips the affected sample, so one run sees every broken link, unpaired file and missing
    list entry. Problems that leave nothing to list (a missing root, an empty split) still raise.
    """
    problems: list[DatasetError] = []
    token = _PROBLEMS.set(problems)
    try:
        yield problems
    finally:
        _PROBLEMS.reset(token)


def report_problem(error: DatasetError) -> None:
    """Raise ``error``; inside :func:`collect_problems` record it (the caller skips the sample)."""
    problems = _PROBLEMS.get()
    if problems is None:
        raise error
    problems.append(error)


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
    word). Inside :func:`collect_problems` those two are recorded; the broken link and the later
    file of a shared stem are left out.
    """
    d = check_exists(folder, "folder")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    out: dict[str, Path] = {}
    it = d.rglob("*") if recursive else d.iterdir()
    for p in sorted(it):
        if p.suffix.lower() not in exts:
            continue
        if p.is_symlink() and not p.exists():
            report_problem(DatasetError(
                f"{p}: broken link (its target {os.readlink(p)} does not exist)"))
            continue
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
            report_problem(DatasetError(
                f"{p}: two files share the stem {stem!r} (also {out[stem]})"))
            continue
        out[stem] = p
    return out


def pair_by_stem(images: dict[str, Path], labels: dict[str, Path], image_dir: Path,
                 label_dir: Path, label: str = "label", orphans: bool = True) -> list[str]:
    """The sorted stems found in both ``images`` and ``labels`` (maps from :func:`find_by_stem`).

    An image without a label is a :class:`DatasetError` naming the first one and the count, and
    so is a label without an image when ``orphans`` is set; ``label`` names the target in the
    message ("mask"). Inside :func:`collect_problems` every unpaired file is recorded on its own.
    """
    _report_unpaired([images[k] for k in sorted(images.keys() - labels.keys())], label_dir,
                     "image", label)
    if orphans:
        _report_unpaired([labels[k] for k in sorted(labels.keys() - images.keys())], image_dir,
                         label, "image")
    return sorted(images.keys() & labels.keys())


def _report_unpaired(paths: list[Path], folder: Path, kind: str, missing: str) -> None:
    """The ``kind`` files ``paths`` have no ``missing`` file of the same stem in ``folder``."""
    if not paths:
        return
    if _PROBLEMS.get() is None:
        article = "an" if missing[0] in "aeiou" else "a"
        raise DatasetError(f"{folder}: no {missing} for {kind} {paths[0]} "
                           f"({len(paths)} {kind}(s) without {article} {missing})")
    for path in paths:
        report_problem(DatasetError(f"{path}: no {missing} of the same stem in {folder}"))


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """Normalise ``size`` (int or (H, W)) to an ``(H, W)`` tuple of ints."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))
