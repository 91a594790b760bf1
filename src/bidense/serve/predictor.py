"""The model behind ``bidense serve``: a packed ``.bdn`` runtime, and PyTorch when a checkpoint is
given, run on one image with the prediction drawn as the task's picture.

A checkpoint (``.pt``) is rebuilt with :func:`bidense.engine.load_model` and exported with
:func:`bidense.export.export` to a temporary ``.bdn`` at the model's input size; the class names
and dataset go into that file's metadata, so a checkpoint and a ``.bdn`` are drawn by one path.
The runtime runs a fixed input shape: an upload is resized to it (bilinear) and the prediction
back to the upload's size (nearest for class ids, bilinear for depth and probability).
"""

from __future__ import annotations

import io
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import tasks
from ..data import ADE20K_CLASSES, DATASETS, OBJECT_CLASSES, ROAD_CLASSES, render_scene
from ..data.registry import canonical_name
from ..data.transforms import Normalize
from ..engine import DEFAULT_INPUT_SIZE, load_model, trained_size
from ..engine import visualize as V
from ..export import export
from ..runtime import Runtime

__all__ = ["DEFAULT_INPUT_SIZE", "Prediction", "Predictor", "class_names", "input_size",
           "png_bytes"]

#: synthetic scenes offered as samples on the page, per scene kind
NUM_SAMPLES = 4
#: tick count of the depth / probability scale bar, and colour stops of its gradient
_SCALE_TICKS = 5
_SCALE_STOPS = 32


def input_size(cfg: dict[str, Any]) -> tuple[int, int]:
    """The (H, W) a checkpoint's model was trained at (:func:`bidense.engine.trained_size`)."""
    return trained_size(cfg)[0]


def class_names(cfg: dict[str, Any], num_classes: int) -> list[str]:
    """Names of a checkpoint's class ids, from its dataset (``class N`` where unknown).

    A ``class_names`` dataset option wins; synthetic scenes name :data:`OBJECT_CLASSES` or
    :data:`ROAD_CLASSES` by their ``scene``; ADE20K's 151-class form puts ``other`` first.
    """
    data = cfg["data"]
    options = {**(data.get("kwargs") or {}), **(data.get("val_kwargs") or {})}
    key = canonical_name(data["dataset"])
    names: Any = options.get("class_names")
    if names is None and key == "synthetic":
        scene = options.get("scene") or ("road" if cfg["model"]["task"] == "road" else "objects")
        names = OBJECT_CLASSES if scene == "objects" else ROAD_CLASSES
    elif names is None and key == "ade20k":
        full = num_classes == len(ADE20K_CLASSES)
        names = ADE20K_CLASSES if full else ("other",) + ADE20K_CLASSES
    elif names is None:
        names = DATASETS[key][0].class_names
    if names is None or len(names) != num_classes:
        return [f"class {i}" for i in range(num_classes)]
    return [str(n) for n in names]


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall-clock milliseconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def _resize_map(pred: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """An (h, w) class-id or float map resized to ``size`` = (H, W)."""
    if pred.shape == size:
        return pred
    arr = pred.astype(np.int32) if nearest else pred.astype(np.float32)
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), resample))


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _hex(rgb: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def _ticks(lo: float, hi: float, count: int = _SCALE_TICKS) -> list[dict[str, float]]:
    """``count`` evenly spaced ticks of a scale bar from ``lo`` to ``hi``: ``position`` in [0, 1]
    and ``value`` rounded to one decimal more than the tick step needs (so labels are within a
    tenth of a step of their place)."""
    if hi - lo <= 1e-9:
        return [{"value": round(lo, 3), "position": 0.0}]
    step = (hi - lo) / (count - 1)
    decimals = max(0, int(np.ceil(-np.log10(step))) + 1)
    return [{"value": round(float(v), decimals), "position": i / (count - 1)}
            for i, v in enumerate(np.linspace(lo, hi, count))]


def _labels_legend(pred: np.ndarray, names: list[str], palette: np.ndarray) -> dict[str, Any]:
    """The classes in the prediction, largest share first, with their overlay colour."""
    counts = np.bincount(pred.ravel().astype(np.int64), minlength=len(names))
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return {"kind": "labels", "entries": [
        {"id": i, "name": names[i] if i < len(names) else f"class {i}",
         "color": _hex(palette[i % len(palette)]), "share": float(counts[i] / pred.size)}
        for i in order]}


def _depth_legend(pred: np.ndarray, names: list[str], palette: np.ndarray) -> dict[str, Any]:
    """A scale bar in metres, linear in depth from the nearest to the farthest valid pixel.

    :func:`~bidense.engine.visualize.colorize_depth` colours min-max normalised *inverse*
    depth, ``p(d) = (1/d - 1/d_max) / (1/d_min - 1/d_max)``, so the bar's colour at depth
    ``d`` is ``turbo(p(d))``.
    """
    valid = pred[np.isfinite(pred) & (pred > 0)]
    if valid.size == 0:
        return {"kind": "scale", "unit": "m", "label": "depth", "stops": [], "ticks": []}
    lo, hi = float(valid.min()), float(valid.max())
    depths = np.linspace(lo, hi, _SCALE_STOPS)
    span = max(1.0 / lo - 1.0 / hi, 1e-12)
    colors = V.turbo((1.0 / depths - 1.0 / hi) / span)
    return {"kind": "scale", "unit": "m", "label": "depth", "stops": [_hex(c) for c in colors],
            "ticks": _ticks(lo, hi)}


def _probability_legend(pred: np.ndarray, names: list[str],
                        palette: np.ndarray) -> dict[str, Any]:
    """A scale bar of probability from 0 to 1 (the heat-map's turbo colours)."""
    return {"kind": "scale", "unit": "", "label": "probability",
            "stops": [_hex(c) for c in V.turbo(np.linspace(0.0, 1.0, _SCALE_STOPS))],
            "ticks": _ticks(0.0, 1.0)}


#: picture style (``TaskSpec.picture``) -> ``legend(prediction, class names, palette)``: the
#: classes present with their colours; a depth scale bar in metres; a probability scale bar
LEGENDS: dict[str, Callable[[np.ndarray, list[str], np.ndarray], dict[str, Any]]] = {
    "labels": _labels_legend,
    "depth": _depth_legend,
    "probability": _probability_legend,
}


@dataclass
class Prediction:
    """One image's result: the picture (upload size), its legend and the measured latencies."""

    picture: np.ndarray
    legend: dict[str, Any]
    runtime_ms: float
    pytorch_ms: float | None
    max_abs_diff: float | None


class Predictor:
    """A ``.bdn`` runtime (plus the PyTorch model for a checkpoint) for single images.

    Build one with :meth:`load`. ``repeats`` timed runs (after one warm-up) give each latency's
    median; calls are serialised, so concurrent requests never share a running model.
    """

    def __init__(self, bdn_path: str | Path, model: torch.nn.Module | None = None,
                 source: str | Path | None = None, threads: int | None = None,
                 repeats: int = 5, workdir: tempfile.TemporaryDirectory | None = None) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.runtime = Runtime(bdn_path, threads=threads)
        self.model = model
        self.source = str(source or bdn_path)
        self.repeats = int(repeats)
        self._workdir = workdir  # holds the temporary .bdn of a checkpoint
        self._lock = threading.Lock()
        meta = self.runtime.metadata
        self.spec = tasks.get_task(meta.get("task") or "seg")
        n, _, h, w = self.runtime.input_shape
        if n != 1:
            raise ValueError(f"{bdn_path}: serve needs a batch-1 model, got input {(n, h, w)}")
        self.input_size = (h, w)
        self.num_classes = int(meta.get("num_classes") or 1)
        names = meta.get("class_names")
        self.class_names = (list(names) if names and len(names) == self.num_classes
                            else [f"class {i}" for i in range(self.num_classes)])
        self.palette = V.palette_for(self.num_classes, meta.get("dataset"))
        self.normalize = Normalize()
        self._samples: dict[str, bytes] = {}

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None,
             repeats: int = 5) -> Predictor:
        """A predictor for a ``.bdn`` file or a checkpoint (exported to a temporary ``.bdn``)."""
        path = Path(path)
        if path.suffix == ".bdn":
            return cls(path, threads=threads, repeats=repeats)
        model, cfg, ckpt = load_model(path)
        num_classes = int(ckpt.get("num_classes") or 1)
        h, w = input_size(cfg)
        example = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        workdir = tempfile.TemporaryDirectory(prefix="bidense-serve-")
        bdn = Path(workdir.name) / f"{path.stem}.bdn"
        export(model, bdn, example, metadata={
            "checkpoint": path.name, "dataset": canonical_name(cfg["data"]["dataset"]),
            "class_names": class_names(cfg, num_classes)})
        return cls(bdn, model=model, source=path, threads=threads, repeats=repeats,
                   workdir=workdir)

    def info(self) -> dict[str, Any]:
        """What the page's header shows: model, task, input size, which engines run."""
        meta = self.runtime.metadata
        return {
            "source": Path(self.source).name, "model": meta.get("model", ""),
            "method": meta.get("method", ""), "task": self.spec.name, "title": self.spec.title,
            "input_size": list(self.input_size), "num_classes": self.num_classes,
            "threads": self.runtime.threads, "repeats": self.repeats,
            "pytorch": self.model is not None,
            "samples": self.sample_names(),
        }

    # -- samples --------------------------------------------------------------------------------
    def sample_names(self) -> list[str]:
        """Built-in synthetic scenes: road scenes for the road task, object scenes otherwise."""
        kind = "road" if self.spec.name == "road" else "objects"
        return [f"{kind}-{i}" for i in range(NUM_SAMPLES)]

    def sample_png(self, name: str) -> bytes:
        """The PNG of sample ``name`` (a :func:`~bidense.data.render_scene` at the model's input
        size, seeded by its index); ``KeyError`` for an unknown name."""
        if name not in self.sample_names():
            raise KeyError(name)
        if name not in self._samples:
            kind, index = name.rsplit("-", 1)
            scene = render_scene(np.random.default_rng([7, int(index)]), self.input_size, kind)
            self._samples[name] = png_bytes(scene["image"])
        return self._samples[name]

    # -- prediction -----------------------------------------------------------------------------
    def _input(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 at any size -> normalised float32 NCHW at the model's input size."""
        h, w = self.input_size
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        x = self.normalize(resized)[0]
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)

    def predict(self, image: np.ndarray) -> Prediction:
        """Run ``image`` ((H, W, 3) uint8) through the runtime (and PyTorch) and draw it."""
        x = self._input(image)
        with self._lock:
            out = self.runtime(x)
            runtime_ms = _median_ms(lambda: self.runtime(x), self.repeats)
            pytorch_ms = diff = None
            if self.model is not None:
                xt = torch.from_numpy(x)
                with torch.no_grad():
                    ref = self.model(xt).float().numpy()
                    pytorch_ms = _median_ms(lambda: self.model(xt), self.repeats)
                diff = float(np.abs(ref - out).max())
        pred = tasks.postprocess(out[0], self.spec, channel_dim=0)
        pred = pred if self.spec.multiclass else pred[0]
        pred = _resize_map(np.asarray(pred), image.shape[:2], nearest=self.spec.multiclass)
        picture = V.prediction_picture(self.spec.picture, image, pred, self.palette)
        legend = LEGENDS[self.spec.picture](pred, self.class_names, self.palette)
        return Prediction(picture, legend, runtime_ms, pytorch_ms, diff)

    def close(self) -> None:
        """Remove the temporary ``.bdn`` of a checkpoint."""
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
