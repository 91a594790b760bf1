"""Per-operator counting rules of the efficiency report.

Every ATen operator the profiled forward pass executes is put into exactly one class:

* **MAC operators** (``convolution``, ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``dot``, ``mv``,
  scaled-dot-product attention): their multiply-accumulates are computed from the operand shapes
  (:func:`mac_count`). Whether the MACs are binary or floating point is decided by the caller
  (:mod:`bidense.profile.summary`), which knows the module that issued the operator.
* **Data movement** (views, permutes, ``cat``, indexing, padding, copies, tensor creation): 0 ops
  (:data:`ZERO_COST_OPS`).
* **Elementwise work**: every other operator, counted by the explicit per-element rules of
  :func:`elementwise_count`. These ops are reported in their own column and are *not* part of
  OPs = BOPs/64 + FLOPs, following the BNN literature (XNOR-Net, Bi-Real Net, ReActNet, BiDense),
  where FLOPs means floating-point MACs.

The rules are written out in ``docs/efficiency.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

# Ops that only move, reshape, create or select data: no arithmetic.
ZERO_COST_OPS: frozenset[str] = frozenset(
    {
        "view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "transpose", "t",
        "expand", "squeeze", "unsqueeze", "flatten", "unflatten", "clone", "copy", "_to_copy",
        "to", "contiguous", "cat", "stack", "split", "split_with_sizes", "chunk", "unbind",
        "slice", "select", "narrow", "index", "index_select", "gather", "take", "detach",
        "alias", "lift_fresh", "lift_fresh_copy", "constant_pad_nd", "pad", "reflection_pad1d",
        "reflection_pad2d", "replication_pad1d", "replication_pad2d", "zeros", "zeros_like",
        "ones", "ones_like", "empty", "empty_like", "empty_strided", "new_empty",
        "new_empty_strided", "new_zeros", "new_ones", "new_full", "full", "full_like", "fill",
        "zero", "arange", "scalar_tensor", "as_strided", "repeat", "repeat_interleave", "roll",
        "flip", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "_local_scalar_dense",
        "embedding", "randn", "rand", "randn_like", "rand_like", "normal", "uniform", "item",
        "resize", "set", "_unsafe_index", "diagonal", "movedim", "unfold", "tril", "triu",
        "masked_select", "nonzero", "sort", "topk", "linspace", "bernoulli", "native_dropout",
        "dropout", "_assert_async", "_assert_scalar", "sym_size", "sym_stride", "lift",
    }
)

# Ops whose multiply-accumulates are counted from shapes.
MAC_OPS: frozenset[str] = frozenset(
    {
        "convolution", "_convolution", "mm", "addmm", "bmm", "baddbmm", "dot", "vdot", "mv",
        "addmv", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_attention_math", "_scaled_dot_product_cudnn_attention",
    }
)

BATCH_NORM_OPS = frozenset(
    {"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
     "batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm"}
)
NORM_OPS = frozenset({"native_layer_norm", "native_group_norm", "layer_norm", "group_norm"})
SOFTMAX_OPS = frozenset({"_softmax", "softmax", "_log_softmax", "log_softmax"})
REDUCTION_OPS = frozenset(
    {"sum", "mean", "amax", "amin", "max", "min", "prod", "norm", "linalg_vector_norm",
     "logsumexp", "all", "any", "argmax", "argmin", "nansum", "nanmean", "count_nonzero"}
)
MOMENT_OPS = frozenset({"var", "std", "var_mean", "std_mean"})
POOL_OPS = frozenset(
    {"avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
     "max_pool2d_with_indices", "max_pool3d_with_indices"}
)
ADAPTIVE_POOL_OPS = frozenset(
    {"_adaptive_avg_pool2d", "adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool3d",
     "adaptive_avg_pool1d", "adaptive_max_pool2d", "adaptive_max_pool1d", "adaptive_max_pool3d"}
)
#: Elementwise ops per output element of an inference batch norm (folded to a scale + shift).
BATCH_NORM_COST = 2
#: Elementwise ops per element of a softmax or log-softmax (exp, sum, divide).
SOFTMAX_COST = 3

# Ops per output element of an interpolation: 2^d tap multiplies + (2^d - 1) adds for d-linear,
# 16 + 15 for bicubic; nearest is one index computation + read.
INTERPOLATION_COST: dict[str, int] = {
    "upsample_nearest1d": 1, "upsample_nearest2d": 1, "upsample_nearest3d": 1,
    "_upsample_nearest_exact1d": 1, "_upsample_nearest_exact2d": 1,
    "_upsample_nearest_exact3d": 1, "upsample_linear1d": 3, "upsample_bilinear2d": 7,
    "_upsample_bilinear2d_aa": 7, "upsample_trilinear3d": 15, "upsample_bicubic2d": 31,
    "_upsample_bicubic2d_aa": 31, "grid_sampler_2d": 7, "grid_sampler": 7,
}


def op_name(func: Any) -> str:
    """Return the ATen overload-packet name of ``func`` without the in-place suffix ``_``.

    ``aten.add_.Tensor`` and ``aten.add.Tensor`` both give ``"add"``; names that start with an
    underscore (private ops such as ``_softmax``) keep it.
    """
    name = func.overloadpacket.__name__
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]
    return name


def _numel(t: Any) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        out: list[torch.Tensor] = []
        for o in obj:
            out.extend(_tensors(o))
        return out
    return []


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def conv_macs(input_shape: Sequence[int], weight_shape: Sequence[int], output_shape: Sequence[int],
              transposed: bool) -> int:
    """MACs of one (possibly grouped, strided, dilated or transposed) convolution.

    Direct conv, weight (C_out, C_in/g, k...): MACs = numel(output) * (C_in/g) * prod(k).
    Each output element is a sum over C_in/g input channels and prod(k) taps; zero-padded taps
    are counted, as in thop/fvcore/FlopCounterMode. Stride and dilation act through the output
    size. Transposed conv, weight (C_in, C_out/g, k...): every input element is multiplied by
    (C_out/g) * prod(k) weights, so MACs = numel(input) * (C_out/g) * prod(k) (taps later
    cropped by ``padding`` are still counted, as in FlopCounterMode).
    """
    taps = math.prod(int(k) for k in weight_shape[2:])
    if transposed:
        return math.prod(input_shape) * int(weight_shape[1]) * taps
    return math.prod(output_shape) * int(weight_shape[1]) * taps


def mac_count(name: str, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> int:
    """Multiply-accumulates of a MAC operator (see :data:`MAC_OPS`) from its operand shapes.

    mm (n,k)@(k,m): n*k*m; bmm (b,n,k)@(b,k,m): b*n*k*m; addmm/baddbmm likewise (the bias add is
    elementwise, see :func:`elementwise_count`); scaled-dot-product attention with q (..., L, E),
    k (..., S, E), v (..., S, Ev): prod(...) * L * S * (E + Ev).
    """
    if name in ("convolution", "_convolution"):
        x, w = args[0], args[1]
        transposed = bool(_arg(args, kwargs, 6, "transposed", False))
        return conv_macs(x.shape, w.shape, _tensors(out)[0].shape, transposed)
    if name == "mm":
        a, b = args[0], args[1]
        return a.shape[0] * a.shape[1] * b.shape[1]
    if name == "addmm":
        a, b = args[1], args[2]
        return a.shape[0] * a.shape[1] * b.shape[1]
    if name == "bmm":
        a, b = args[0], args[1]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if name == "baddbmm":
        a, b = args[1], args[2]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if name in ("dot", "vdot"):
        return int(args[0].shape[0])
    if name == "mv":
        return int(args[0].shape[0] * args[0].shape[1])
    if name == "addmv":
        return int(args[1].shape[0] * args[1].shape[1])
    if name.startswith("_scaled_dot_product"):
        q, k, v = args[0], args[1], args[2]
        lead = math.prod(q.shape[:-2])
        return lead * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    raise ValueError(f"no MAC rule for operator {name!r}")


def mac_operands(name: str, args: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (left, right) matrix operands of a matmul-type MAC op, or None for other ops."""
    if name in ("mm", "bmm"):
        return args[0], args[1]
    if name in ("addmm", "baddbmm"):
        return args[1], args[2]
    return None


def adaptive_window_sum(in_size: int, out_size: int) -> int:
    """Total length of the ``out_size`` windows adaptive pooling puts on an ``in_size`` axis.

    PyTorch's windows are ``[floor(i In / Out), ceil((i + 1) In / Out))``; they overlap when the
    sizes do not divide, so the sum can exceed ``in_size``.
    """
    return sum(
        -((-(i + 1) * in_size) // out_size) - (i * in_size) // out_size for i in range(out_size)
    )


def elementwise_count(name: str, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> int:
    """Elementwise ops of one operator by the documented per-element rules.

    * batch norm (inference, folded to a scale and shift): 2 per output element;
    * LayerNorm/GroupNorm: 5 per element (mean 1, variance 2, normalise 2) + 2 with affine;
    * softmax / log-softmax: 3 per element (exp, sum, divide);
    * reductions (sum, mean, max, norm, ...): 1 per *input* element; var/std: 3 per input element;
    * avg/max pooling: prod(kernel) per output element;
    * adaptive pooling: 1 per input element of every (possibly overlapping) window, exactly;
    * interpolation: see :data:`INTERPOLATION_COST` (bilinear 7, nearest 1, bicubic 31 per
      output element);
    * the bias of addmm/baddbmm/convolution: 1 per output element; MACs are counted elsewhere;
    * scaled-dot-product attention: softmax 3 + scaling 1 per score element;
    * data movement (:data:`ZERO_COST_OPS`): 0;
    * every other operator (add, mul, sign, exp, abs, PReLU, GELU, comparisons, ...):
      1 per output element.
    """
    if name in ZERO_COST_OPS:
        return 0
    outs = _tensors(out)
    first = outs[0] if outs else None
    if name in MAC_OPS:
        if name in ("convolution", "_convolution"):
            bias = _arg(args, kwargs, 2, "bias", None)
            return _numel(first) if bias is not None else 0
        if name in ("addmm", "baddbmm", "addmv"):
            return _numel(first)
        if name.startswith("_scaled_dot_product"):
            q, k = args[0], args[1]
            # softmax and the 1/sqrt(E) scaling of every score
            return (SOFTMAX_COST + 1) * math.prod(q.shape[:-1]) * k.shape[-2]
        return 0
    if name in BATCH_NORM_OPS:
        return BATCH_NORM_COST * _numel(first)
    if name in NORM_OPS:
        weight = _arg(args, kwargs, 2 if name == "native_layer_norm" else 1, "weight", None)
        return (7 if weight is not None else 5) * _numel(first)
    if name in SOFTMAX_OPS:
        return SOFTMAX_COST * _numel(first)
    if name in REDUCTION_OPS:
        return _numel(args[0]) if args and isinstance(args[0], torch.Tensor) else _numel(first)
    if name in MOMENT_OPS:
        return 3 * _numel(args[0])
    if name in POOL_OPS:
        kernel = _arg(args, kwargs, 1, "kernel_size", [1])
        kernel = [kernel] if isinstance(kernel, int) else list(kernel)
        dims = len(first.shape) - 2 if first is not None else len(kernel)
        if len(kernel) == 1 and dims > 1:
            kernel = kernel * dims
        return _numel(first) * math.prod(int(k) for k in kernel)
    if name in ADAPTIVE_POOL_OPS:
        x = args[0]
        out_size = list(_arg(args, kwargs, 1, "output_size", []))
        spatial = list(x.shape[-len(out_size):])
        lead = math.prod(x.shape[: x.dim() - len(out_size)])
        return lead * math.prod(
            adaptive_window_sum(int(i), int(o)) for i, o in zip(spatial, out_size)
        )
    if name in INTERPOLATION_COST:
        return INTERPOLATION_COST[name] * _numel(first)
    return sum(_numel(t) for t in outs)


def one_magnitude(t: torch.Tensor, dim: int) -> bool:
    """True if every slice of ``t`` along ``dim`` takes values in {0, -c, +c} for one c >= 0.

    This is the test for a 1-bit matmul operand: a row (left operand) or column (right operand)
    that is c*{-1, +1} (or c*{0, 1}) lets the dot product be computed as c * popcount.
    """
    if not t.is_floating_point():
        t = t.float()
    a = t.abs()
    m = a.amax(dim=dim, keepdim=True)
    return bool(((a == m) | (a == 0)).all())
