"""Training / evaluation engine: configs, loops, checkpoints, logging, distributed, demo.

:func:`load_model` is the one way back from a checkpoint file to a model (the CLI's ``eval``,
``predict`` and ``export`` and the trainer's distillation teacher all use it).
"""

from .checkpoint import CheckpointError, atomic_save, load_checkpoint
from .config import DEFAULTS, ConfigError, load_config
from .evaluate import evaluate_checkpoint, evaluate_model, resolve_device
from .loading import DEFAULT_INPUT_SIZE, load_model, trained_size
from .predict import predict_files
from .trainer import train

__all__ = [
    "DEFAULTS",
    "CheckpointError",
    "ConfigError",
    "atomic_save",
    "evaluate_checkpoint",
    "evaluate_model",
    "load_checkpoint",
    "load_config",
    "load_model",
    "trained_size",
    "DEFAULT_INPUT_SIZE",
    "predict_files",
    "resolve_device",
    "train",
]
