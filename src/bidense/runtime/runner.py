"""CPU graph runtime for ``.bdn`` files: numpy + the compiled binary kernels, no torch.

``Runtime(path, threads=None)(x)`` runs the exported graph on a float32 NCHW numpy array and
returns the model's output; ``report()`` lists, per node, which path it took and its time.

Binary conv paths (engines.md §7), chosen per layer and per call:

* ``packed``: sign bits packed along channels, XNOR-popcount (``kernels.binary_conv2d``), fused
  ``scale * D + bias`` epilogue (BN folded by the exporter). Taken when the binarized input's
  per-channel multiplier is uniform: sign/ApproxSign/RSign/BiSRNet/XNOR inputs, and DAB with
  ``scale="shared"`` (the per-sample alpha folds into the scale).
* ``depthwise exact-alpha``: depthwise binary conv; DAB's per-sample, per-channel alpha folds
  into the per-(sample, channel) scale exactly.
* ``DAB float path``: dense conv with DAB's per-channel alpha (``kernels.binary_conv2d_dab``,
  exact to float rounding, about fp32 speed).
* ``float``: AdaBin (affine binary values), float weights, binary transposed convs (per-input-
  channel weight scale), identity binarizers: the binarized values are formed exactly and
  convolved in float32.

Exact zeros: ``torch.sign(0) = 0`` cannot be one bit. When the pre-sign tensor holds zeros the
packed paths run twice, with zeros as +1 and as -1; ``sign(x) = (s_+ + s_-) / 2`` exactly, so
``D = (D_+ + D_-) / 2`` (integers, exact). The report marks these calls ``+zeros``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from bidense._system import _MALLOC  # noqa: F401  (re-exported for tests)
from bidense._system import reuse_heap_memory as _reuse_heap_memory

from . import kernels
from .format import node_refs as _refs
from .format import read_bdn

__all__ = ["Runtime", "RuntimeInputError", "SUPPORTED_FUNCTIONS"]


class RuntimeInputError(ValueError):
    """The input given to :class:`Runtime` has the wrong type, dtype or shape."""


# ---------------------------------------------------------------------------------------------
# float helpers (NCHW, torch semantics)


def _blas_threads_setter():
    """``set(n)`` for the OpenBLAS that numpy loaded, or ``None`` (another BLAS, or not found).

    threadpoolctl does the same, but it is not a dependency: the library is found in the
    process's memory map and its ``*openblas*set_num_threads*`` symbol called through ctypes.
    """
    try:
        import ctypes

        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
        for path in libs:
            lib = ctypes.CDLL(path)
            for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                        "openblas_set_num_threads64_", "openblas_set_num_threads"):
                fn = getattr(lib, sym, None)
                if fn is not None:
                    fn.argtypes = [ctypes.c_int]
                    return lambda n, fn=fn: fn(int(n))
    except (OSError, AttributeError, IndexError):
        pass
    return None


_SET_BLAS_THREADS = _blas_threads_setter()

# threads of the call in progress, for the compiled helpers used by function nodes
_CALL = {"threads": 1}


def _ext_bilinear_impl(xs, h0, h1, lh, w0, w1, lw):
    return kernels.bilinear_nhwc(xs, h0, h1, lh, w0, w1, lw, threads=_CALL["threads"])


_ext_bilinear = _ext_bilinear_impl if getattr(kernels, "_ext", None) is not None else None


def _nhwc(x: np.ndarray) -> np.ndarray:
    """The channels-last (NHWC) contiguous data of a logical NCHW array (free when the array is
    already a channels-last view, as every 4-D activation inside the runtime is)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)


def _nchw(y: np.ndarray) -> np.ndarray:
    """Logical NCHW view of NHWC data (no copy; numpy ops keep the channels-last layout)."""
    return y.transpose(0, 3, 1, 2)


_WMAT: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _wmat(w: np.ndarray, g: int, groups: int) -> np.ndarray:
    """Group ``g`` of OIHW weights as a ``(KH*KW*I/g, O/g)`` GEMM matrix (cached per array)."""
    key = id(w) * 4096 + g
    hit = _WMAT.get(key)
    if hit is not None and hit[0] is w:
        return hit[1]
    og = w.shape[0] // groups
    m = np.ascontiguousarray(w[g * og:(g + 1) * og].transpose(2, 3, 1, 0).reshape(-1, og),
                             np.float32)
    _WMAT[key] = (w, m)
    return m


def _conv2d(x: np.ndarray, w: np.ndarray, stride, padding, dilation, groups: int,
            scale: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
    """Float32 ``F.conv2d`` on channels-last data, then ``* scale + bias`` per output channel
    when given; returns a logical NCHW view.

    1x1 convs are one GEMM; kxk convs an NHWC im2col (taps outer, channels inner) and a GEMM;
    depthwise convs a tap loop of vector multiply-adds. The GEMMs are ``kernels.fp_gemm``
    (threads split rows, so the result does not depend on the thread count).
    """
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xs = _nhwc(x)
    thr = _CALL["threads"]
    if kh == kw == 1 and sh == sw == 1 and ph == pw == 0 and groups == 1:
        y = kernels.fp_gemm(xs.reshape(-1, c), _wmat(w, 0, 1), scale, bias, threads=thr)
        return _nchw(y.reshape(n, ho, wo, o))
    xp = np.pad(xs, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else xs
    if groups == c and o == c and cg == 1:
        y = np.zeros((n, ho, wo, c), np.float32)
        for ky in range(kh):
            for kx in range(kw):
                sl = xp[:, ky * dh: ky * dh + sh * (ho - 1) + 1: sh,
                        kx * dw: kx * dw + sw * (wo - 1) + 1: sw]
                y += sl * w[:, 0, ky, kx]
        return _nchw(_scale_bias(y, scale, bias))
    win = np.lib.stride_tricks.sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1),
                                                   axis=(1, 2))
    win = win[:, : sh * (ho - 1) + 1: sh, : sw * (wo - 1) + 1: sw, :, ::dh, ::dw]
    outs = []
    for g in range(groups):
        cols = win[:, :, :, g * cg:(g + 1) * cg].transpose(0, 1, 2, 4, 5, 3).reshape(
            n * ho * wo, -1)
        if groups == 1:
            outs.append(kernels.fp_gemm(cols, _wmat(w, 0, 1), scale, bias, threads=thr
                                         ).reshape(n, ho, wo, -1))
        else:
            outs.append(kernels.fp_gemm(cols, _wmat(w, g, groups), threads=thr).reshape(
                n, ho, wo, -1))
    if groups == 1:
        return _nchw(outs[0])
    return _nchw(_scale_bias(np.concatenate(outs, axis=-1), scale, bias))


def _scale_bias(y: np.ndarray, scale: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
    """NHWC ``y * scale + bias`` (each optional; two float32 roundings, as the GEMM kernel)."""
    if scale is not None:
        y = y * scale.astype(np.float32, copy=False)
    if bias is not None:
        y = y + bias.astype(np.float32, copy=False)
    return y


def _cv(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _pool(x: np.ndarray, kernel, stride, padding, mode: str, include_pad: bool = True):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    fill = -np.inf if mode == "max" else 0.0
    xs = _nhwc(x)
    xp = np.pad(xs, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=fill) if ph or pw \
        else xs
    acc = None
    for ky in range(kh):
        for kx in range(kw):
            sl = xp[:, ky: ky + sh * (ho - 1) + 1: sh, kx: kx + sw * (wo - 1) + 1: sw]
            if acc is None:
                acc = sl.copy()
            elif mode == "max":
                np.maximum(acc, sl, out=acc)
            else:
                acc += sl
    if mode == "max":
        return _nchw(acc)
    if include_pad or (ph == 0 and pw == 0):
        return _nchw((acc / np.float32(kh * kw)).astype(np.float32))
    ones = np.pad(np.ones((1, h, w, 1), np.float32), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    cnt = sum(ones[:, ky: ky + sh * (ho - 1) + 1: sh, kx: kx + sw * (wo - 1) + 1: sw]
              for ky in range(kh) for kx in range(kw))
    return _nchw((acc / cnt).astype(np.float32))


def _adaptive_avg(x: np.ndarray, size) -> np.ndarray:
    n, c, h, w = x.shape
    oh, ow = size
    xs = _nhwc(x)
    out = np.empty((n, oh, ow, c), np.float32)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, i, j, :] = xs[:, h0:h1, w0:w1, :].mean(axis=(1, 2), dtype=np.float64)
    return _nchw(out)


def _lin_idx(n_in: int, n_out: int, align: bool, scale: float | None):
    d = np.arange(n_out, dtype=np.float64)
    if align:
        src = d * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(d)
    else:
        r = (1.0 / scale) if scale else n_in / n_out
        src = np.maximum((d + 0.5) * r - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


def _interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None, antialias=False):
    if antialias:
        raise ValueError("interpolate(antialias=True) is not supported")
    n, c, h, w = x.shape
    sf = None
    if size is None:
        sf = scale_factor if isinstance(scale_factor, list | tuple) else [scale_factor] * 2
        size = [int(np.floor(h * sf[0])), int(np.floor(w * sf[1]))]
        if recompute_scale_factor:
            sf = None
    elif isinstance(size, int):
        size = [size, size]
    oh, ow = int(size[0]), int(size[1])
    xs = _nhwc(x)
    if mode == "nearest":
        rh = (1.0 / sf[0]) if sf else h / oh
        rw = (1.0 / sf[1]) if sf else w / ow
        ih = np.minimum(np.floor(np.arange(oh) * rh).astype(np.int64), h - 1)
        iw = np.minimum(np.floor(np.arange(ow) * rw).astype(np.int64), w - 1)
        return _nchw(np.take(np.take(xs, ih, axis=1), iw, axis=2))
    if mode == "bilinear":
        al = bool(align_corners)
        h0, h1, lh = _lin_idx(h, oh, al, sf[0] if sf else None)
        w0, w1, lw = _lin_idx(w, ow, al, sf[1] if sf else None)
        if _ext_bilinear is not None:
            return _nchw(_ext_bilinear(xs, h0, h1, lh, w0, w1, lw))
        # rows first, then columns; the same float32 operations as the compiled kernel
        top = (np.take(xs, h0, axis=1) * (1 - lh)[:, None, None]
               + np.take(xs, h1, axis=1) * lh[:, None, None])
        return _nchw((np.take(top, w0, axis=2) * (1 - lw)[:, None]
                      + np.take(top, w1, axis=2) * lw[:, None]).astype(np.float32))
    raise ValueError(f"interpolate mode {mode!r} is not supported")


def _fma32(a: np.ndarray, b: np.ndarray, c: Any) -> np.ndarray:
    # float32 products are exact in float64, so this rounds like a fused multiply-add (up to
    # rare double rounding)
    return (a.astype(np.float64) * b + np.float64(c) if np.isscalar(c) else
            a.astype(np.float64) * b + c).astype(np.float32)


def _erf32(u: np.ndarray) -> np.ndarray:
    """PyTorch's vectorised float32 erf (Abramowitz & Stegun 7.1.26, FMA form).

    ``erf(x) = sign(x) (1 - t r(t) exp(-x^2))`` with ``t = 1 / (1 + p|x|)``, as ATen's
    ``Vectorized<float>::erf``; matching its float32 rounding keeps ``1 + erf`` exactly 0 where
    PyTorch's is, which decides ``sign(GELU(x))`` for very negative x.
    """
    u = u.astype(np.float32, copy=False)
    ax = np.abs(u)
    t = (np.float32(1.0) / _fma32(ax, np.float32(0.3275911), 1.0)).astype(np.float32)
    r = _fma32(np.full_like(t, np.float32(1.061405429)), t, np.float32(-1.453152027))
    r = _fma32(r, t, np.float32(1.421413741))
    r = _fma32(r, t, np.float32(-0.284496736))
    r = _fma32(r, t, np.float32(0.254829592))
    e = np.exp(-(u * u)).astype(np.float32)
    tmp6 = (-e * t).astype(np.float32)
    return np.copysign(_fma32(tmp6, r, 1.0), u)


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU in PyTorch's float32 order, ``x * 0.5 * (1 + erf(x * sqrt(1/2)))``."""
    x = x.astype(np.float32, copy=False)
    e = _erf32(x * np.float32(0.7071067811865476))
    return (x * np.float32(0.5)) * (np.float32(1.0) + e)


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


def _unflatten(x, dim, sizes):
    d = dim % x.ndim
    return x.reshape(x.shape[:d] + tuple(sizes) + x.shape[d + 1:])


def _expand(x, *sizes):
    sz = _dims(sizes)
    off = len(sz) - x.ndim
    full = [x.shape[i - off] if s == -1 else s for i, s in enumerate(sz)]
    return np.broadcast_to(x, full)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x64 - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(np.float32)


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
        return _nchw(np.concatenate([_nhwc(t) for t in ts], axis=3))
    return np.concatenate(ts, axis=dim)


def _f32(fn):
    def run(*a, **k):
        r = fn(*a, **k)
        return r.astype(np.float32) if r.dtype == np.float64 else r
    return run


SUPPORTED_FUNCTIONS: dict[str, Any] = {
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
    "interpolate": _interpolate,
    "permute": lambda x, *d: np.ascontiguousarray(x.transpose(_dims(d))),
    "transpose": lambda x, a, b: np.swapaxes(x, a, b),
    "reshape": lambda x, *s: np.reshape(x, _dims(s)),
    "view": lambda x, *s: np.reshape(x, _dims(s)),
    "flatten": _flatten, "unflatten": _unflatten, "expand": _expand,
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
    "sigmoid": lambda x: (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32),
    "relu": lambda x, inplace=False: np.maximum(x, np.float32(0)),
    "gelu": lambda x, approximate="none": _gelu(x),
    "layer_norm": _layer_norm,
    "ge": lambda a, b: a >= b, "__ge__": lambda a, b: a >= b,
    "gt": lambda a, b: a > b, "__gt__": lambda a, b: a > b,
    "le": lambda a, b: a <= b, "__le__": lambda a, b: a <= b,
    "lt": lambda a, b: a < b, "__lt__": lambda a, b: a < b,
    "to": _to, "float": lambda x: x.astype(np.float32), "type_as": lambda x, o: x.astype(o.dtype),
    "where": _where, "sign": lambda x: np.sign(x),
    "contiguous": lambda x, *a, **k: x, "detach": lambda x: x, "clone": lambda x, **k: x.copy(),
    "dropout": lambda x, p=0.5, training=False, inplace=False: x,
    "avg_pool2d": lambda x, kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None: _pool(
        x, _pair(kernel_size), _pair(stride or kernel_size), _pair(padding), "avg",
        count_include_pad),
    "adaptive_avg_pool2d": lambda x, output_size: _adaptive_avg(x, _pair(output_size)),
}


# in-place variants: the recorder gives their result a new name, so the functional form is
# equivalent as long as no other view of the mutated tensor is read afterwards
for _name in ("add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "exp", "abs", "neg",
              "hardtanh", "sqrt", "square"):
    SUPPORTED_FUNCTIONS[_name + "_"] = SUPPORTED_FUNCTIONS[_name]
SUPPORTED_FUNCTIONS["clamp"] = SUPPORTED_FUNCTIONS["clip"] = lambda x, min=None, max=None: (
    np.clip(x, min, max))
SUPPORTED_FUNCTIONS["clamp_"] = SUPPORTED_FUNCTIONS["clamp"]
SUPPORTED_FUNCTIONS["__imul__"] = SUPPORTED_FUNCTIONS["mul"]
SUPPORTED_FUNCTIONS["__isub__"] = SUPPORTED_FUNCTIONS["sub"]


def _cfb(x: np.ndarray, c_out: int, cdim: int, grouping: str) -> np.ndarray:
    """BiDense CFB (Yin et al., arXiv 2411.10346): tile ``r = C_out // C_in`` times, then
    ``m = C_out % C_in`` merged channels (``m - 1`` regular means of ``g = C_in // m`` inputs,
    strided or contiguous, and one mean of the remaining inputs), as
    :func:`bidense.nn.channel_adaptive_bypass`."""
    c_in = x.shape[cdim]
    if c_out == c_in:
        return x
    r, m = divmod(c_out, c_in)
    parts = [np.concatenate([x] * r, axis=cdim)] if r else []
    if m:
        g = c_in // m
        n_reg = g * (m - 1)
        if n_reg:
            reg = np.take(x, np.arange(n_reg), axis=cdim)
            if grouping == "strided":
                reg = _unflatten(reg, cdim, (g, m - 1)).mean(axis=cdim, dtype=np.float64)
            else:
                reg = _unflatten(reg, cdim, (m - 1, g)).mean(axis=cdim + 1, dtype=np.float64)
            parts.append(reg.astype(np.float32))
        rest = np.take(x, np.arange(n_reg, c_in), axis=cdim)
        parts.append(rest.mean(axis=cdim, keepdims=True, dtype=np.float64).astype(np.float32))
    return np.concatenate(parts, axis=cdim)


def _cfb_cl(x: np.ndarray, c_out: int, cdim: int, grouping: str) -> np.ndarray:
    """:func:`_cfb` that keeps a 4-D channels-last activation channels-last."""
    if x.ndim == 4 and cdim % 4 == 1:
        if x.shape[1] == c_out:
            return x
        y = kernels.cfb_nhwc(_nhwc(x), c_out, grouping, threads=_CALL["threads"])
        return _nchw(_cfb(_nhwc(x), c_out, 3, grouping) if y is None else y)
    return _cfb(x, c_out, cdim % x.ndim, grouping)


def _cfb_add(y, x, cdim, grouping):
    # _AddBypass.apply(y, x, cdim, grouping)
    return y + _cfb_cl(x, y.shape[cdim % y.ndim], cdim % y.ndim, grouping)


def _cfb_add_fn(y, x, grouping="strided", channel_dim=1):
    # add_channel_adaptive_bypass(y, x, grouping, channel_dim)
    return _cfb_add(y, x, channel_dim, grouping)


def _pixel_shuffle(x, upscale_factor):
    n, c, h, w = x.shape
    r = int(upscale_factor)
    co = c // (r * r)
    y = _nhwc(x).reshape(n, h, w, co, r, r).transpose(0, 1, 4, 2, 5, 3)
    return _nchw(np.ascontiguousarray(y).reshape(n, h * r, w * r, co))


def _cfb_fn(x, out_channels, grouping="strided", channel_dim=1):
    return _cfb_cl(x, int(out_channels), channel_dim % x.ndim, grouping)


SUPPORTED_FUNCTIONS["cfb_add"] = _cfb_add
SUPPORTED_FUNCTIONS["cfb_add_fn"] = _cfb_add_fn
SUPPORTED_FUNCTIONS["pixel_shuffle"] = _pixel_shuffle
SUPPORTED_FUNCTIONS["cfb"] = _cfb_fn


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int | np.integer) else (int(v[0]), int(v[1]))


_NP_DTYPES = {"float32": np.float32, "float64": np.float32, "float16": np.float32,
              "int64": np.int64, "int32": np.int64, "bool": np.bool_}


# ---------------------------------------------------------------------------------------------
# binary layers


def _apply_epi(y: np.ndarray, epi: dict[str, Any] | None) -> np.ndarray:
    """The fused epilogue in numpy on NHWC ``y``, in the kernel's float32 operations and order:
    ``y + bypass``, then ``PReLU(y + pre; slope) + post``."""
    if not epi:
        return y
    if epi.get("bypass") is not None:
        y = y + epi["bypass"]
    slope = epi.get("slope")
    if slope is not None:
        if epi.get("pre") is not None:
            y = y + epi["pre"]
        y = np.where(y > 0, y, y * slope)
        if epi.get("post") is not None:
            y = y + epi["post"]
    return y.astype(np.float32, copy=False)


_ADD_OPS = ("add", "__add__", "__radd__", "__iadd__", "add_")


class _BinaryOp:
    """One binary conv / transposed conv / linear layer, prepared at load time."""

    def __init__(self, kind: str, attrs: dict[str, Any], t: dict[str, np.ndarray]) -> None:
        self.kind = kind
        self.a = attrs
        self.act = attrs["act"]
        self.t = t
        self.out_scale = t["out_scale"]
        self.out_bias = t["out_bias"]
        self.cin = int(attrs["in_channels"])
        self.float_weights = attrs["weight"] == "float"
        self.groups = int(attrs.get("groups", 1))
        self.pad_mode = attrs.get("pad_mode", "zero")
        if self.pad_mode not in ("zero", "one"):
            raise ValueError(f"unknown pad_mode {self.pad_mode!r}")
        self.w_bits = None if self.float_weights else t["w_bits"]
        self._wf: np.ndarray | None = None

    # the float weight tensor (+-1 signs, or the exact float weights)
    def wf(self) -> np.ndarray:
        if self._wf is None:
            if self.float_weights:
                self._wf = self.t["w_float"].astype(np.float32)
            elif self.kind == "bconvT":
                kh, kw, o, _ = self.w_bits.shape
                s = kernels.unpack_nhwc(self.w_bits, self.cin)  # (KH, KW, O, I)
                w = s.transpose(3, 2, 0, 1) * self.t["w_scale_in"][:, None, None, None]
                self._wf = np.ascontiguousarray(w, np.float32)  # (I, O, KH, KW) as PyTorch
            else:
                cg = self.cin // self.groups
                s = kernels.unpack_nhwc(self.w_bits, cg)  # (O, KH, KW, I/g)
                self._wf = np.ascontiguousarray(s.transpose(0, 3, 1, 2), np.float32)
        return self._wf

    def _act(self, x: np.ndarray, cdim: int):
        """Return ``(pre, mult, offset)``: binarized value = ``mult * sign(pre) + offset``."""
        k = self.act["kind"]
        t = self.t
        nd = x.ndim
        if k in ("sign", "xnor"):
            return x, None, None
        if k == "rsign":
            return x - _cv(t["act.threshold"], nd, cdim), None, None
        if k == "bisrnet":
            return _cv(t["act.k"], nd, cdim) * x + _cv(t["act.b"], nd, cdim), None, None
        if k == "adabin":
            al, be = t["act.alpha"][0], t["act.beta"][0]
            pre = (x - be) / al
            if self.act.get("variant") == "reference":
                return pre, al, al * be
            return pre, al, be
        if k == "dab":
            axes = tuple(i for i in range(1, nd) if i != cdim % nd)
            x64 = x.astype(np.float64)

            def mean(v):
                return v.mean(axis=axes, keepdims=True).astype(np.float32) if axes else v

            mu = mean(x64)
            tau = _cv(t["act.k"], nd, cdim) * mu + _cv(t["act.b"], nd, cdim)
            m = mean(np.abs(x64 - tau))
            alpha = np.exp(_cv(t["act.a"], nd, cdim) * (m - np.float32(1.0)))
            if self.act.get("scale") == "shared":
                alpha = alpha.mean(axis=cdim % nd, keepdims=True, dtype=np.float64).astype(
                    np.float32)
            return x - tau, alpha.astype(np.float32), None
        raise ValueError(f"unknown activation binarizer {k!r}")

    def run(self, x: np.ndarray, threads: int, epi: dict[str, Any] | None = None
            ) -> tuple[np.ndarray, str]:
        """Run the layer on ``x``; ``epi`` (bconv only) is a fused epilogue: ``bypass`` (NHWC),
        then ``PReLU(y + pre; slope) + post`` (see :meth:`Runtime._plan_fusion`)."""
        if self.kind == "blinear":
            return self._run_linear(x, threads)
        k = self.act["kind"]
        if self.kind == "bconv" and not self.float_weights and k in ("sign", "xnor", "rsign",
                                                                     "dab"):
            return self._run_fast(x, threads, epi)
        y, path = self._run_general(x, threads)
        return (_nchw(_apply_epi(_nhwc(y), epi)) if epi else y), path

    def _run_fast(self, x: np.ndarray, threads: int, epi: dict[str, Any] | None
                  ) -> tuple[np.ndarray, str]:
        """Sign-type and DAB inputs on channels-last data: one pass computes the sign bits, the
        ties and (DAB) the deviation statistic; the conv writes NHWC with the fused epilogue."""
        k = self.act["kind"]
        t = self.t
        xs = _nhwc(x)
        n, h, w, c = xs.shape
        tau = alpha = None
        if k == "rsign":
            tau = t["act.threshold"].reshape(-1)
        if k == "dab":
            # DAB (BiDense, Yin et al. 2024): tau = k * mean_hw(x) + b,
            # alpha = exp(a * (mean_hw |x - tau| - 1)), per sample and channel
            mu = (kernels.channel_sum(xs, threads=threads) / (h * w)).astype(np.float32)
            tau = (t["act.k"].reshape(1, -1) * mu + t["act.b"].reshape(1, -1)).astype(np.float32)
        bits, ties, dev = kernels.pack_threshold(xs, tau, absdev=k == "dab", threads=threads)
        if k == "dab":
            m = (dev / (h * w)).astype(np.float32)
            alpha = np.exp(t["act.a"].reshape(1, -1) * (m - np.float32(1.0))).astype(np.float32)
            if self.act.get("scale") == "shared":
                alpha = alpha.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        depthwise = self.groups == self.cin and self.w_bits.shape[0] == self.cin
        kh, kw = self.a["kernel"]
        geo = dict(kernel=(kh, kw), stride=self.a["stride"], padding=self.a["padding"],
                   dilation=self.a["dilation"])
        tt = None if tau is None else (tau if tau.ndim == 1 else tau[:, None, None, :])
        if alpha is not None and alpha.shape[1] > 1 and not depthwise:
            # per-channel alpha on a dense conv: the float path (engines.md 7 (2)), a float32
            # conv of sign(x - tau) * alpha_c with the +-1 weights
            s = np.sign(xs - tt).astype(np.float32)
            val = s * alpha[:, None, None, :]
            if self.pad_mode == "one" and any(self.a["padding"]):
                y = _nhwc(self._conv_pad_one(val, alpha))
            else:
                y = _nhwc(_conv2d(_nchw(val), self.wf(), self.a["stride"], self.a["padding"],
                                  self.a["dilation"], 1))
            e = epi or {}
            y = kernels.epilogue_numpy(y, self.out_scale, False, self.out_bias, e.get("bypass"),
                                     e.get("slope"), e.get("pre"), e.get("post"))
            return _nchw(y), "DAB float path (per-channel alpha)" + (" +zeros" if ties else "")
        scale = self.out_scale
        if alpha is not None:
            scale = (alpha * self.out_scale[None, :]).astype(np.float32)
            path = "packed, DAB shared alpha folded" if alpha.shape[1] == 1 else \
                "depthwise exact-alpha"
        else:
            path = "depthwise packed" if depthwise else "packed"
        xnor_k = k == "xnor" and self.act.get("use_k", True)
        fuse = not ties and not xnor_k
        e = (epi or {}) if fuse else {}
        y = kernels.binary_conv2d(
            bits, self.w_bits, self.cin, groups=self.groups, scale=scale,
            bias=self.out_bias if fuse else None, pad_mode=self.pad_mode, threads=threads,
            bypass=e.get("bypass"), prelu=e.get("slope"), prelu_pre=e.get("pre"),
            prelu_post=e.get("post"), **geo)
        if ties:
            # torch.sign(0) = 0: run again with the ties as -1; sign = (s_+ + s_-) / 2 exactly
            pre = xs if tt is None else (xs - tt).astype(np.float32)
            bits2 = kernels.pack_nhwc(np.where(pre == 0, np.float32(-1), pre), threads=threads)
            y2 = kernels.binary_conv2d(bits2, self.w_bits, self.cin, groups=self.groups,
                                       scale=scale, bias=None, pad_mode=self.pad_mode,
                                       threads=threads, **geo)
            y = (y + y2) * np.float32(0.5)
        if xnor_k:
            y = y * _nhwc(self._xnor_k(x))
        if not fuse:
            y = _apply_epi(y + self.out_bias, epi)
        return _nchw(y), path + (" +zeros" if ties else "")

    def _conv_pad_one(self, val: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        # "one" padding on the DAB float path pads with +alpha_c (a +1 sign times its alpha)
        ph, pw = self.a["padding"]
        n, h, w, c = val.shape
        full = np.broadcast_to(alpha[:, None, None, :], (n, h + 2 * ph, w + 2 * pw, c)).copy()
        full[:, ph:ph + h, pw:pw + w] = val
        return _conv2d(_nchw(full), self.wf(), self.a["stride"], (0, 0), self.a["dilation"], 1)

    def _run_general(self, x: np.ndarray, threads: int) -> tuple[np.ndarray, str]:
        n = x.shape[0]
        k = self.act["kind"]
        if k == "identity":
            return self._float(x, None), "float (fp activations)"
        pre, mult, off = self._act(x, 1)
        depthwise = self.groups == self.cin and self.w_bits is not None and (
            self.w_bits.shape[0] == self.cin)
        uniform = mult is None or np.ndim(mult) == 0 or mult.shape[1] == 1
        if self.float_weights or off is not None or self.kind == "bconvT" or (
                not uniform and not depthwise and k != "dab"):
            s = np.sign(pre).astype(np.float32)
            val = s if mult is None else s * mult
            if off is not None:
                val = val + off
            return self._float(val, x), "float (" + (
                "transposed, per-input-channel weight scale" if self.kind == "bconvT" else
                "affine binary values" if off is not None else "float weights") + ")"
        kh, kw = self.a["kernel"]
        geo = dict(kernel=(kh, kw), stride=self.a["stride"], padding=self.a["padding"],
                   dilation=self.a["dilation"])
        xs = _nhwc(pre)
        bits, ties, _ = kernels.pack_threshold(xs, None, threads=threads)
        bits = [bits]
        if ties:
            bits.append(kernels.pack_nhwc(np.where(xs == 0, np.float32(-1), xs),
                                          threads=threads))
        scale = self.out_scale
        if mult is not None and (uniform or depthwise):
            scale = (mult.reshape(n, -1) * self.out_scale[None, :]).astype(np.float32)
            path = "packed, DAB shared alpha folded" if uniform else "depthwise exact-alpha"
        elif mult is not None:
            path = "DAB float path (per-channel alpha)"
        else:
            path = "depthwise packed" if depthwise else "packed"
        xnor_k = k == "xnor" and self.act.get("use_k", True)
        fuse = not ties and not xnor_k
        outs = []
        for b in bits:
            if mult is not None and not (uniform or depthwise):
                outs.append(kernels.binary_conv2d_dab(
                    b, mult.reshape(n, -1), self.w_bits, self.cin, pad_mode=self.pad_mode,
                    scale=self.out_scale, bias=self.out_bias if fuse else None, **geo))
            else:
                outs.append(kernels.binary_conv2d(
                    b, self.w_bits, self.cin, groups=self.groups, scale=scale,
                    bias=self.out_bias if fuse else None, pad_mode=self.pad_mode,
                    threads=threads, **geo))
        y = outs[0] if len(outs) == 1 else (outs[0] + outs[1]) * np.float32(0.5)
        if xnor_k:
            y = y * _nhwc(self._xnor_k(x))
        if not fuse:
            y = y + self.out_bias
        return _nchw(y.astype(np.float32, copy=False)), path + (" +zeros" if ties else "")

    def _xnor_k(self, x: np.ndarray) -> np.ndarray:
        a = np.abs(x).mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        kh, kw = self.a["kernel"]
        box = np.full((1, 1, kh, kw), 1.0 / (kh * kw), np.float32)
        return _conv2d(a, box, self.a["stride"], self.a["padding"], self.a["dilation"], 1)

    def _float(self, val: np.ndarray, x: np.ndarray | None) -> np.ndarray:
        """Float conv of the binarized values, then the layer's scale/K and bias."""
        w = self.wf()
        if self.kind == "bconvT":
            n, c, h, wd = val.shape
            kh, kw = self.a["kernel"]
            o = w.shape[1]
            y = _nhwc(val).reshape(-1, c) @ w.reshape(c, -1)
            y = _nchw(np.ascontiguousarray(y.reshape(n, h, wd, o, kh, kw).transpose(
                0, 1, 4, 2, 5, 3)).reshape(n, h * kh, wd * kw, o))
            if self.act["kind"] == "xnor" and self.act.get("use_k", True) and x is not None:
                y = y * np.abs(x).mean(axis=(1, 2, 3), keepdims=True, dtype=np.float64).astype(
                    np.float32)
        else:
            if self.pad_mode == "one" and any(self.a["padding"]):
                raise ValueError("pad_mode='one' is supported on the packed paths only")
            y = _conv2d(val, w, self.a["stride"], self.a["padding"], self.a["dilation"],
                        self.groups)
            if self.act["kind"] == "xnor" and self.act.get("use_k", True) and x is not None:
                y = y * self._xnor_k(x)
        y = y * self.out_scale[None, :, None, None] + self.out_bias[None, :, None, None]
        return y.astype(np.float32, copy=False)

    def _run_linear(self, x: np.ndarray, threads: int) -> tuple[np.ndarray, str]:
        k = self.act["kind"]
        lead = x.shape[:-1]
        c = x.shape[-1]
        if k == "identity" or self.float_weights or k in ("adabin", "dab"):
            if k == "identity":
                val = x
            else:
                pre, mult, off = self._act(x, -1)
                val = np.sign(pre).astype(np.float32)
                val = val if mult is None else val * mult
                val = val if off is None else val + off
            w = self.t["w_float"] if self.float_weights else self.wf()[:, :, 0, 0]
            y = val.reshape(-1, c) @ w.T
            path = "float (linear)"
        else:
            pre, _, _ = self._act(x, -1)
            xs = np.ascontiguousarray(pre.reshape(1, 1, -1, c), np.float32)
            has_zero = kernels.count_zeros(xs) > 0
            bits = [kernels.pack_nhwc(xs, threads=threads)]
            if has_zero:
                bits.append(kernels.pack_nhwc(np.where(xs == 0, np.float32(-1), xs),
                                              threads=threads))
            outs = [kernels.binary_conv2d(b, self.w_bits, c, 1, threads=threads) for b in bits]
            y = outs[0] if len(outs) == 1 else (outs[0] + outs[1]) * np.float32(0.5)
            y = y.reshape(-1, y.shape[-1])
            path = "packed (linear)" + (" +zeros" if has_zero else "")
        y = y * self.out_scale
        if k == "xnor" and self.act.get("use_k", True):
            y = y * np.abs(x).reshape(-1, c).mean(axis=1, keepdims=True, dtype=np.float64
                                                  ).astype(np.float32)
        y = y + self.out_bias
        return np.ascontiguousarray(y.reshape(lead + (-1,)), np.float32), path


# ---------------------------------------------------------------------------------------------
# the runtime


class Runtime:
    """Run a ``.bdn`` model on float32 NCHW numpy arrays (no torch).

    Args:
        path: the ``.bdn`` file (validated on load; see :mod:`bidense.runtime.format`).
        threads: kernel threads (default: ``os.cpu_count()``).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = str(path)
        f = read_bdn(path)
        self.metadata = f.metadata
        self.graph = f.graph
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        _reuse_heap_memory()
        self._tensors = f.tensors
        try:
            spec = f.graph["input"]
            self.input_shape = tuple(int(s) for s in spec["shape"])
            self._nodes = f.graph["nodes"]
            self._outputs = f.graph["outputs"]
            self._mods: dict[str, Any] = {}
            for key, m in f.graph["modules"].items():
                ts = {local: f.tensors[g] for local, g in m["tensors"].items()}
                if m["kind"] in ("bconv", "bconvT", "blinear"):
                    self._mods[key] = (m["kind"], _BinaryOp(m["kind"], m["attrs"], ts))
                else:
                    self._mods[key] = (m["kind"], (m["attrs"], ts))
            for n in self._nodes:
                if n["op"] == "module":
                    if n["module"] not in self._mods:
                        raise KeyError(n["module"])
                elif n["op"] not in SUPPORTED_FUNCTIONS:
                    raise ValueError(f"unsupported function {n['op']!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path}: invalid graph ({type(exc).__name__}: {exc})") from None
        self._groups: dict[int, dict[str, Any]] = {}  # exec index -> fused group
        self._skip: set[int] = set()
        self._plan_fusion()
        where = {i: g["at"] for g in self._groups.values() for i in g["members"]}
        last: dict[str, int] = {}
        for i, n in enumerate(self._nodes):
            for r in _refs(n):
                last[r] = max(last.get(r, -1), where.get(i, i))
        self._last = last
        self._report: list[dict[str, Any]] = []
        self._keep = False  # debugging aid: keep every intermediate in ``self._env``

    def _plan_fusion(self) -> None:
        """Fuse ``bconv -> add / CFB add -> [RPReLU | LearnableBias -> PReLU | PReLU]`` chains
        into the binary kernel's epilogue (``y = D * s + b + bypass``, then
        ``PReLU(y + pre; slope) + post``): the same float32 operations, one pass instead of
        three or four. A chain is fused only when each intermediate has exactly one consumer."""
        nodes = self._nodes
        users: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for r in _refs(n):
                users.setdefault(r, []).append(i)

        def single_user(name: str) -> int | None:
            u = users.get(name, [])
            return u[0] if len(u) == 1 and name not in self._outputs else None

        def tref(o: Any) -> str | None:
            return o["t"] if isinstance(o, dict) and len(o) == 1 and "t" in o else None

        claimed: set[int] = set()
        for i, n in enumerate(nodes):
            if n["op"] != "module" or self._mods[n["module"]][0] != "bconv":
                continue
            op = self._mods[n["module"]][1]
            if op.float_weights or op.act["kind"] not in ("sign", "xnor", "rsign", "dab"):
                continue
            j = single_user(n["outputs"][0])
            if j is None:
                continue
            a = nodes[j]
            args, kw = a["args"], a["kwargs"]
            src = n["outputs"][0]
            plan: dict[str, Any]
            if a["op"] in _ADD_OPS and not kw and len(args) == 2:
                refs = [tref(v) for v in args]
                if refs.count(src) != 1 or None in refs:
                    continue
                plan = {"bypass": refs[1 - refs.index(src)], "cfb": None}
            elif a["op"] in ("cfb_add", "cfb_add_fn") and tref(args[0]) == src and \
                    tref(args[1]) is not None:
                if a["op"] == "cfb_add":
                    cdim, grouping = (args[2], args[3]) if len(args) == 4 else (None, None)
                else:
                    cdim = args[3] if len(args) > 3 else kw.get("channel_dim", 1)
                    grouping = args[2] if len(args) > 2 else kw.get("grouping", "strided")
                if cdim not in (1, -3) or not isinstance(grouping, str):
                    continue
                plan = {"bypass": tref(args[1]), "cfb": grouping}
            else:
                act = self._act_plan(src, single_user, op.out_scale.shape[0])
                if act is None:
                    continue
                plan = {"bypass": None, "cfb": None, **act[3]}
                members, fused, out = [i], [], src
            if plan["bypass"] is None:
                members += act[0]
                fused += act[1]
                out = act[2]
            else:
                members, fused, out = [i, j], [a["op"]], a["outputs"][0]
                act = self._act_plan(out, single_user, op.out_scale.shape[0])
            if plan["bypass"] is not None and act is not None:
                members += act[0]
                fused += act[1]
                out = act[2]
                plan.update(act[3])
            if claimed.intersection(members):
                continue
            claimed.update(members)
            at = max(members)
            self._groups[at] = {"at": at, "members": members, "fused": fused, "out": out,
                                "name": n["module"], "module": n["module"],
                                "x": tref(n["args"][0]), **plan}
            self._skip.update(m for m in members if m != at)

    def _act_plan(self, name: str, single_user, o: int):
        """The activation chain fed only by ``name``: ``(members, fused, out, epilogue)`` for
        RPReLU, LearnableBias -> PReLU, PReLU or ReLU (slope 0), else ``None``."""
        nodes = self._nodes
        i1 = single_user(name)
        m1 = nodes[i1] if i1 is not None else None
        if not m1 or m1["op"] != "module":
            return None
        kind1, mod1 = self._mods[m1["module"]]
        if kind1 == "relu":
            return [i1], ["relu"], m1["outputs"][0], {
                "pre": None, "slope": np.zeros(o, np.float32), "post": None}
        if kind1 == "rprelu":
            ma, mt = mod1
            if ma.get("channel_dim") not in (1, -3) or mt["gamma"].size != o or \
                    mt["beta"].size != o:
                return None
            return [i1], ["rprelu"], m1["outputs"][0], {
                "pre": (-mt["gamma"].reshape(-1)).astype(np.float32),
                "slope": mt["beta"].reshape(-1).astype(np.float32),
                "post": None if "zeta" not in mt else mt["zeta"].reshape(-1).astype(np.float32)}
        members, fused, pre, m2 = [], [], None, m1
        if kind1 == "lbias":
            ma, mt = mod1
            if ma.get("channel_dim") not in (1, -3) or mt["bias"].size != o:
                return None
            i2 = single_user(m1["outputs"][0])
            m2 = nodes[i2] if i2 is not None else None
            if not m2 or m2["op"] != "module" or self._mods[m2["module"]][0] != "prelu":
                return None
            members, fused, pre = [i1], ["lbias"], mt["bias"].reshape(-1).astype(np.float32)
            i1 = i2
        elif kind1 != "prelu":
            return None
        w = self._mods[m2["module"]][1][1]["weight"].reshape(-1).astype(np.float32)
        if w.size not in (1, o):
            return None
        return members + [i1], fused + ["prelu"], m2["outputs"][0], {
            "pre": pre, "slope": np.broadcast_to(w, (o,)).copy(), "post": None}

    def _run_group(self, g: dict[str, Any], env: dict[str, np.ndarray]
                   ) -> tuple[np.ndarray, str]:
        op = self._mods[g["module"]][1]
        x = env[g["x"]]
        epi = {k: g.get(k) for k in ("pre", "slope", "post")}
        if g["bypass"] is None:
            return op.run(x, self.threads, epi)
        byp = env[g["bypass"]]
        o = op.out_scale.shape[0]
        if g["cfb"] is not None:
            byp = _cfb_cl(byp, o, 1, g["cfb"])
        kh, kw = op.a["kernel"]
        (sh, sw), (ph, pw), (dh, dw) = op.a["stride"], op.a["padding"], op.a["dilation"]
        ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if byp.ndim == 4 and byp.shape == (x.shape[0], o, ho, wo) and byp.dtype == np.float32:
            epi["bypass"] = _nhwc(byp)
            return op.run(x, self.threads, epi)
        # the bypass broadcasts or has another dtype: add it as the graph did, then the rest
        y, path = op.run(x, self.threads)
        y = y + byp
        if epi["slope"] is not None:
            y = _nchw(_apply_epi(_nhwc(y), epi))
        return y, path

    def _check(self, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise RuntimeInputError(
                f"{self.path}: input must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise RuntimeInputError(f"{self.path}: input dtype must be float32, got {x.dtype}")
        if x.ndim != 4:
            raise RuntimeInputError(
                f"{self.path}: input must be 4-D NCHW {self.input_shape}, got {x.ndim}-D "
                f"shape {x.shape}")
        if tuple(x.shape) != self.input_shape:
            raise RuntimeInputError(
                f"{self.path}: input shape must be {self.input_shape} (the exported shape), "
                f"got {tuple(x.shape)}")
        return _nchw(_nhwc(x))  # channels-last memory from here on

    def _arg(self, o: Any, env: dict[str, np.ndarray]) -> Any:
        if isinstance(o, dict):
            if "t" in o and len(o) == 1:
                return env[o["t"]]
            if "c" in o and len(o) == 1:
                return self._tensors[f"const/{o['c']}"]
            if "dtype" in o:
                return np.dtype(_NP_DTYPES.get(o["dtype"], np.float32))
            if "slice" in o:
                return slice(*[self._arg(v, env) for v in o["slice"]])
            if "ellipsis" in o:
                return Ellipsis
            if "float" in o:
                return float(o["float"])
            return {k: self._arg(v, env) for k, v in o.items()}
        if isinstance(o, list):
            return [self._arg(v, env) for v in o]
        return o

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the model on ``x`` (float32, the exported NCHW shape); returns a numpy array."""
        x = self._check(x)
        _CALL["threads"] = self.threads
        if _SET_BLAS_THREADS is not None:
            # numpy's BLAS stays at one thread: threaded sgemm changes results with the thread
            # count (a flipped sign downstream), and its spinning workers slow the OpenMP
            # kernels; the FP convs use the compiled row-parallel GEMM instead
            _SET_BLAS_THREADS(1)
        env: dict[str, np.ndarray] = {self.graph["input"]["name"]: x}
        report = []
        for i, n in enumerate(self._nodes):
            if i in self._skip:
                continue
            t0 = time.perf_counter()
            grp = self._groups.get(i)
            if grp is not None:
                out, path = self._run_group(grp, env)
                env[grp["out"]] = out
                for j in grp["members"]:
                    for r in _refs(self._nodes[j]):
                        if self._last.get(r) == i and r not in self._outputs and not self._keep:
                            env.pop(r, None)
                report.append({"node": grp["out"], "name": grp["name"], "op": "bconv",
                               "path": path, "fused": list(grp["fused"]),
                               "shape": list(np.shape(out)),
                               "ms": 1e3 * (time.perf_counter() - t0)})
                continue
            if n["op"] == "module":
                kind, mod = self._mods[n["module"]]
                inp = self._arg(n["args"][0], env)
                out, path = self._run_module(kind, mod, inp)
                name = n["module"]
            else:
                args = self._arg(n["args"], env)
                kwargs = self._arg(n["kwargs"], env)
                out = SUPPORTED_FUNCTIONS[n["op"]](*args, **kwargs)
                kind, path, name = n["op"], "numpy", n["op"]
            outs = n["outputs"]
            if len(outs) == 1:
                env[outs[0]] = np.asarray(out)
            else:
                for k, o in zip(outs, out):
                    env[k] = np.asarray(o)
            for r in _refs(n):
                if self._last.get(r) == i and r not in self._outputs and not self._keep:
                    env.pop(r, None)
            report.append({"node": outs[0], "name": name, "op": kind, "path": path,
                           "shape": list(np.shape(env[outs[0]])),
                           "ms": 1e3 * (time.perf_counter() - t0)})
        self._report = report
        if self._keep:
            self._env = env
        res = env[self._outputs[0]]
        return np.ascontiguousarray(res, dtype=np.float32)

    def _run_module(self, kind: str, mod: Any, x: np.ndarray) -> tuple[np.ndarray, str]:
        if kind in ("bconv", "bconvT", "blinear"):
            return mod.run(x, self.threads)
        a, t = mod
        nd = x.ndim
        if kind == "conv":
            y = _conv2d(x, t["w_float"], a["stride"], a["padding"], a["dilation"], a["groups"],
                        t["out_scale"].reshape(-1), t["out_bias"].reshape(-1))
            return y, "fp32 conv"
        if kind == "convT":
            w = t["w_float"]
            n, c, h, wd = x.shape
            kh, kw = a["kernel"]
            o = w.shape[1]
            y = _nhwc(x).reshape(-1, c) @ w.reshape(c, -1)
            y = _nchw(np.ascontiguousarray(y.reshape(n, h, wd, o, kh, kw).transpose(
                0, 1, 4, 2, 5, 3)).reshape(n, h * kh, wd * kw, o))
            return (y * _cv(t["out_scale"], 4, 1) + _cv(t["out_bias"], 4, 1)), "fp32 numpy"
        if kind == "linear":
            y = x @ t["weight"].T
            return (y + t["bias"] if "bias" in t else y), "fp32 numpy"
        if kind == "bn":
            return x * _cv(t["scale"], nd, 1) + _cv(t["shift"], nd, 1), "fp32 numpy (BN)"
        if kind == "ln":
            return _layer_norm(x, a["shape"], t.get("weight"), t.get("bias"), a["eps"]), "fp32"
        if kind == "ln2d":
            y = _layer_norm(_nhwc(x), a["shape"], t.get("weight"), t.get("bias"), a["eps"])
            return _nchw(y), "fp32"
        if kind == "gelu":
            return _gelu(x), "fp32"
        if kind == "relu":
            return np.maximum(x, np.float32(0)), "fp32"
        if kind == "sigmoid":
            return SUPPORTED_FUNCTIONS["sigmoid"](x), "fp32"
        if kind == "identity":
            return x, "identity"
        if kind == "prelu":
            w = t["weight"]
            wv = _cv(w, nd, 1) if w.size > 1 else w.reshape(())
            return np.where(x >= 0, x, wv * x).astype(np.float32), "fp32"
        if kind == "lbias":
            return x + _cv(t["bias"], nd, a["channel_dim"]), "fp32"
        if kind == "rprelu":
            cd = a["channel_dim"]
            s = x - _cv(t["gamma"], nd, cd)
            y = np.where(s > 0, s, _cv(t["beta"], nd, cd) * s)
            if "zeta" in t:
                y = y + _cv(t["zeta"], nd, cd)
            return y.astype(np.float32), "fp32"
        if kind == "maxout":
            cd = a["channel_dim"]
            y = _cv(t["pos"], nd, cd) * np.maximum(x, 0) - _cv(t["neg"], nd, cd) * np.maximum(
                -x, 0)
            return y.astype(np.float32), "fp32"
        if kind == "maxpool":
            return _pool(x, a["kernel"], a["stride"], a["padding"], "max"), "fp32"
        if kind == "avgpool":
            return _pool(x, a["kernel"], a["stride"], a["padding"], "avg",
                         a["count_include_pad"]), "fp32"
        if kind == "adapool":
            return _adaptive_avg(x, a["output_size"]), "fp32"
        if kind == "act":
            if a["act"]["kind"] == "identity":
                return x, "identity"
            return np.sign(x).astype(np.float32), "sign"
        raise ValueError(f"{self.path}: unknown module kind {kind!r}")

    def report(self) -> list[dict[str, Any]]:
        """Per node of the last call: ``name, op, path, shape, ms``."""
        return [dict(r) for r in self._report]

    def report_text(self) -> str:
        """The per-layer report as a table."""
        lines = [f"{'node':<40} {'op':<10} {'path':<42} {'ms':>8}"]
        for r in self._report:
            lines.append(f"{r['name'][:40]:<40} {r['op']:<10} {r['path'][:42]:<42} "
                         f"{r['ms']:>8.3f}")
        return "\n".join(lines)


