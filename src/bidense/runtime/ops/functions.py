"""The function table: numpy implementations of the torch functions a ``.bdn`` graph calls.

A function node ``{"op": name, "args": [...], "kwargs": {...}}`` runs ``FUNCTIONS[name]`` on its
decoded arguments. Entries flagged ``takes_context`` (bilinear resize, CFB) get the call's
:class:`~bidense.runtime.ops.base.RunContext` first, for their compiled kernels' thread count.
In-place variants (``add_``, ``__iadd__``, ...) map to the functional form: the graph recorder
gives their result a new name, so this is equivalent as long as no other view of the mutated
tensor is read afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import RunContext
from .float_ops import (
    adaptive_avg_pool,
    cfb_channels_last,
    gelu,
    interpolate,
    layer_norm,
    nchw,
    nhwc,
    pair,
    pixel_shuffle,
    pool,
    sigmoid,
    unflatten,
)

__all__ = ["FUNCTIONS", "Function"]


@dataclass(frozen=True)
class Function:
    """One function entry: ``fn(*args, **kwargs)``, or ``fn(ctx, *args, **kwargs)`` when
    ``takes_context``. ``shape`` says how the load-time check propagates shapes through it:
    ``"same"`` (the shape of its first tensor argument), ``"broadcast"`` (the broadcast shape of
    its tensor arguments) or ``None`` (checked only when the graph runs)."""

    fn: Callable[..., Any]
    takes_context: bool = False
    shape: str | None = None

    def __call__(self, ctx: RunContext, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.takes_context:
            return self.fn(ctx, *args, **kwargs)
        return self.fn(*args, **kwargs)


def _softmax(x: np.ndarray, dim: int, **_: Any) -> np.ndarray:
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return (e / e.sum(axis=dim, keepdims=True)).astype(np.float32)


def _dims(args: tuple) -> list[int]:
    if len(args) == 1 and isinstance(args[0], list | tuple):
        return [int(a) for a in args[0]]
    return [int(a) for a in args]


def _reduce(fn):
    def run(x, dim=None, keepdim=False, **kw):
        if "dtype" in kw and kw["dtype"] is not None:
            x = x.astype(kw["dtype"])
        axis = tuple(dim) if isinstance(dim, list | tuple) else dim
        return np.asarray(fn(x, axis=axis, keepdims=keepdim))
    return run


def _mean(x, dim=None, keepdim=False, dtype=None):
    axis = tuple(dim) if isinstance(dim, list | tuple) else dim
    return np.asarray(x.mean(axis=axis, keepdims=keepdim, dtype=np.float64), dtype=x.dtype)


def _flatten(x, start_dim=0, end_dim=-1):
    nd = x.ndim
    s, e = start_dim % nd, end_dim % nd
    return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])


def _expand(x, *sizes):
    sz = _dims(sizes)
    off = len(sz) - x.ndim
    full = [x.shape[i - off] if s == -1 else s for i, s in enumerate(sz)]
    return np.broadcast_to(x, full)


def _to(x, *args, **kw):
    dt = kw.get("dtype")
    for a in args:
        if isinstance(a, np.dtype | type):
            dt = a
        elif isinstance(a, np.ndarray):
            dt = a.dtype
    return x if dt is None else x.astype(dt)


def _where(cond, a, b):
    return np.where(cond, a, b).astype(np.result_type(a, b))


def _cat(tensors, dim=0):
    ts = [np.asarray(t) for t in tensors]
    if all(t.ndim == 4 for t in ts) and dim in (1, -3):
        # channel concat of channels-last activations: concatenate the NHWC data
        return nchw(np.concatenate([nhwc(t) for t in ts], axis=3))
    return np.concatenate(ts, axis=dim)


def _f32(fn):
    def run(*a, **k):
        r = fn(*a, **k)
        return r.astype(np.float32) if r.dtype == np.float64 else r
    return run


_NUMPY: dict[str, Callable[..., Any]] = {
    "add": lambda a, b, alpha=1: a + b * alpha if alpha != 1 else a + b,
    "__add__": lambda a, b: a + b, "__radd__": lambda a, b: b + a, "__iadd__": lambda a, b: a + b,
    "sub": lambda a, b, alpha=1: a - b * alpha if alpha != 1 else a - b,
    "__sub__": lambda a, b: a - b, "__rsub__": lambda a, b: b - a,
    "rsub": lambda a, b, alpha=1: b - a * alpha if alpha != 1 else b - a,
    "mul": lambda a, b: a * b, "__mul__": lambda a, b: a * b, "__rmul__": lambda a, b: b * a,
    "div": lambda a, b: a / b, "true_divide": lambda a, b: a / b,
    "__truediv__": lambda a, b: a / b, "__rtruediv__": lambda a, b: b / a,
    "__div__": lambda a, b: a / b,
    "neg": lambda a: -a, "__neg__": lambda a: -a,
    "matmul": np.matmul, "__matmul__": np.matmul, "bmm": np.matmul,
    "cat": _cat, "concat": _cat, "concatenate": _cat,
        "permute": lambda x, *d: np.ascontiguousarray(x.transpose(_dims(d))),
    "transpose": lambda x, a, b: np.swapaxes(x, a, b),
    "reshape": lambda x, *s: np.reshape(x, _dims(s)),
    "view": lambda x, *s: np.reshape(x, _dims(s)),
    "flatten": _flatten, "unflatten": unflatten, "expand": _expand,
    "repeat": lambda x, *r: np.tile(x, _dims(r)),
    "narrow": lambda x, dim, start, length: np.take(
        x, np.arange(int(start), int(start) + int(length)), axis=dim),
    "__getitem__": lambda x, idx: x[tuple(idx) if isinstance(idx, list) else idx],
    "unsqueeze": lambda x, d: np.expand_dims(x, d),
    "unbind": lambda x, dim=0: [np.take(x, i, axis=dim) for i in range(x.shape[dim])],
    "hardtanh": lambda x, min_val=-1.0, max_val=1.0, inplace=False: np.clip(
        x, np.float32(min_val), np.float32(max_val)),
    "squeeze": lambda x, d=None: np.squeeze(x, axis=d),
    "mean": _mean, "sum": _reduce(np.sum), "amax": _reduce(np.max), "amin": _reduce(np.min),
    "softmax": _softmax,
    "exp": _f32(np.exp), "abs": np.abs, "sqrt": _f32(np.sqrt), "square": np.square,
    "tanh": _f32(np.tanh),
    "sigmoid": sigmoid,
    "relu": lambda x, inplace=False: np.maximum(x, np.float32(0)),
    "gelu": lambda x, approximate="none": gelu(x),
    "layer_norm": layer_norm,
    "ge": lambda a, b: a >= b, "__ge__": lambda a, b: a >= b,
    "gt": lambda a, b: a > b, "__gt__": lambda a, b: a > b,
    "le": lambda a, b: a <= b, "__le__": lambda a, b: a <= b,
    "lt": lambda a, b: a < b, "__lt__": lambda a, b: a < b,
    "to": _to, "float": lambda x: x.astype(np.float32), "type_as": lambda x, o: x.astype(o.dtype),
    "where": _where, "sign": lambda x: np.sign(x),
    "contiguous": lambda x, *a, **k: x, "detach": lambda x: x, "clone": lambda x, **k: x.copy(),
    "dropout": lambda x, p=0.5, training=False, inplace=False: x,
    "avg_pool2d": lambda x, kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None: pool(
        x, pair(kernel_size), pair(stride or kernel_size), pair(padding), "avg",
        count_include_pad),
    "adaptive_avg_pool2d": lambda x, output_size: adaptive_avg_pool(x, pair(output_size)),
    "pixel_shuffle": pixel_shuffle,
    "clamp": lambda x, min=None, max=None: np.clip(x, min, max),
}


# in-place variants (see the module docstring)
for _name in ("add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "exp", "abs", "neg",
              "hardtanh", "sqrt", "square"):
    _NUMPY[_name + "_"] = _NUMPY[_name]
_NUMPY["clip"] = _NUMPY["clamp_"] = _NUMPY["clamp"]
_NUMPY["__imul__"] = _NUMPY["mul"]
_NUMPY["__isub__"] = _NUMPY["sub"]


def _cfb_add(ctx: RunContext, y, x, cdim, grouping):
    # _AddBypass.apply(y, x, cdim, grouping)
    return y + cfb_channels_last(x, y.shape[cdim % y.ndim], cdim % y.ndim, grouping,
                                 threads=ctx.threads)


def _cfb_add_fn(ctx: RunContext, y, x, grouping="strided", channel_dim=1):
    # add_channel_adaptive_bypass(y, x, grouping, channel_dim)
    return _cfb_add(ctx, y, x, channel_dim, grouping)


def _cfb_fn(ctx: RunContext, x, out_channels, grouping="strided", channel_dim=1):
    return cfb_channels_last(x, int(out_channels), channel_dim % x.ndim, grouping,
                             threads=ctx.threads)


def _interpolate(ctx: RunContext, x, *args, **kwargs):
    return interpolate(x, *args, threads=ctx.threads, **kwargs)


_WITH_CONTEXT: dict[str, Callable[..., Any]] = {
    "interpolate": _interpolate, "cfb_add": _cfb_add, "cfb_add_fn": _cfb_add_fn, "cfb": _cfb_fn,
}

#: elementwise functions of one tensor: the output has the input's shape
_SAME_SHAPE = frozenset({
    "relu", "relu_", "gelu", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "exp_", "abs",
    "abs_", "neg", "__neg__", "sqrt", "square", "sign", "hardtanh", "hardtanh_", "clamp",
    "clamp_", "clip", "contiguous", "detach", "clone", "dropout", "float", "to"})
#: elementwise functions of two operands: the broadcast shape of their tensor arguments
_BROADCAST = frozenset({
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
    "__isub__", "rsub", "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_",
    "true_divide", "__truediv__", "__rtruediv__", "__div__"})


def _shape_rule(name: str) -> str | None:
    return "same" if name in _SAME_SHAPE else "broadcast" if name in _BROADCAST else None


#: Function name (as written in ``.bdn`` graphs) -> entry.
FUNCTIONS: dict[str, Function] = {
    **{name: Function(fn, shape=_shape_rule(name)) for name, fn in _NUMPY.items()},
    **{name: Function(fn, takes_context=True) for name, fn in _WITH_CONTEXT.items()},
}
