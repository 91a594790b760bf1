"""Binarizer base classes and the name registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

Kind = Literal["activation", "weight"]

_REGISTRY: dict[str, dict[str, type[nn.Module]]] = {"activation": {}, "weight": {}}
_IDENTITY_NAMES = ("identity", "fp32", "none")


class ActivationBinarizer(nn.Module):
    """Base class: maps a real tensor to a binary (scaled) tensor of the same shape.

    ``bits`` is the precision of the values the following conv sees (1, or 32 for identity).
    Sub-classes with per-channel parameters use ``channel_dim`` (1 for NCHW, -1 for tokens).
    """

    bits: int = 1
    name: str = ""

    def __init__(self, channels: int | None = None, channel_dim: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.channel_dim = channel_dim

    def output_scale(
        self,
        x: Tensor,
        weight_shape: tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        transposed: bool = False,
    ) -> Tensor | None:
        """A factor the layer multiplies onto its output (XNOR-Net's K); ``None`` if unused."""
        return None

    def positive_value(self, x: Tensor) -> Tensor | float:
        """The value a +1 bit stands for, given input ``x``: what "+1 padding" pads with.

        1 for plain sign binarizers; scaled binarizers override it (DAB: its alpha).
        """
        return 1.0

    def _per_channel(self, p: Tensor, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.channel_dim] = p.numel()
        return p.view(shape)

    def _stat_dims(self, x: Tensor) -> tuple[int, ...]:
        cdim = self.channel_dim % x.dim()
        return tuple(d for d in range(1, x.dim()) if d != cdim)

    def _require_channels(self) -> int:
        if self.channels is None or self.channels <= 0:
            raise ValueError(f"activation binarizer '{self.name}' needs a positive `channels`")
        return int(self.channels)

    def extra_repr(self) -> str:
        parts = [f"a{self.bits}"]
        if self.channels is not None:
            parts.append(f"channels={self.channels}")
        return ", ".join(parts)


class WeightBinarizer(nn.Module):
    """Base class: maps a latent weight to its binary form (same shape).

    Scales are computed per index of dim 0 of the weight tensor. ``clip_latent`` asks the trainer
    to clamp the latent weight into [-1, 1] after each update (:func:`clip_latent_weights`).
    """

    bits: int = 1
    name: str = ""
    clip_latent: bool = False

    def __init__(self, out_channels: int | None = None) -> None:
        super().__init__()
        self.out_channels = out_channels

    @staticmethod
    def _reduce_dims(w: Tensor) -> tuple[int, ...]:
        return tuple(range(1, w.dim()))

    def extra_repr(self) -> str:
        return f"w{self.bits}"


class IdentityActivation(ActivationBinarizer):
    """Full-precision pass-through (32-bit activations)."""

    bits = 32
    name = "identity"

    def positive_value(self, x: Tensor) -> Tensor | float:
        raise ValueError("full-precision activations have no +1 bit to pad with")

    def forward(self, x: Tensor) -> Tensor:
        return x


class IdentityWeight(WeightBinarizer):
    """Full-precision pass-through (32-bit weights)."""

    bits = 32
    name = "identity"

    def forward(self, w: Tensor) -> Tensor:
        return w


def register_binarizer(kind: Kind, name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a binarizer to the registry under ``name``."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind} binarizer '{name}' is already registered")
        _REGISTRY[kind][name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def list_binarizers(kind: Kind) -> list[str]:
    """Registered names for ``kind`` ('activation' or 'weight'), identity excluded."""
    if kind not in _REGISTRY:
        raise ValueError(f"kind must be 'activation' or 'weight', got {kind!r}")
    return sorted(_REGISTRY[kind])


def _lookup(kind: Kind, name: str) -> type[nn.Module]:
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(list_binarizers(kind))
        raise ValueError(f"unknown {kind} binarizer '{name}'; known: {known}") from None


def get_activation_binarizer(
    spec: str | nn.Module | None,
    channels: int | None = None,
    *,
    channel_dim: int = 1,
    **kwargs,
) -> nn.Module:
    """Build an activation binarizer from a registry name (or return a given module)."""
    if isinstance(spec, nn.Module):
        return spec
    if spec is None or spec in _IDENTITY_NAMES:
        return IdentityActivation(channels, channel_dim)
    cls = _lookup("activation", str(spec))
    return cls(channels=channels, channel_dim=channel_dim, **kwargs)


def get_weight_binarizer(
    spec: str | nn.Module | None, out_channels: int | None = None, **kwargs
) -> nn.Module:
    """Build a weight binarizer from a registry name (or return a given module)."""
    if isinstance(spec, nn.Module):
        return spec
    if spec is None or spec in _IDENTITY_NAMES:
        return IdentityWeight(out_channels)
    cls = _lookup("weight", str(spec))
    return cls(out_channels=out_channels, **kwargs)


def bits_of(binarizer: nn.Module) -> int:
    """Bit width of a binarizer module (32 for anything that is not a binarizer)."""
    return int(getattr(binarizer, "bits", 32))


@torch.no_grad()
def clip_latent_weights(model: nn.Module) -> None:
    """Clamp latent weights to [-1, 1] in layers whose weight binarizer asks for it (BNN paper).

    Call after ``optimizer.step()``.
    """
    for module in model.modules():
        wb = getattr(module, "weight_binarizer", None)
        weight = getattr(module, "weight", None)
        if wb is not None and getattr(wb, "clip_latent", False) and isinstance(weight, Tensor):
            weight.clamp_(-1.0, 1.0)


def set_training_progress(model: nn.Module, fraction: float) -> None:
    """Tell annealed binarizers (EDE in AdaBin/IR-Net) how far training is.

    ``fraction`` is in [0, 1].."""
    for module in model.modules():
        if isinstance(module, ActivationBinarizer | WeightBinarizer) and hasattr(
            module, "set_progress"
        ):
            module.set_progress(fraction)
