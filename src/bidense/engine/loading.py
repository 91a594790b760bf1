"""Checkpoint -> model: the one place a trained bidense model is rebuilt from its file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from .builders import build_model, config_from_yaml
from .checkpoint import CheckpointError, load_checkpoint
from .config import load_config

__all__ = ["DEFAULT_INPUT_SIZE", "load_model", "trained_size"]

#: input (H, W) used when a config names no training size
DEFAULT_INPUT_SIZE: tuple[int, int] = (64, 64)


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


def trained_size(cfg: dict[str, Any]) -> tuple[tuple[int, int], str]:
    """The (H, W) a checkpoint's model was trained at and the config key it comes from: the
    training crop (``data.crop_size``), else the training dataset's own ``size`` option
    (``data.train_kwargs``, then ``data.kwargs``: the synthetic scenes), else
    :data:`DEFAULT_INPUT_SIZE` (``"default"``). Export and serve both use it."""
    data = cfg.get("data") or {}
    for key, size in (("data.crop_size", data.get("crop_size")),
                      ("data.train_kwargs.size", (data.get("train_kwargs") or {}).get("size")),
                      ("data.kwargs.size", (data.get("kwargs") or {}).get("size"))):
        if size:
            return (int(size[0]), int(size[1])), key
    return DEFAULT_INPUT_SIZE, "default"
