"""``bidense predict``: a picture and the raw output for every input image."""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import tasks
from .._atomic import atomic_open
from . import visualize as V
from .loading import load_model

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DEPTH_PNG_SCALE = 256.0  # KITTI convention: uint16 = metres * 256 (up to 255.99 m)


def collect_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their images, sorted), globs, and ``.txt`` lists of paths."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".txt" and path.is_file():
            lines = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
            for ln in lines:
                p = Path(ln) if Path(ln).is_absolute() else path.parent / ln
                if not p.is_file():
                    raise FileNotFoundError(f"{path}: listed image {ln} does not exist")
                found.append(p)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True))
        else:
            raise FileNotFoundError(f"{item}: no such file, folder or glob match")
    if not found:
        raise FileNotFoundError(f"no images found in {list(inputs)}")
    return found


#: what a NaN or inf pixel of a float image does (``--nonfinite``)
NONFINITE = ("refuse", "mask")


def _read_rgb(path: Path, nonfinite: str = "refuse") -> np.ndarray:
    """The image as 8-bit RGB. A float image (a 32-bit TIFF, mode ``F``) holding NaN or inf is
    refused in one line naming how many values, or with ``nonfinite="mask"`` those become 0
    (black): PIL's conversion would make them 0 or 255 without a word."""
    try:
        with Image.open(path) as im:
            values = np.asarray(im, dtype=np.float32) if im.mode == "F" else None
            rgb = None if values is not None else np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    if rgb is not None:
        return rgb
    finite = np.isfinite(values)
    bad = values.size - int(np.count_nonzero(finite))
    if bad and nonfinite != "mask":
        raise ValueError(f"{path}: {bad} non-finite values (NaN or inf) of {values.size} in a "
                         "float image; --nonfinite mask replaces them by 0")
    return np.asarray(Image.fromarray(np.where(finite, values, 0), mode="F").convert("RGB"))


def _parse_size(text: str) -> tuple[int, int]:
    """``--size HxW`` as two positive ints."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if min(h, w) < 1:
        raise ValueError(f"--size '{text}' must be HxW positive sizes, e.g. 64x64")
    return h, w


def _normalize(image: np.ndarray) -> torch.Tensor:
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    x = (image.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def _save_labels(stem: str, labels: np.ndarray, num_classes: int) -> None:
    Image.fromarray(labels.astype(np.uint16 if num_classes > 255 else np.uint8)).save(
        f"{stem}_label.png"
    )


def _save_depth(stem: str, depth: np.ndarray, num_classes: int) -> None:
    np.save(f"{stem}_depth.npy", depth)
    png = np.clip(depth * DEPTH_PNG_SCALE + 0.5, 0, 65535).astype(np.uint16)
    Image.fromarray(png).save(f"{stem}_depth.png")


def _save_probability(stem: str, prob: np.ndarray, num_classes: int) -> None:
    np.save(f"{stem}_prob.npy", prob)
    Image.fromarray((prob * 255 + 0.5).astype(np.uint8)).save(f"{stem}_prob.png")


#: raw output (``TaskSpec.raw_suffix``) -> ``save(stem, prediction, num_classes)``, which writes
#: ``{stem}_{suffix}`` and its companions: class ids as an 8/16-bit PNG; depth in metres as .npy
#: plus a KITTI-style uint16 PNG; probability as float32 .npy plus an 8-bit PNG
RAW_WRITERS: dict[str, Callable[[str, np.ndarray, int], None]] = {
    "label.png": _save_labels,
    "depth.npy": _save_depth,
    "prob.npy": _save_probability,
}
#: what ``predictions.json`` adds per raw output, so the files can be read back
RAW_META: dict[str, dict[str, Any]] = {"depth.npy": {"depth_png_scale": DEPTH_PNG_SCALE}}


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Name ``path`` in an OSError raised inside (a full disk's write error names no file)."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write ({exc.strerror or exc})", str(path)) from None


def predict_files(
    checkpoint: str | Path,
    inputs: Iterable[str],
    output: str | Path,
    opacity: float = 0.5,
    size: str | None = None,
    nonfinite: str = "refuse",
) -> list[Path]:
    """Run a checkpoint on images; write a picture and the raw output per image.

    ``nonfinite``: a float image with NaN / inf pixels is refused (``"refuse"``) or they are
    replaced by 0 (``"mask"``); 8-bit images cannot hold them.

    For every input ``{stem}``: the raw output ``{stem}_{raw_suffix}`` (and companions, see
    :data:`RAW_WRITERS`), the picture ``{stem}_vis.png`` in the task's style, and one
    ``predictions.json`` index for the run.
    """
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {list(NONFINITE)}, got {nonfinite!r}")
    resize = _parse_size(size) if size else None
    files = collect_inputs(inputs)
    out_dir = Path(output)
    with _writing(out_dir):  # before the model runs: an unwritable folder fails at once
        out_dir.mkdir(parents=True, exist_ok=True)
    model, cfg, ckpt = load_model(checkpoint)
    task = cfg["model"]["task"]
    spec = tasks.get_task(task)
    num_classes = ckpt.get("num_classes") or 1
    palette = V.palette_for(num_classes, cfg["data"]["dataset"])
    written: list[Path] = []
    index = []
    for path in files:
        image = _read_rgb(path, nonfinite)
        if resize:
            h, w = resize
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        with torch.no_grad():
            out = model(_normalize(image))[0].float()
        # (C, H, W) -> (H, W): class ids, or the single channel of depth / probability
        pred = tasks.postprocess(out, spec, channel_dim=0).numpy()
        pred = pred if spec.multiclass else pred[0].astype(np.float32)
        stem = out_dir / path.stem
        raw = f"{stem}_{spec.raw_suffix}"
        vis = V.prediction_picture(spec.picture, image, pred, palette, opacity)
        with _writing(Path(raw)):
            RAW_WRITERS[spec.raw_suffix](str(stem), pred, num_classes)
        with _writing(Path(f"{stem}_vis.png")):
            Image.fromarray(vis).save(f"{stem}_vis.png")
        written.append(Path(f"{stem}_vis.png"))
        index.append({"input": str(path), "picture": f"{stem}_vis.png", "raw": raw})
    meta = {"task": task, "checkpoint": str(checkpoint), "items": index}
    meta.update(RAW_META.get(spec.raw_suffix, {}))
    index_path = out_dir / "predictions.json"
    with _writing(index_path), atomic_open(index_path, "w") as fh:
        fh.write(json.dumps(meta, indent=2))
    return written
