"""Convert an arbitrary float model into a binary one: ``binarize(model, method)``.

Every ``nn.Conv2d``, ``nn.ConvTranspose2d`` and ``nn.Linear`` (matched exactly by type, so
already-binary layers are left alone) is replaced in place by ``BinaryConv2d``,
``BinaryConvTranspose2d`` or ``BinaryLinear`` carrying the method's binarizers (see
:mod:`bidense.models.methods`), with the float weight and bias copied as the latent weights.
Nothing else changes: no BN, bypass or non-linearity is added, so the converted model computes
the same graph with binarized operands.

Selection, in this order of precedence (a layer is kept full precision with the first reason
that applies):

1. a full-precision method (``fp32``): nothing is converted.
2. ``keep``: ``"first"`` / ``"last"`` keep the first / last candidate layer in registration
   order (``model.named_modules()``); any other entry is an fnmatch pattern on the module name.
3. ``exclude``: fnmatch patterns; matching layers are kept.
4. ``include``: when given, only layers matching one of its patterns are converted.
5. Unsupported configurations (padding modes other than ``zeros``) are kept with the reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .methods import MethodSpec, get_method

_CANDIDATES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclass
class ConversionReport:
    """What :func:`binarize` changed.

    Attributes:
        method: method name.
        converted: ``(module name, old type, new type)`` per swapped layer.
        kept: ``(module name, type, reason)`` per candidate left full precision.
    """

    method: str
    converted: list[tuple[str, str, str]] = field(default_factory=list)
    kept: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"binarize(method={self.method!r}): {len(self.converted)} converted, "
                 f"{len(self.kept)} kept"]
        lines += [f"  converted {n}: {a} -> {b}" for n, a, b in self.converted]
        lines += [f"  kept      {n}: {t} ({why})" for n, t, why in self.kept]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "method": self.method,
            "converted": [{"name": n, "from": a, "to": b} for n, a, b in self.converted],
            "kept": [{"name": n, "type": t, "reason": r} for n, t, r in self.kept],
        }


def _match(name: str, patterns: Iterable[str]) -> str | None:
    for p in patterns:
        if fnmatch.fnmatchcase(name, p):
            return p
    return None


def _swap(parent_of: dict[str, tuple[nn.Module, str]], name: str, new: nn.Module) -> None:
    parent, attr = parent_of[name]
    setattr(parent, attr, new)


def _build(layer: nn.Module, spec: MethodSpec) -> nn.Module:
    """The binary layer of ``spec`` with the shape of ``layer`` (built by the spec, as in the
    architectures: same binarizers, same per-input-channel scales of transposed convs)."""
    bias = layer.bias is not None  # type: ignore[union-attr]
    if type(layer) is nn.Linear:
        new = spec.linear(layer.in_features, layer.out_features, bias=bias)
    elif type(layer) is nn.Conv2d:
        new = spec.conv(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            groups=layer.groups,
            bias=bias,
            dilation=layer.dilation,
        )
    else:
        new = spec.conv_transpose(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            output_padding=layer.output_padding,
            groups=layer.groups,
            bias=bias,
            dilation=layer.dilation,
        )
    ref = layer.weight
    new = new.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight)  # type: ignore[union-attr]
        if bias:
            new.bias.copy_(layer.bias)  # type: ignore[union-attr]
    new.train(layer.training)
    return new


def binarize(
    model: nn.Module,
    method: str | MethodSpec,
    keep: Sequence[str] = ("first", "last"),
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> tuple[nn.Module, ConversionReport]:
    """Swap a float model's Conv2d / ConvTranspose2d / Linear layers for binary ones, in place.

    This is an outermost entry: ``method`` may be a name, resolved here once.

    Args:
        model: any ``nn.Module``; modified in place and returned.
        method: binarization method name or spec (its conv / linear binarizers are used; for
            ``bidense`` convs get DAB activations and mean|W| weights, linears RSign and centred
            weights).
        keep: ``"first"``, ``"last"`` and/or fnmatch name patterns to keep full precision.
        include: fnmatch patterns; if given, only matching layers are converted.
        exclude: fnmatch patterns of layers to keep full precision.

    Returns:
        ``(model, report)``; see :class:`ConversionReport`.
    """
    spec = get_method(method)
    if type(model) in _CANDIDATES:
        raise ValueError(
            "binarize() needs a container module; wrap a single layer in nn.Sequential"
        )
    if isinstance(keep, str):
        keep = (keep,)
    report = ConversionReport(spec.name)
    parent_of: dict[str, tuple[nn.Module, str]] = {}
    candidates: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    for pname, parent in model.named_modules(remove_duplicate=False):
        # _modules, not named_children(): the latter hides a module registered twice.
        for attr in parent._modules:
            parent_of[f"{pname}.{attr}" if pname else attr] = (parent, attr)
    # named_modules() is depth-first registration order, which defines "first" and "last".
    for name, child in model.named_modules():
        if type(child) in _CANDIDATES and id(child) not in seen:
            seen.add(id(child))
            candidates.append((name, child))
    first = candidates[0][0] if candidates else None
    last = candidates[-1][0] if candidates else None
    patterns = [k for k in keep if k not in ("first", "last")]
    replaced: dict[int, nn.Module] = {}
    for name, layer in candidates:
        tname = type(layer).__name__
        reason: str | None = None
        if not spec.is_binary:
            reason = "method fp32"
        elif "first" in keep and name == first:
            reason = "first layer (keep)"
        elif "last" in keep and name == last:
            reason = "last layer (keep)"
        elif (p := _match(name, patterns)) is not None:
            reason = f"keep pattern {p!r}"
        elif exclude and (p := _match(name, exclude)) is not None:
            reason = f"exclude pattern {p!r}"
        elif include is not None and _match(name, include) is None:
            reason = "not matched by include"
        elif getattr(layer, "padding_mode", "zeros") != "zeros":
            reason = f"padding_mode {layer.padding_mode!r} unsupported"  # type: ignore[union-attr]
        if reason is not None:
            report.kept.append((name, tname, reason))
            continue
        new = _build(layer, spec)
        replaced[id(layer)] = new
        report.converted.append((name, tname, type(new).__name__))
    # A layer registered under several names (weight sharing) is swapped everywhere it appears.
    for name, (parent, attr) in parent_of.items():
        child = getattr(parent, attr)
        if id(child) in replaced:
            _swap(parent_of, name, replaced[id(child)])
    return model, report
