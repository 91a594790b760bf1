"""``bidense predict``: a picture and the raw output for every input image."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import visualize as V
from .evaluate import model_from_checkpoint

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


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None


def _normalize(image: np.ndarray) -> torch.Tensor:
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    x = (image.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def predict_files(
    checkpoint: str | Path,
    inputs: Iterable[str],
    output: str | Path,
    opacity: float = 0.5,
    size: str | None = None,
) -> list[Path]:
    """Run a checkpoint on images; write a picture and the raw output per image."""
    files = collect_inputs(inputs)
    model, cfg, ckpt = model_from_checkpoint(checkpoint)
    task = cfg["model"]["task"]
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = ckpt.get("num_classes") or 1
    palette = V.palette_for(num_classes, cfg["data"]["dataset"])
    written: list[Path] = []
    index = []
    for path in files:
        image = _read_rgb(path)
        if size:
            h, w = (int(v) for v in size.lower().split("x"))
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        with torch.no_grad():
            out = model(_normalize(image))[0].float()
        stem = out_dir / path.stem
        if task == "seg":
            labels = out.argmax(0).numpy().astype(np.uint16 if num_classes > 255 else np.uint8)
            Image.fromarray(labels).save(f"{stem}_label.png")
            vis = V.overlay(image, V.colorize_labels(labels, palette), opacity)
            raw = f"{stem}_label.png"
        elif task == "depth":
            depth = out[0].numpy().astype(np.float32)
            np.save(f"{stem}_depth.npy", depth)
            png = np.clip(depth * DEPTH_PNG_SCALE + 0.5, 0, 65535).astype(np.uint16)
            Image.fromarray(png).save(f"{stem}_depth.png")
            vis = np.concatenate([image, V.colorize_depth(depth)], axis=1)
            raw = f"{stem}_depth.npy"
        else:
            prob = torch.sigmoid(out[0]).numpy().astype(np.float32)
            np.save(f"{stem}_prob.npy", prob)
            Image.fromarray((prob * 255 + 0.5).astype(np.uint8)).save(f"{stem}_prob.png")
            vis = V.overlay(image, V.heatmap(prob), opacity)
            raw = f"{stem}_prob.npy"
        Image.fromarray(vis).save(f"{stem}_vis.png")
        written.append(Path(f"{stem}_vis.png"))
        index.append({"input": str(path), "picture": f"{stem}_vis.png", "raw": raw})
    meta = {"task": task, "checkpoint": str(checkpoint), "items": index}
    if task == "depth":
        meta["depth_png_scale"] = DEPTH_PNG_SCALE
    (out_dir / "predictions.json").write_text(json.dumps(meta, indent=2))
    return written
