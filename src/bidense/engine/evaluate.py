"""Evaluation: the device to run on, one pass of a model over a loader, and a checkpoint's
metrics. The trainer evaluates through :func:`evaluate_model` too, so training-time and
stand-alone numbers come from the same loop."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from .. import tasks
from .._atomic import atomic_open
from ..metrics import SegmentationMetric
from .builders import build_dataset_split, build_metric
from .loading import load_model
from .visualize import confusion_picture

__all__ = ["evaluate_checkpoint", "evaluate_model", "resolve_device", "save_confusion"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` -> a device; under torchrun, this rank's GPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    metric: Any,
    task: str,
    device: torch.device,
    use_amp: bool = False,
) -> dict[str, Any]:
    """Run ``model`` over ``loader``, update ``metric`` (all-reduced across ranks) and compute.

    Model outputs go through the task's postprocess (:func:`bidense.tasks.postprocess`); items
    whose ``has_target`` is False are skipped.
    """
    was_training = model.training
    model.eval()
    metric.reset()
    for batch in loader:
        keep = batch.get("has_target")
        images = batch["image"].to(device)
        with torch.autocast(device.type, enabled=use_amp):
            out = model(images)
        pred = tasks.postprocess(out.float(), task)
        target = batch["target"]
        if keep is not None and not bool(torch.as_tensor(keep).all()):
            mask = torch.as_tensor(keep, dtype=torch.bool)
            if not mask.any():
                continue
            pred, target = pred[mask.to(pred.device)], target[mask]
        metric.update(pred.cpu(), target)
    metric.all_reduce()
    model.train(was_training)
    return metric.compute()


def save_confusion(path: str | Path, metric: SegmentationMetric,
                   class_names: list[str] | None = None) -> Path:
    """Write ``metric``'s row-normalised confusion matrix as a PNG (:func:`confusion_picture`)."""
    path = Path(path)
    picture = Image.fromarray(confusion_picture(metric.confusion_matrix.numpy(), class_names))
    with atomic_open(path) as fh:
        picture.save(fh, format="PNG")
    return path


def _class_names(ckpt: dict[str, Any], dataset: Any, num_classes: int) -> list[str] | None:
    """Class names from the checkpoint, else the dataset, when they give one per class."""
    for names in (ckpt.get("class_names"), getattr(dataset, "class_names", None)):
        if names is not None and len(names) == num_classes:
            return list(names)
    return None


def evaluate_checkpoint(
    path: str | Path, overrides: Iterable[str] = (), split: str | None = None,
    confusion: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` (default: the config's validation split).

    For segmentation the result also holds ``per_class`` (:meth:`SegmentationMetric.per_class`,
    names from the checkpoint or dataset, else ``class_<i>``), and ``confusion`` names a PNG to
    write the row-normalised confusion matrix to.
    """
    model, cfg, ckpt = load_model(path, overrides)
    device = resolve_device(cfg["device"])
    dataset = build_dataset_split(cfg, split or cfg["data"]["val_split"], train=False)
    bs = cfg["data"]["eval_batch_size"] or cfg["data"]["batch_size"]
    loader = DataLoader(dataset, batch_size=bs, num_workers=cfg["data"]["num_workers"])
    metric = build_metric(cfg, ckpt.get("num_classes"))
    is_seg = isinstance(metric, SegmentationMetric)
    if confusion is not None and not is_seg:
        raise ValueError(f"a confusion matrix needs a segmentation model, this one does "
                         f"{cfg['model']['task']!r}")
    with torch.no_grad():
        result = evaluate_model(model.to(device), loader, metric, cfg["model"]["task"], device)
    if is_seg:
        names = _class_names(ckpt, dataset, metric.num_classes)
        result["per_class"] = metric.per_class(names)
        if confusion is not None:
            save_confusion(confusion, metric, names)
    return result
