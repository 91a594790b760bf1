"""Pictures of predictions: palettes, colour maps, overlays and grids (numpy + PIL only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from ..data.segmentation import voc_palette

_ADE20K_HEX = """
787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d 787846
08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc
ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14
ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff
ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00
008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014
ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900
00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070
5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff
ff007a fff500 0abed4 d6ff00 00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff
4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
"""

CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip


def ade20k_palette() -> np.ndarray:
    """150 ADE20K class colours (reduce-zero-label order)."""
    return np.array(
        [[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _ADE20K_HEX.split()], dtype=np.uint8
    )


def palette_for(num_classes: int, dataset: str | None = None) -> np.ndarray:
    """A palette with at least ``num_classes`` colours (dataset's own when known)."""
    if dataset in ("ade20k",) and num_classes <= 150:
        return ade20k_palette()
    if dataset in ("cityscapes",) and num_classes <= 19:
        return CITYSCAPES_PALETTE
    pal = voc_palette(256)
    if num_classes <= 255:
        return pal[:num_classes]
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (num_classes, 3), dtype=np.uint8)


def turbo(x: np.ndarray) -> np.ndarray:
    """Turbo colour map via its published degree-5 polynomial approximation; x in [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    r = 0.13572138 + x * (4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (
        -152.94239396 + x * 59.28637943))))
    g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (
        4.27729857 + x * 2.82956604))))
    b = 0.10667330 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (
        -89.90310912 + x * 27.34824973))))
    rgb = np.stack([r, g, b], axis=-1)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def colorize_labels(labels: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) colours; ignore and out-of-range ids are black."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = (labels >= 0) & (labels < len(palette)) & (labels != ignore_index)
    out[valid] = palette[labels[valid]]
    return out


def overlay(image: np.ndarray, colors: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend a colour map over an RGB uint8 image."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    mixed = (1 - opacity) * image.astype(np.float32) + opacity * colors.astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def colorize_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                   inverse: bool = True) -> np.ndarray:
    """Depth (H, W) metres -> turbo colours of min-max-normalised (inverse) depth; 0 = invalid
    drawn black."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    out = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return out
    v = 1.0 / depth[valid] if inverse else depth[valid]
    lo = (1.0 / vmax if inverse else vmin) if (vmax if inverse else vmin) else v.min()
    hi = (1.0 / vmin if inverse else vmax) if (vmin if inverse else vmax) else v.max()
    out[valid] = turbo((v - lo) / max(hi - lo, 1e-12))
    return out


def heatmap(prob: np.ndarray) -> np.ndarray:
    """Probability (H, W) in [0, 1] -> turbo colours."""
    return turbo(np.asarray(prob))


def _labels_picture(image: np.ndarray, labels: np.ndarray, palette: np.ndarray,
                    opacity: float) -> np.ndarray:
    return overlay(image, colorize_labels(labels, palette), opacity)


def _depth_picture(image: np.ndarray, depth: np.ndarray, palette: np.ndarray,
                   opacity: float) -> np.ndarray:
    return np.concatenate([image, colorize_depth(depth)], axis=1)


def _probability_picture(image: np.ndarray, prob: np.ndarray, palette: np.ndarray,
                         opacity: float) -> np.ndarray:
    return overlay(image, heatmap(prob), opacity)


#: picture style (``TaskSpec.picture``) -> ``draw(image, prediction, palette, opacity)``: class
#: ids overlaid in palette colours; input beside its turbo-coloured depth; a probability heat-map
#: overlaid
PICTURES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]] = {
    "labels": _labels_picture,
    "depth": _depth_picture,
    "probability": _probability_picture,
}


def prediction_picture(style: str, image: np.ndarray, prediction: np.ndarray,
                       palette: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 ``image`` and its postprocessed (H, W) ``prediction`` -> the picture of
    ``style`` (:data:`PICTURES`)."""
    return PICTURES[style](image, prediction, palette, opacity)


def denormalize(image_chw: np.ndarray, mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225)) -> np.ndarray:
    """Normalised (3, H, W) float -> (H, W, 3) uint8."""
    img = np.asarray(image_chw, dtype=np.float32).transpose(1, 2, 0)
    img = img * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def grid(rows: list[list[np.ndarray]], titles: list[str] | None = None, pad: int = 4) -> np.ndarray:
    """Tile equally-sized RGB images into rows with a white gap; optional column titles."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    title_h = 14 if titles else 0
    canvas = np.full(
        (title_h + len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8
    )
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = title_h + pad + i * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = img[:h, :w]
    if titles:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        for j, title in enumerate(titles):
            draw.text((pad + j * (w + pad), 1), title[: max(4, w // 6)], fill=(0, 0, 0))
        canvas = np.asarray(pil)
    return canvas


#: the darkest colour of the confusion-matrix ramp (white = 0, this = 1)
_CONFUSION_DARK = np.array([8, 48, 107], dtype=np.float64)
_CONFUSION_EMPTY = (225, 225, 225)  # a row with no ground-truth pixel (undefined)


def _text_strip(labels: list[str], cell: int, width: int) -> Image.Image:
    """One label per ``cell``-high row, right-aligned in a ``width``-wide white strip."""
    strip = Image.new("RGB", (width, cell * len(labels)), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, text in enumerate(labels):
        x0, y0, x1, y1 = draw.textbbox((0, 0), text)
        draw.text((width - 3 - (x1 - x0), i * cell + (cell - (y1 - y0)) // 2 - y0), text,
                  fill=(0, 0, 0))
    return strip


def confusion_picture(confusion: np.ndarray, class_names: list[str] | None = None,
                      max_named: int = 60) -> np.ndarray:
    """A row-normalised confusion matrix ``cm[gt, pred]`` as an (H, W, 3) uint8 picture.

    Cell (g, p) shows cm[g, p] / sum_p cm[g, p] on a white-to-blue ramp (rows without a
    ground-truth pixel are grey); rows are ground truth, columns predictions, both labelled with
    ``class_names`` (or the ids when there are none or more than ``max_named`` classes). Cells of
    at least 22 px also print the percentage.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    k = cm.shape[0]
    if cm.ndim != 2 or cm.shape[1] != k:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    cell = int(np.clip(720 // max(k, 1), 3, 36))
    colours = 255.0 + share[..., None] * (_CONFUSION_DARK - 255.0)
    colours[rows[:, 0] == 0] = _CONFUSION_EMPTY
    matrix = Image.fromarray(np.repeat(np.repeat(colours + 0.5, cell, 0), cell, 1)
                             .astype(np.uint8))
    if cell >= 22:
        draw = ImageDraw.Draw(matrix)
        for g in range(k):
            for p in range(k):
                if rows[g, 0] > 0:
                    text = f"{100 * share[g, p]:.0f}"
                    x0, y0, x1, y1 = draw.textbbox((0, 0), text)
                    fill = (255, 255, 255) if share[g, p] > 0.5 else (0, 0, 0)
                    draw.text((p * cell + (cell - (x1 - x0)) // 2 - x0,
                               g * cell + (cell - (y1 - y0)) // 2 - y0), text, fill=fill)
    named = class_names is not None and k <= max_named
    labels = [f"{i} {class_names[i]}" if named else str(i) for i in range(k)]
    if cell < 10:  # too small for every label: every n-th id
        step = int(np.ceil(10 / cell))
        labels = [lab if i % step == 0 else "" for i, lab in enumerate(labels)]
    probe = ImageDraw.Draw(matrix)
    margin = 8 + max(probe.textbbox((0, 0), lab)[2] for lab in labels)
    title = "row-normalised confusion: rows = ground truth, columns = prediction"
    title_h, title_w = 16, probe.textbbox((0, 0), title)[2] + 8
    size = k * cell
    canvas = Image.new("RGB", (max(margin + size + 4, title_w), title_h + margin + size + 4),
                       (255, 255, 255))
    canvas.paste(_text_strip(labels, cell, margin), (0, title_h + margin))
    # Column labels: the strip of the reversed labels turned clockwise reads top-down and ends
    # at the matrix, class 0 on the left.
    columns = _text_strip(labels[::-1], cell, margin).rotate(-90, expand=True)
    canvas.paste(columns, (margin, title_h))
    canvas.paste(matrix, (margin, title_h + margin))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=(0, 0, 0))
    return np.asarray(canvas)
