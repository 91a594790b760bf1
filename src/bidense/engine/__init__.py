"""Training / evaluation engine: configs, loops, checkpoints, logging, distributed, demo.

Heavy pieces are imported lazily so ``import bidense.engine`` stays cheap.
"""

from .checkpoint import CheckpointError, atomic_save, load_checkpoint
from .config import DEFAULTS, ConfigError, load_config

__all__ = [
    "DEFAULTS",
    "CheckpointError",
    "ConfigError",
    "atomic_save",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_config",
    "model_from_checkpoint",
    "predict_files",
    "train",
]


def __getattr__(name: str):
    if name == "train":
        from .trainer import train

        return train
    if name in ("evaluate_checkpoint", "model_from_checkpoint"):
        from . import evaluate

        return getattr(evaluate, name)
    if name == "predict_files":
        from .predict import predict_files

        return predict_files
    raise AttributeError(name)
