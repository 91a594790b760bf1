"""Evaluate a checkpoint, and rebuild a model from one."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .builders import build_dataset_split, build_metric, build_model, config_from_yaml
from .checkpoint import CheckpointError, load_checkpoint
from .config import load_config


def model_from_checkpoint(
    path: str | Path, overrides: Iterable[str] = ()
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """``(model in eval mode, config, checkpoint)`` from a bidense checkpoint."""
    ckpt = load_checkpoint(path)
    cfg = load_config(base=config_from_yaml(ckpt["config"]), overrides=overrides)
    model = build_model(cfg, ckpt.get("num_classes"))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit {cfg['model']['name']}/{cfg['model']['method']}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return model.eval(), cfg, ckpt


def evaluate_checkpoint(
    path: str | Path, overrides: Iterable[str] = (), split: str | None = None
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` (default: the config's validation split)."""
    from .trainer import evaluate_model, resolve_device

    model, cfg, ckpt = model_from_checkpoint(path, overrides)
    device = resolve_device(cfg["device"])
    dataset = build_dataset_split(cfg, split or cfg["data"]["val_split"], train=False)
    bs = cfg["data"]["eval_batch_size"] or cfg["data"]["batch_size"]
    loader = DataLoader(dataset, batch_size=bs, num_workers=cfg["data"]["num_workers"])
    metric = build_metric(cfg, ckpt.get("num_classes"))
    with torch.no_grad():
        return evaluate_model(model.to(device), loader, metric, cfg["model"]["task"], device)
