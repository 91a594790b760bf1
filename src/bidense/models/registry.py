"""Model registry: ``create_model(name, task=..., num_classes=..., method=...)``.

:func:`create_model` is the one place where a method name is resolved to its
:class:`~bidense.models.methods.MethodSpec` and the task's output channels are checked; the
registered factories and every architecture below them receive the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from bidense.tasks import head_channels

from .deploy_options import configure_deployment
from .methods import MethodSpec, get_method

F = TypeVar("F", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable[[F], F]:
    """Decorator registering a model factory under ``name`` (default: the function name).

    The factory is called by :func:`create_model` as ``factory(task=..., num_classes=...,
    method=..., max_depth=..., **kw)`` with the resolved :class:`MethodSpec` as ``method`` and
    the checked output channels as ``num_classes``; it must return a module with attributes
    ``task``, ``method`` (the method *name*, ``spec.name``) and ``num_classes``.
    """

    def deco(fn: F) -> F:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_MODELS)


def create_model(
    name: str,
    task: str = "seg",
    num_classes: int | None = None,
    method: str | MethodSpec = "fp32",
    max_depth: float = 10.0,
    **kw: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registered model name (see :func:`list_models`).
        task: ``seg`` (logits (B, K, H, W)), ``depth`` (metres (B, 1, H, W)), ``saliency`` or
            ``road`` (logits (B, 1, H, W)).
        num_classes: K for ``seg`` (required); must be None or 1 otherwise.
        method: one of ``fp32, bnn, xnor, bireal, reactnet, adabin, bisrnet, bidense, ding``
            (or its :class:`MethodSpec`); resolved here, once.
        max_depth: depth scale of the depth head (sigmoid x max_depth).
        **kw: architecture-specific options, plus the deployment options ``dab_scale``
            ("channel" | "shared" | "group"), ``dab_group`` (the group size of "group",
            default 64) and ``pad_mode`` ("zero" | "one") of
            :func:`bidense.models.deploy_options.configure_deployment`.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    spec = get_method(method)
    k = head_channels(task, num_classes)
    options = {key: kw.pop(key, None) for key in ("dab_scale", "pad_mode", "dab_group")}
    model = _MODELS[name](task=task, num_classes=k, method=spec, max_depth=max_depth, **kw)
    if any(v is not None for v in options.values()):
        configure_deployment(model, **options)
    return model
