"""Run configuration: YAML files over built-in defaults, plus dotted ``key=value`` overrides.

Every key a user can set exists in :data:`DEFAULTS`; an unknown key is an error naming it, so a
typo never silently trains with a default.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..data import DATASETS
from ..tasks import TASKS

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 1,
    "device": "auto",  # auto | cpu | cuda
    "output_dir": "runs",
    "model": {
        "name": "upernet_convnext_atto",
        "method": "bidense",
        "task": "seg",
        "num_classes": None,  # None: taken from the dataset
        "max_depth": 10.0,
        "kwargs": {},
    },
    "data": {
        "dataset": "synthetic",
        "root": None,
        "train_split": "train",
        "val_split": "val",
        "crop_size": None,  # [h, w] random crop for training; None keeps the full image
        "scale_range": None,  # [lo, hi] random rescale for training
        "batch_size": 8,
        "eval_batch_size": None,
        "num_workers": 0,
        "limit_train": None,  # use only the first N training samples
        "limit_val": None,
        "kwargs": {},  # passed to the dataset for every split
        "train_kwargs": {},  # ... and these to the training split only
        "val_kwargs": {},  # ... and these to the evaluation split only
    },
    "train": {
        "epochs": 10,
        "lr": 1.0e-3,
        "weight_decay": 0.01,
        "betas": [0.9, 0.999],
        "effective_batch_size": None,  # gradient accumulation to this many samples per update
        "scheduler": "onecycle",  # onecycle | constant
        "scheduler_step": "epoch",  # epoch (as the BiDense reference) | step
        "pct_start": 0.3,
        "amp": "auto",  # mixed precision: auto (CUDA only) | off
        "grad_clip": None,
        "best_metric": None,  # None: the task's headline metric
        "eval_every": 1,
        "save_every": 0,  # also keep epoch_N.pt every N epochs (0: off)
        "progress": "auto",  # auto (only on a terminal) | on | off
        "tensorboard": False,
        "distill": {"teacher": None, "weight": 1.0, "temperature": 1.0},
    },
    "eval": {
        "protocol": "default",  # default | bidense-reference
        "min_depth": 1.0e-3,
        "max_depth": None,  # None: model.max_depth
        "crop": None,  # depth crop: eigen | garg | eigen_kitti
    },
}

#: the type of each key whose default is None (every other key takes its default's type):
#: a Python type, or ``(element type, length)`` for a list
OPTIONAL_TYPES: dict[str, type | tuple[type, int]] = {
    "model.num_classes": int,
    "data.root": str,
    "data.crop_size": (int, 2),
    "data.scale_range": (float, 2),
    "data.eval_batch_size": int,
    "data.limit_train": int,
    "data.limit_val": int,
    "train.effective_batch_size": int,
    "train.grad_clip": float,
    "train.best_metric": str,
    "train.distill.teacher": str,
    "eval.max_depth": float,
    "eval.crop": str,
}
#: switches whose values include on/off, which YAML 1.1 reads as booleans: stored as "on"/"off"
SWITCHES = ("train.amp", "train.progress")
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}

_LOGIT_TASKS = "/".join(name for name, spec in TASKS.items() if spec.head_output == "logits")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str):
    """Parse YAML text with :class:`_Loader`."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: str, source: str) -> None:
    for key, value in update.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise ConfigError(f"{source}: unknown config key '{path}'")
        free_form = path.endswith("kwargs")
        if isinstance(base[key], dict) and not free_form:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{path}' must be a mapping, got {value!r}")
            _merge(base[key], value, path, source)
        elif path in SWITCHES and isinstance(value, bool):
            base[key] = "on" if value else "off"
        else:
            base[key] = copy.deepcopy(value)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    return key.strip().split("."), yaml_load(raw) if raw != "" else None


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), base: Mapping | None = None
) -> dict[str, Any]:
    """Defaults, then the YAML file (which may name a ``_base_`` file relative to itself), then
    the overrides. Unknown keys raise :class:`ConfigError`."""
    cfg = copy.deepcopy(dict(base) if base is not None else DEFAULTS)
    if path is not None:
        for layer_path, layer in _yaml_chain(Path(path)):
            _merge(cfg, layer, "", str(layer_path))
    for item in overrides:
        keys, value = parse_override(item)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(cfg, nested, "", "override")
    validate(cfg)
    return cfg


def _yaml_chain(path: Path) -> list[tuple[Path, dict]]:
    chain: list[tuple[Path, dict]] = []
    seen: set[Path] = set()
    while True:
        path = path.resolve()
        if path in seen:
            raise ConfigError(f"{path}: _base_ chain loops")
        seen.add(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "parse error"
            raise ConfigError(f"{path}: invalid YAML ({first})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        base = data.pop("_base_", None)
        chain.append((path, data))
        if base is None:
            break
        path = path.parent / base
    return list(reversed(chain))


def expected_type(example: Any) -> type | tuple[type, int] | None:
    """The type a default value stands for: ``0.1`` -> float, ``[0.9, 0.999]`` -> (float, 2)."""
    if isinstance(example, list | tuple) and example:
        return expected_type(example[0]), len(example)
    return type(example) if type(example) in _TYPE_NAMES else None


def _type_mismatch(value: Any, expected: type | tuple[type, int]) -> str | None:
    """None if ``value`` fits ``expected``, else what was expected ("a list of 2 numbers")."""
    if isinstance(expected, tuple):
        item, length = expected
        fits = isinstance(value, list | tuple) and len(value) == length
        if fits and all(_type_mismatch(v, item) is None for v in value):
            return None
        noun = _TYPE_NAMES[item].split(" ", 1)[-1]
        return f"a list of {length} {noun}s"
    if isinstance(value, bool):
        fits = expected is bool
    else:
        fits = isinstance(value, int | float) if expected is float else isinstance(value, expected)
    return None if fits else _TYPE_NAMES[expected]


def _check_types(cfg: Mapping[str, Any], defaults: Mapping[str, Any], where: str = "") -> None:
    for key, default in defaults.items():
        path = f"{where}.{key}" if where else key
        value = cfg[key]
        if isinstance(default, dict) and not path.endswith("kwargs"):
            _check_types(value, default, path)
            continue
        expected = OPTIONAL_TYPES.get(path) if default is None else expected_type(default)
        if value is None or expected is None:
            continue
        wanted = _type_mismatch(value, expected)
        if wanted is not None:
            raise ConfigError(
                f"{path}={value!r}: expected {wanted}, got {type(value).__name__}"
            )


def _check_dataset_options(data: Mapping[str, Any]) -> None:
    """Dataset options (``data.kwargs`` / ``train_kwargs`` / ``val_kwargs``) named like an
    argument of the dataset class must have the type of that argument's default. (Other names
    are left to :func:`bidense.data.build_dataset`, which renames some, e.g. ``data_seed``.)"""
    entry = DATASETS.get(str(data["dataset"]).lower().replace("-", "_"))
    if entry is None:  # an alias or an unknown name: build_dataset resolves or refuses it
        return
    params = inspect.signature(entry[0]).parameters
    for section in ("kwargs", "train_kwargs", "val_kwargs"):
        for key, value in (data[section] or {}).items():
            expected = expected_type(params[key].default) if key in params else None
            wanted = None if value is None or expected is None else _type_mismatch(value, expected)
            if wanted is not None:
                raise ConfigError(
                    f"data.{section}.{key}={value!r}: the {data['dataset']} dataset expects "
                    f"{wanted}"
                )


def validate(cfg: Mapping[str, Any]) -> None:
    """Check values whose mistakes would otherwise surface deep inside training: every value
    against the type of its default (:data:`OPTIONAL_TYPES` where the default is None), dataset
    options against the dataset's signature, then the choices below."""
    _check_types(cfg, DEFAULTS)
    _check_dataset_options(cfg["data"])
    task = cfg["model"]["task"]
    if task not in TASKS:
        raise ConfigError(f"model.task must be one of {sorted(TASKS)}, got {task!r}")
    if cfg["train"]["scheduler"] not in ("onecycle", "constant"):
        raise ConfigError("train.scheduler must be 'onecycle' or 'constant'")
    if cfg["train"]["scheduler_step"] not in ("epoch", "step"):
        raise ConfigError("train.scheduler_step must be 'epoch' or 'step'")
    if cfg["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError("device must be 'auto', 'cpu' or 'cuda'")
    for key in ("epochs", "batch_size"):
        section = "train" if key == "epochs" else "data"
        value = cfg[section][key]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{section}.{key} must be a positive integer, got {value!r}")
    if cfg["train"]["distill"]["teacher"] and TASKS[task].head_output != "logits":
        # the distillation loss compares softened class probabilities, so it needs logits
        raise ConfigError(f"train.distill.teacher: distillation is defined for {_LOGIT_TASKS}")
    if cfg["eval"]["protocol"] not in ("default", "bidense-reference"):
        raise ConfigError("eval.protocol must be 'default' or 'bidense-reference'")


def dump_config(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
