r"""Closed-form op counts of the ``ding`` layers (ding2024.md D2's rule) and the attention costs.

:func:`module_ops` ``(module, input_shape)`` returns exact counts for one forward pass (eval
mode, whole batch) of a :class:`~bidense.nn.DingUnit`, :class:`~bidense.nn.MultiBranchUpsample`,
:class:`~bidense.nn.BinaryDualAttention` or :class:`~bidense.nn.FullPrecisionDualAttention` on
that input shape, computed from the shapes alone (no forward pass). The keys are

* ``binary_macs``: MACs whose two operands are 1-bit ({+-1} or {0,1}), i.e. BOPs;
* ``fp_macs``: every other MAC (FP x FP or FP x 1-bit), i.e. FLOPs in the BNN-literature sense;
* ``elementwise``: floating-point elementwise work, by the per-element rule below.

Elementwise rule (the constants of :mod:`bidense.profile.rules` where both count the same op):
BatchNorm folded to scale + shift 2 per output element; softmax 3 per element (exp, sum, divide);
an activation threshold ``x >= tau`` (RSign, the attention's signs and {0,1} masks) 1 per
element; a row max or row sum 1 per input element; RPReLU 3 per element; sigmoid, scalar or
per-channel scaling, division, residual add 1 per element; bilinear interpolation 7 and nearest 1
per output element; average pooling 1 per input element of every (possibly overlapping) window;
CFB 0 for an identity or tiled channel and ``len(group)`` per pixel for an averaged channel;
PixelShuffle, reshapes and the latent-weight binarization (done once offline) 0.

:func:`~bidense.profile.summarize` counts every module from the operators it runs, except that a
module found in :data:`SELF_REPORTED_OPS` (or one with an ``efficiency_counts`` method) reports
its own functional ops: :class:`~bidense.nn.BinaryDualAttention` does, with the FP DANet
reference of :func:`full_precision_attention_ops` alongside.

The SA-OPs comparison of D2 (:func:`attention_cost_comparison`): OPs = BOPs/64 + FP MACs of the
four attention matmuls, ours (:func:`binary_attention_sa_ops`) against an FP32 DANet PAM + CAM
at the same C and N (:func:`full_precision_attention_ops`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn

from bidense.nn import (
    BinaryDualAttention,
    DingUnit,
    FullPrecisionDualAttention,
    MultiBranchUpsample,
    channel_adaptive_bypass_groups,
)
from bidense.nn.attention import attention_grid

from .rules import BATCH_NORM_COST, INTERPOLATION_COST, SOFTMAX_COST, adaptive_window_sum

__all__ = [
    "MODULE_OPS",
    "SELF_REPORTED_OPS",
    "attention_cost_comparison",
    "binary_attention_sa_ops",
    "full_precision_attention_ops",
    "module_ops",
    "self_reported_counter",
]

Counts = dict[str, int]

#: RPReLU per element: shift, PReLU, shift.
RPRELU_COST = 3
_BILINEAR_COST = INTERPOLATION_COST["upsample_bilinear2d"]
_NEAREST_COST = INTERPOLATION_COST["upsample_nearest2d"]


# ---------------------------------------------------------------------------------------------
# counting helpers
# ---------------------------------------------------------------------------------------------
def _counts(binary_macs: int = 0, fp_macs: int = 0, elementwise: int = 0) -> Counts:
    return {
        "binary_macs": int(binary_macs),
        "fp_macs": int(fp_macs),
        "elementwise": int(elementwise),
    }


def _sum_counts(parts: Iterable[Counts]) -> Counts:
    out = _counts()
    for p in parts:
        for k in out:
            out[k] += int(p.get(k, 0))
    return out


def _check_shape(
    input_shape: Sequence[int], channels: int, module: nn.Module
) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[1] != channels or min(shape) < 1:
        raise ValueError(
            f"module_ops({type(module).__name__}) expects (B, {channels}, H, W), got {shape}"
        )
    return shape[0], shape[2], shape[3]


def adaptive_pool_cost(h: int, w: int, grid: tuple[int, int]) -> int:
    """Elementwise cost of ``adaptive_avg_pool2d`` of one (h, w) plane to ``grid``: 1 per input
    element of every window (windows overlap when the sizes do not divide)."""
    return adaptive_window_sum(h, grid[0]) * adaptive_window_sum(w, grid[1])


def cfb_cost(c_in: int, c_out: int) -> int:
    """Elementwise cost per pixel of :func:`~bidense.nn.channel_adaptive_bypass` ``c_in ->
    c_out``: tiled (copied) channels are free, each averaged channel costs the size of its
    group."""
    if c_in == c_out:
        return 0
    r = c_out // c_in
    groups = channel_adaptive_bypass_groups(c_in, c_out)
    return sum(len(g) for g in groups[r * c_in :])


def _conv_counts(
    cin: int, cout: int, k: int, h_in: int, w_in: int, h_out: int, w_out: int, batch: int,
    binary: bool,
) -> Counts:
    """A conv (+ its RSign threshold when binary) followed by BN."""
    macs = batch * cin * cout * k * k * h_out * w_out
    thr = batch * cin * h_in * w_in if binary else 0
    bn = BATCH_NORM_COST * batch * cout * h_out * w_out
    return _counts(macs if binary else 0, 0 if binary else macs, thr + bn)


# ---------------------------------------------------------------------------------------------
# D0-D2: one counting function per layer
# ---------------------------------------------------------------------------------------------
def _unit_ops(m: DingUnit, input_shape: Sequence[int]) -> Counts:
    """:class:`~bidense.nn.DingUnit`: conv ``C_in C_out k^2 H_out W_out`` MACs (binary or FP) +
    RSign ``C_in H W`` + BN; shortcut: pooling ``C_in H_out W_out s^2``, FP 1x1 ``C_in C_out
    H_out W_out`` + BN, or CFB; residual add and RPReLU (1 + 3 per output element). Multiplied
    by the batch."""
    b, h, w = _check_shape(input_shape, m.in_channels, m)
    ho, wo = m.output_size(h, w)
    cin, cout = m.in_channels, m.out_channels
    parts = [_conv_counts(cin, cout, m.kernel_size, h, w, ho, wo, b, m.binary)]
    n_out = b * ho * wo
    if m.pool is not None:
        parts.append(_counts(elementwise=cin * n_out * m.stride**2))
    if m.proj is not None:
        bn = BATCH_NORM_COST * cout * n_out
        parts.append(_counts(fp_macs=cin * cout * n_out, elementwise=bn))
    else:
        parts.append(_counts(elementwise=cfb_cost(cin, cout) * n_out))
    parts.append(_counts(elementwise=(1 + RPRELU_COST) * cout * n_out))
    return _sum_counts(parts)


def _upsample_ops(m: MultiBranchUpsample, input_shape: Sequence[int]) -> Counts:
    r""":class:`~bidense.nn.MultiBranchUpsample`, per image with :math:`N = HW`,
    :math:`N_{out} = s^2 N`, :math:`n_b` branches: nearest xs of the input once, shared by the
    ``nearest`` branch and the bypass (:math:`C_{in} N_{out}`); ``nearest``
    :math:`9 C_{in} C_{out} N_{out}` MACs + RSign :math:`C_{in} N_{out}` + BN; ``bilinear`` the
    same + :math:`7 C_{in} N_{out}`; ``transposed`` :math:`C_{in} C_{out} N_{out}` MACs + RSign
    :math:`C_{in} N` + BN; ``pixelshuffle`` :math:`C_{in} C_{out} N_{out}` MACs + RSign
    :math:`C_{in} N` + BN on :math:`C_{out} N_{out}`; gates :math:`n_b C_{out}` sigmoids (+ GAP
    :math:`C_{in} N`, add :math:`n_b C_{out}` and :math:`C_{in} n_b C_{out}` FP MACs when
    conditioned); Hadamard products and sums :math:`2 n_b C_{out} N_{out}`; CFB; RPReLU
    :math:`3 C_{out} N_{out}`. Multiplied by the batch.
    """
    b, h, w = _check_shape(input_shape, m.in_channels, m)
    s, cin, cout, nb = m.scale, m.in_channels, m.out_channels, len(m.branch_names)
    n, n_out = h * w, h * w * s * s
    parts = [_counts(elementwise=_NEAREST_COST * cin * n_out)]
    for name in m.branch_names:
        if name in ("nearest", "bilinear"):
            parts.append(_conv_counts(cin, cout, 3, h * s, w * s, h * s, w * s, 1, m.binary))
            if name == "bilinear":
                parts.append(_counts(elementwise=_BILINEAR_COST * cin * n_out))
        else:
            macs = cin * cout * n_out
            ew = (cin * n if m.binary else 0) + BATCH_NORM_COST * cout * n_out
            if m.binary:
                parts.append(_counts(binary_macs=macs, elementwise=ew))
            else:
                parts.append(_counts(fp_macs=macs, elementwise=ew))
    parts.append(_counts(elementwise=nb * cout))
    if m.gate_proj is not None:
        parts.append(_counts(fp_macs=cin * nb * cout, elementwise=cin * n + nb * cout))
    parts.append(_counts(elementwise=2 * nb * cout * n_out))
    parts.append(_counts(elementwise=cfb_cost(cin, cout) * n_out + RPRELU_COST * cout * n_out))
    one = _sum_counts(parts)
    return {k: v * b for k, v in one.items()}


def _binary_attention_own_ops(m: BinaryDualAttention, b: int, h: int, w: int) -> Counts:
    """:class:`~bidense.nn.BinaryDualAttention`'s functional ops (everything except its child
    modules)."""
    c, d, (gh, gw) = m.channels, m.key_channels, m.grid
    n, p = h * w, gh * gw
    pool = adaptive_pool_cost(h, w, m.grid)
    bin_, fp, ew = 0, 0, (d + c) * pool  # pooling of k and v
    # position part
    if m.binary:
        ew += d * n + d * p  # thresholds of q and k
        bin_ += n * p * d
    else:
        fp += n * p * d
    ew += n * p + SOFTMAX_COST * n * p  # scaling of S, softmax
    if m.binary_values:
        bin_ += n * p * c
        ew += 2 * n * p + c * p + n * p + 2 * c * n  # A_b (max, compare), sign v, count, /, a_v
    else:
        fp += n * p * c
    # channel part
    if m.binary:
        ew += c * n  # threshold of x
        bin_ += 2 * c * c * n
        ew += 2 * c * c + c * c + 2 * c * n  # A_b (max, compare), row count, /count and a_c
    else:
        fp += 2 * c * c * n
        ew += c * n  # a_c
    ew += (3 if m.channel_form == "danet" else 1) * c * c + SOFTMAX_COST * c * c
    ew += 4 * c * n  # merge: two scalings, two adds
    return _counts(bin_ * b, fp * b, ew * b)


def _binary_attention_ops(m: BinaryDualAttention, input_shape: Sequence[int]) -> Counts:
    """:class:`~bidense.nn.BinaryDualAttention`. Projections: q, k ``C d N`` and v ``C^2 N`` MACs
    (binary when ``binary``), each with its RSign (``C N``) and BN (2 per output element).
    Pooling of k and v (1 per element of each window). Position part: thresholds ``d N + d P``;
    similarity ``N P d`` BOPs; scaling and softmax ``4 N P``; aggregation ``N P C`` FP MACs (BOPs
    with ``binary_values``, plus ``A_b`` ``2 N P``, sign of v ``C P``, row count ``N P``, divide
    and scale ``2 C N``). Channel part: threshold ``C N``; ``E`` and aggregation ``C^2 N`` BOPs
    each; logits ``C^2`` (``3 C^2`` for the DANet form: row max, subtract, scale); softmax
    ``3 C^2``; ``A_b`` ``2 C^2``; row count ``C^2``; divide and scale ``2 C N``. Merge ``4 C N``.
    The out unit as a :class:`~bidense.nn.DingUnit`. Multiplied by the batch.
    """
    b, h, w = _check_shape(input_shape, m.channels, m)
    c, d = m.channels, m.key_channels
    parts = [
        _conv_counts(c, d, 1, h, w, h, w, b, m.binary),
        _conv_counts(c, d, 1, h, w, h, w, b, m.binary),
        _conv_counts(c, c, 1, h, w, h, w, b, m.binary),
        _binary_attention_own_ops(m, b, h, w),
    ]
    if m.out_unit is not None:
        parts.append(module_ops(m.out_unit, (b, c, h, w)))
    return _sum_counts(parts)


def _fp_attention_ops(m: FullPrecisionDualAttention, input_shape: Sequence[int]) -> Counts:
    """:class:`~bidense.nn.FullPrecisionDualAttention`: projections ``(2 d + C) C N`` FP MACs +
    biases ``(2 d + C) N``; matmuls ``N^2 d + N^2 C + 2 C^2 N`` FP MACs; softmax ``3 N^2 + 3
    C^2``; CAM row max and subtraction ``2 C^2``; merge ``4 C N``. Multiplied by the batch."""
    b, h, w = _check_shape(input_shape, m.channels, m)
    c, d, n = m.channels, m.key_channels, h * w
    ref = full_precision_attention_ops(c, h, w, reduction=m.reduction)
    fp = (2 * d + c) * c * n + ref["sa_ops"]
    ew = (2 * d + c) * n + SOFTMAX_COST * (n * n + c * c) + 2 * c * c + 4 * c * n
    return _counts(0, fp * b, ew * b)


#: Counting function of each layer class: ``fn(module, input_shape) -> Counts``.
MODULE_OPS: dict[type[nn.Module], Callable[[Any, Sequence[int]], Counts]] = {
    DingUnit: _unit_ops,
    MultiBranchUpsample: _upsample_ops,
    BinaryDualAttention: _binary_attention_ops,
    FullPrecisionDualAttention: _fp_attention_ops,
}


def _entry(table: dict[type[nn.Module], Any], module: nn.Module) -> Any:
    """The table entry of ``module``'s class or of its nearest base class, else None."""
    return next((table[cls] for cls in type(module).__mro__ if cls in table), None)


def module_ops(module: nn.Module, input_shape: Sequence[int]) -> Counts:
    """Exact ``{"binary_macs", "fp_macs", "elementwise"}`` of one forward of ``module`` on
    ``input_shape`` (eval mode, whole batch), by the module docstring's rule.

    ``module`` is a layer of :data:`MODULE_OPS`; the counts follow from the shapes, no forward
    pass is run.
    """
    fn = _entry(MODULE_OPS, module)
    if fn is None:
        known = ", ".join(cls.__name__ for cls in MODULE_OPS)
        raise TypeError(f"module_ops: no counting rule for {type(module).__name__} ({known})")
    return fn(module, input_shape)


# ---------------------------------------------------------------------------------------------
# self-reported counts (the hook of summarize)
# ---------------------------------------------------------------------------------------------
def _binary_attention_reported(
    m: BinaryDualAttention, args: tuple[Any, ...], output: Any
) -> dict[str, int]:
    """The attention's own functional ops for the traced call (its children, such as the
    projections, are counted by the profiler itself), plus ``reference_fp_macs``, the FP32 DANet
    PAM + CAM MACs at the same C and N."""
    x = args[0]
    b, _, h, w = (int(s) for s in x.shape)
    out: dict[str, int] = dict(_binary_attention_own_ops(m, b, h, w))
    ref = full_precision_attention_ops(m.channels, h, w, reduction=m.reduction)
    out["reference_fp_macs"] = int(ref["sa_ops"]) * b
    return out


#: Layers that report their own functional ops to :func:`~bidense.profile.summarize`:
#: ``fn(module, inputs, output) -> {"binary_macs", "fp_macs", "elementwise",
#: "reference_fp_macs"}`` (keys optional).
SELF_REPORTED_OPS: dict[type[nn.Module], Callable[..., dict[str, int]]] = {
    BinaryDualAttention: _binary_attention_reported,
}


def self_reported_counter(module: nn.Module) -> Callable[..., dict[str, int]] | None:
    """How ``module`` reports its own ops to the profiler, ``counter(inputs, output) -> dict``:
    its ``efficiency_counts`` method if it has one (the extension point for any module), else
    its class's :data:`SELF_REPORTED_OPS` entry, else None (counted from its operators)."""
    method = getattr(module, "efficiency_counts", None)
    if callable(method):
        return method
    fn = _entry(SELF_REPORTED_OPS, module)
    return functools.partial(fn, module) if fn is not None else None


# ---------------------------------------------------------------------------------------------
# D2 cost comparison
# ---------------------------------------------------------------------------------------------
def full_precision_attention_ops(
    channels: int, height: int, width: int, reduction: int = 8
) -> dict[str, int]:
    r"""Similarity/aggregation MACs of an FP32 DANet-style PAM + CAM (ding2024.md D2 reference).

    With :math:`N = HW`, :math:`d = \max(1, C/\text{reduction})`: ``similarity`` :math:`N^2 d`,
    ``aggregation`` :math:`N^2 C`, ``channel_similarity`` and ``channel_aggregation``
    :math:`C^2 N` each; ``sa_ops`` their sum :math:`N^2 d + N^2 C + 2 C^2 N` (all FP MACs);
    ``softmax_exps`` :math:`N^2 + C^2`. Per image. Example: C = 128 on 64x128 gives
    9,932,111,872.
    """
    c, n = int(channels), int(height) * int(width)
    d = max(1, c // int(reduction))
    out = {
        "similarity": n * n * d,
        "aggregation": n * n * c,
        "channel_similarity": c * c * n,
        "channel_aggregation": c * c * n,
    }
    out["sa_ops"] = sum(out.values())
    out["softmax_exps"] = n * n + c * c
    return out


def binary_attention_sa_ops(
    channels: int,
    height: int,
    width: int,
    grid: int | Sequence[int] = (8, 8),
    binary_values: bool = False,
    reduction: int = 8,
) -> dict[str, float]:
    r"""SA-OPs of :class:`~bidense.nn.BinaryDualAttention` (ding2024.md D2): OPs = BOPs/64 + FP
    MACs of the four matmuls only (projections are ordinary conv rows). Per image.

    ``similarity`` :math:`NPd/64`; ``aggregation`` :math:`NPC` (or :math:`NPC/64` with
    ``binary_values``); ``channel_similarity`` and ``channel_aggregation`` :math:`C^2 N / 64`
    each; ``sa_ops`` the sum; ``softmax_exps`` :math:`NP + C^2`. Example: C = 128, 64x128, grid
    8x8 gives 131,072 + 67,108,864 + 2,097,152 + 2,097,152 = 71,434,240.
    """
    c, n = int(channels), int(height) * int(width)
    d = max(1, c // int(reduction))
    gh, gw = attention_grid(grid)
    p = gh * gw
    out = {
        "similarity": n * p * d / 64,
        "aggregation": n * p * c / (64 if binary_values else 1),
        "channel_similarity": c * c * n / 64,
        "channel_aggregation": c * c * n / 64,
    }
    out["sa_ops"] = sum(out.values())
    out["softmax_exps"] = float(n * p + c * c)
    return out


def attention_cost_comparison(
    channels: int,
    height: int,
    width: int,
    grid: int | Sequence[int] = (8, 8),
    binary_values: bool = False,
    reduction: int = 8,
) -> dict[str, float]:
    """Reference (FP32 DANet PAM + CAM) vs ours SA-OPs on one C x H x W map, and their ratio.

    Returns ``reference_sa_ops``, ``ours_sa_ops``, ``ratio`` (D2 target: >= 100 on 64x128),
    ``reference_softmax_exps`` and ``ours_softmax_exps``.
    """
    ref = full_precision_attention_ops(channels, height, width, reduction)
    ours = binary_attention_sa_ops(channels, height, width, grid, binary_values, reduction)
    return {
        "reference_sa_ops": float(ref["sa_ops"]),
        "ours_sa_ops": ours["sa_ops"],
        "ratio": ref["sa_ops"] / ours["sa_ops"],
        "reference_softmax_exps": float(ref["softmax_exps"]),
        "ours_softmax_exps": ours["softmax_exps"],
    }
