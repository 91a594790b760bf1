"""Checkpoint -> model: the one place a trained bidense model is rebuilt from its file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from .builders import build_model, config_from_yaml
from .checkpoint import CheckpointError, load_checkpoint
from .config import load_config

__all__ = ["load_model"]


def load_model(
    path: str | Path, overrides: Iterable[str] = ()
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """``(model in eval mode, config, checkpoint)`` from a bidense checkpoint.

    The model is rebuilt from the checkpoint's stored config (merged over today's defaults,
    then ``overrides`` as dotted ``key=value`` strings) and its weights loaded strictly, so a
    checkpoint that does not fit its own architecture is a :class:`CheckpointError`.
    """
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
