"""Check an exported ``.bdn`` file: the packed runtime's output against PyTorch eval.

Two measurements, because a binarized network amplifies any difference:

* **End to end**: ``Runtime(path)(x)`` against ``model(x)``, as a relative max error and, for
  multi-channel outputs, the share of pixels whose argmax agrees.
* **Layer by layer, teacher-forced** (:func:`forced_comparison`): every binary layer of the
  runtime receives PyTorch's input of that layer instead of its own, so a difference stays
  local. Between two binary layers the runtime computes the same float32 operations as
  PyTorch up to rounding, so the runtime's input of each binary layer must match PyTorch's to
  about ``1e-6`` relative (``local_error``: anything larger is a bug). A *sign flip* is an
  element whose binarized sign differs between the two; with the inputs forced, a flip happens
  only where a value lies within float rounding of its threshold (``torch.sign(0) = 0`` against
  a PyTorch sum that rounded to +-1 ulp, an erf rounding at a GELU's zero, ...). Flips are
  inherent, not bugs, but each one changes a popcount, and the network amplifies it:
  ``sign_flips`` counts them.

:func:`verify` runs both on realistic inputs (synthetic scenes, a constant and a black image,
the seeded normal sample) and decides ``ok``: no local error above ``local_tolerance``, and
either every end-to-end error within ``tolerance`` or, where signs flipped inherently, no more
than ``max_flips`` flips and argmax agreement of at least ``min_agreement``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from bidense.runtime import Runtime
from bidense.runtime.ops.binary import BINARY_MODULE_OPS

__all__ = ["ForcedComparison", "VerifyReport", "forced_comparison", "max_relative_error",
           "realistic_inputs", "verify"]

#: end-to-end max relative error allowed where no sign flips (float32 rounding: ~1e-6 seen)
TOLERANCE = 1e-4
#: the runtime's input of a binary layer given PyTorch's input of the previous one
LOCAL_TOLERANCE = 1e-4
#: inherent sign flips allowed per input before the result counts as different
MAX_FLIPS = 0
#: argmax agreement required where signs flipped
MIN_AGREEMENT = 0.99


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (relative to the reference output's scale)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(float(np.max(np.abs(b64))), 1e-30))


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Share of positions whose channel argmax (axis 1) agrees; ``None`` for one channel."""
    if a.ndim < 2 or a.shape[1] < 2:
        return None
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


@dataclass
class ForcedComparison:
    """One input's comparison (see the module docstring).

    ``error``: end-to-end max relative error; ``agreement``: argmax agreement (``None`` for one
    output channel); ``local_error``: the largest relative error of a binary layer's runtime
    input (the previous binary layers forced) and of the forced output; ``sign_flips``: the
    flipped signs over all binary layers, forced; ``flips_per_layer``: module key -> count
    (layers with flips only); ``worst_layer``: the key of the layer with ``local_error``;
    ``binarized``: how many signs the binary layers formed (``sign_flips`` is a share of it).
    """

    error: float
    agreement: float | None
    local_error: float
    sign_flips: int
    flips_per_layer: dict[str, int] = field(default_factory=dict)
    worst_layer: str = ""
    binarized: int = 0


class _ForcedInput:
    """A runtime op that runs on PyTorch's input of its layer instead of the one it is given
    (and records the given one)."""

    def __init__(self, op: Any, forced: list[np.ndarray], seen: list[np.ndarray]) -> None:
        self._op, self._forced, self._seen = op, forced, seen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._op, name)

    def run(self, x: np.ndarray, ctx: Any, *args: Any) -> tuple[np.ndarray, str]:
        forced = self._forced[len(self._seen)]  # a module may run more than once
        self._seen.append(np.array(x, np.float32))
        if forced.ndim == 4:  # the runtime holds 4-D activations channels-last
            forced = np.ascontiguousarray(forced.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return self._op.run(forced, ctx, *args)


def _binary_layers(rt: Runtime) -> dict[str, Any]:
    # module key -> op of the runtime's binary layers (bconv, bconvT, blinear)
    return {k: op for k, op in rt._ops.items() if op.kind in BINARY_MODULE_OPS
            and op.binarizer.binary}


def _torch_inputs(model: nn.Module, keys: list[str], x: torch.Tensor
                  ) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    # PyTorch's output and the inputs of each binary layer, per call (the key's first module
    # name; a folded BatchNorm is joined with '+')
    captured: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    hooks = []
    for key in keys:
        def hook(_m: nn.Module, args: tuple, key: str = key) -> None:
            captured[key].append(args[0].detach().float().numpy().copy())
        hooks.append(model.get_submodule(key.split("+")[0]).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            out = model(x).float().numpy()
    finally:
        for h in hooks:
            h.remove()
    return out, captured


def _signs(op: Any, x: np.ndarray) -> np.ndarray:
    # the signs a binary layer's binarizer gives x (channels on axis 1, or last for linear)
    pre = op.binarizer.binarize(x, -1 if op.kind == "blinear" else 1)[0]
    return np.sign(pre)


def forced_comparison(model: nn.Module, rt: Runtime, x: torch.Tensor) -> ForcedComparison:
    """End-to-end and teacher-forced comparison of ``rt`` against ``model`` (eval) on ``x``."""
    keys = list(_binary_layers(rt))
    reference, inputs = _torch_inputs(model, keys, x)
    got = rt(x.numpy())
    error = max_relative_error(got, reference)
    agreement = argmax_agreement(got, reference)
    originals = dict(rt._ops)
    seen: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    try:
        for key in keys:
            rt._ops[key] = _ForcedInput(originals[key], inputs[key], seen[key])
        forced_out = rt(x.numpy())
    finally:
        rt._ops.update(originals)
    local = {key: max(max_relative_error(a, b) for a, b in zip(seen[key], inputs[key]))
             for key in keys}
    local["output"] = max_relative_error(forced_out, reference)
    flips = {key: sum(int((_signs(originals[key], a) != _signs(originals[key], b)).sum())
                      for a, b in zip(seen[key], inputs[key])) for key in keys}
    worst = max(local, key=local.get)
    return ForcedComparison(error=error, agreement=agreement, local_error=local[worst],
                            sign_flips=sum(flips.values()),
                            flips_per_layer={k: v for k, v in flips.items() if v},
                            worst_layer=worst,
                            binarized=sum(a.size for key in keys for a in inputs[key]))


#: ImageNet normalisation of the models' inputs (the values of ``bidense.data.transforms``,
#: which export may not import; tests/test_exactness.py checks they agree)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def realistic_inputs(example_input: torch.Tensor, images: Any = None,
                     mean: tuple[float, ...] = IMAGENET_MEAN,
                     std: tuple[float, ...] = IMAGENET_STD) -> dict[str, torch.Tensor]:
    """Named inputs of ``example_input``'s shape: the example itself (``"normal"``), a black
    image (every pixel ``-mean / std``, the normalised value of a black pixel), a constant
    mid-grey image, and each of ``images`` (uint8 ``(N, H, W, 3)``, e.g. synthetic scenes;
    resized to the input size by nearest neighbour), normalised by ``mean`` / ``std``."""
    n, c, h, w = example_input.shape
    m = torch.tensor(mean[:c]).view(1, c, 1, 1)
    s = torch.tensor(std[:c]).view(1, c, 1, 1)

    def normalised(pixels: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1]
        return ((pixels - m) / s).float().contiguous()

    out = {"normal": example_input,
           "black": normalised(torch.zeros(n, c, h, w)),
           "constant": normalised(torch.full((n, c, h, w), 128 / 255))}
    if images is not None:
        for i, img in enumerate(np.asarray(images)):
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None, :c].float()
            t = torch.nn.functional.interpolate(t / 255, size=(h, w), mode="nearest")
            out[f"image{i}"] = normalised(t.expand(n, c, h, w))
    return out


@dataclass
class VerifyReport:
    """What :func:`verify` measured: per named input a :class:`ForcedComparison`, the worst
    figures over all inputs, the tolerances used and ``ok``."""

    results: dict[str, ForcedComparison]
    tolerance: float
    local_tolerance: float
    max_flips: int
    min_agreement: float

    @property
    def max_rel_error(self) -> float:
        return max(r.error for r in self.results.values())

    @property
    def local_error(self) -> float:
        return max(r.local_error for r in self.results.values())

    @property
    def sign_flips(self) -> int:
        return max(r.sign_flips for r in self.results.values())

    @property
    def agreement(self) -> float | None:
        values = [r.agreement for r in self.results.values() if r.agreement is not None]
        return min(values) if values else None

    def passed(self, r: ForcedComparison) -> bool:
        """One input passes: no local error above ``local_tolerance`` (a bug), and the output
        within ``tolerance``, or only inherent flips (at most ``max_flips``) with argmax
        agreement of at least ``min_agreement``."""
        if r.local_error > self.local_tolerance:
            return False
        if r.error <= self.tolerance:
            return True
        return r.sign_flips <= self.max_flips and (r.agreement or 0.0) >= self.min_agreement

    @property
    def ok(self) -> bool:
        return all(self.passed(r) for r in self.results.values())

    def __format__(self, spec: str) -> str:
        # stands where the max error (a float) was printed before
        return format(self.max_rel_error, spec) if spec else str(self)

    def __str__(self) -> str:
        agree = "n/a" if self.agreement is None else f"{100 * self.agreement:.2f}%"
        worst = [k for k, r in self.results.items() if not self.passed(r)]
        return (f"verify {'ok' if self.ok else 'FAILED'}: max relative error "
                f"{self.max_rel_error:.3g} (tolerance {self.tolerance:g}), argmax agreement "
                f"{agree}, sign flips {self.sign_flips} (at most {self.max_flips}), local error "
                f"{self.local_error:.3g} (tolerance {self.local_tolerance:g}) over "
                f"{len(self.results)} inputs" + (f"; failed on {', '.join(worst)}" if worst
                                                else ""))


def verify(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor,
           images: Any = None, *, tolerance: float = TOLERANCE,
           local_tolerance: float = LOCAL_TOLERANCE, max_flips: int = MAX_FLIPS,
           min_agreement: float = MIN_AGREEMENT) -> VerifyReport:
    """Compare ``Runtime(path)`` with ``model`` in eval mode on :func:`realistic_inputs` of
    ``example_input`` (plus ``images``, e.g. synthetic scenes) with :func:`forced_comparison`;
    the model's train/eval mode is restored afterwards.

    ``report.ok`` holds when, on every input, no binary layer's forced input differs by more
    than ``local_tolerance`` (that would be a bug) and the output is within ``tolerance``
    relative, or else at most ``max_flips`` signs flipped inherently (values within rounding
    of their threshold) and the argmax agrees on at least ``min_agreement`` of the pixels.
    """
    was_training = model.training
    rt = Runtime(path)
    try:
        model.eval()
        results = {name: forced_comparison(model, rt, x)
                   for name, x in realistic_inputs(example_input, images).items()}
    finally:
        model.train(was_training)
    return VerifyReport(results, tolerance, local_tolerance, max_flips, min_agreement)
