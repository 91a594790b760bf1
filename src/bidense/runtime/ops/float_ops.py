"""Float32 numpy helpers of the runtime, in PyTorch's semantics and rounding order.

4-D activations inside the runtime are logical NCHW arrays over channels-last (NHWC) memory:
:func:`nhwc` gives the contiguous NHWC data (free for such a view) and :func:`nchw` the logical
view back, so numpy's elementwise ops keep the channels-last layout. Results must not depend on
the thread count: the GEMMs are ``kernels.fp_gemm`` (threads split rows, each output one
accumulator in order), reductions run in float64 and round once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels

__all__ = ["adaptive_avg_pool", "apply_epilogue", "cfb", "cfb_channels_last", "channel_view",
           "conv2d", "conv_transpose_kernel_stride", "erf32", "gelu", "interpolate",
           "layer_norm", "nchw", "nhwc", "pair", "pixel_shuffle", "pool", "sigmoid", "unflatten"]


def nhwc(x: np.ndarray) -> np.ndarray:
    """The channels-last (NHWC) contiguous data of a logical NCHW array (free when the array is
    already a channels-last view, as every 4-D activation inside the runtime is)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)


def nchw(y: np.ndarray) -> np.ndarray:
    """Logical NCHW view of NHWC data (no copy; numpy ops keep the channels-last layout)."""
    return y.transpose(0, 3, 1, 2)


def channel_view(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """``v`` reshaped to broadcast along ``axis`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def pair(v: Any) -> tuple[int, int]:
    """``(v, v)`` for an int, else the first two entries as ints (PyTorch's ``_pair``)."""
    return (int(v), int(v)) if isinstance(v, int | np.integer) else (int(v[0]), int(v[1]))


def unflatten(x: np.ndarray, dim: int, sizes: Any) -> np.ndarray:
    """``torch.unflatten``: split axis ``dim`` into ``sizes``."""
    d = dim % x.ndim
    return x.reshape(x.shape[:d] + tuple(sizes) + x.shape[d + 1:])


# ---------------------------------------------------------------------------------------------
# convolutions and pooling


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


def _scale_bias(y: np.ndarray, scale: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
    """NHWC ``y * scale + bias`` (each optional; two float32 roundings, as the GEMM kernel)."""
    if scale is not None:
        y = y * scale.astype(np.float32, copy=False)
    if bias is not None:
        y = y + bias.astype(np.float32, copy=False)
    return y


def conv2d(x: np.ndarray, w: np.ndarray, stride, padding, dilation, groups: int,
           scale: np.ndarray | None = None, bias: np.ndarray | None = None, *,
           threads: int = 1) -> np.ndarray:
    """Float32 ``F.conv2d`` on channels-last data, then ``* scale + bias`` per output channel
    when given; returns a logical NCHW view.

    1x1 convs are one GEMM; kxk convs an NHWC im2col (taps outer, channels inner) and a GEMM;
    depthwise convs a tap loop of vector multiply-adds. The GEMMs are ``kernels.fp_gemm``
    (threads split rows, so the result does not depend on ``threads``).
    """
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xs = nhwc(x)
    if kh == kw == 1 and sh == sw == 1 and ph == pw == 0 and groups == 1:
        y = kernels.fp_gemm(xs.reshape(-1, c), _wmat(w, 0, 1), scale, bias, threads=threads)
        return nchw(y.reshape(n, ho, wo, o))
    xp = np.pad(xs, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else xs
    if groups == c and o == c and cg == 1:
        y = np.zeros((n, ho, wo, c), np.float32)
        for ky in range(kh):
            for kx in range(kw):
                sl = xp[:, ky * dh: ky * dh + sh * (ho - 1) + 1: sh,
                        kx * dw: kx * dw + sw * (wo - 1) + 1: sw]
                y += sl * w[:, 0, ky, kx]
        return nchw(_scale_bias(y, scale, bias))
    win = np.lib.stride_tricks.sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1),
                                                   axis=(1, 2))
    win = win[:, : sh * (ho - 1) + 1: sh, : sw * (wo - 1) + 1: sw, :, ::dh, ::dw]
    outs = []
    for g in range(groups):
        cols = win[:, :, :, g * cg:(g + 1) * cg].transpose(0, 1, 2, 4, 5, 3).reshape(
            n * ho * wo, -1)
        if groups == 1:
            outs.append(kernels.fp_gemm(cols, _wmat(w, 0, 1), scale, bias, threads=threads
                                        ).reshape(n, ho, wo, -1))
        else:
            outs.append(kernels.fp_gemm(cols, _wmat(w, g, groups), threads=threads).reshape(
                n, ho, wo, -1))
    if groups == 1:
        return nchw(outs[0])
    return nchw(_scale_bias(np.concatenate(outs, axis=-1), scale, bias))


def conv_transpose_kernel_stride(x: np.ndarray, w: np.ndarray, kernel) -> np.ndarray:
    """``F.conv_transpose2d`` with ``stride == kernel`` and no padding (the only transposed conv
    the exporter writes): each input pixel scatters one ``KH x KW`` patch, so it is one GEMM
    ``(N*H*W, C) @ (C, O*KH*KW)`` and a reshuffle. ``w`` is PyTorch's ``(I, O, KH, KW)``."""
    n, c, h, wd = x.shape
    kh, kw = kernel
    o = w.shape[1]
    y = nhwc(x).reshape(-1, c) @ w.reshape(c, -1)
    return nchw(np.ascontiguousarray(y.reshape(n, h, wd, o, kh, kw).transpose(
        0, 1, 4, 2, 5, 3)).reshape(n, h * kh, wd * kw, o))


def pool(x: np.ndarray, kernel, stride, padding, mode: str, include_pad: bool = True
         ) -> np.ndarray:
    """``max_pool2d`` (``mode="max"``) or ``avg_pool2d`` as a tap loop on channels-last data."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    fill = -np.inf if mode == "max" else 0.0
    xs = nhwc(x)
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
        return nchw(acc)
    if include_pad or (ph == 0 and pw == 0):
        return nchw((acc / np.float32(kh * kw)).astype(np.float32))
    ones = np.pad(np.ones((1, h, w, 1), np.float32), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    cnt = sum(ones[:, ky: ky + sh * (ho - 1) + 1: sh, kx: kx + sw * (wo - 1) + 1: sw]
              for ky in range(kh) for kx in range(kw))
    return nchw((acc / cnt).astype(np.float32))


def adaptive_avg_pool(x: np.ndarray, size) -> np.ndarray:
    """``adaptive_avg_pool2d``: bin ``i`` spans ``[floor(i H / oh), ceil((i + 1) H / oh))``;
    float64 means rounded once."""
    n, c, h, w = x.shape
    oh, ow = size
    xs = nhwc(x)
    out = np.empty((n, oh, ow, c), np.float32)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, i, j, :] = xs[:, h0:h1, w0:w1, :].mean(axis=(1, 2), dtype=np.float64)
    return nchw(out)


def _linear_source(n_in: int, n_out: int, align: bool, scale: float | None):
    """Source indices ``i0, i1`` and weight ``lam`` of linear interpolation along one axis."""
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


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False, *, threads: int = 1):
    """``F.interpolate`` for ``nearest`` and ``bilinear`` (separable, ``kernels.bilinear_nhwc``:
    rows first, then columns, in float32)."""
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
    xs = nhwc(x)
    if mode == "nearest":
        rh = (1.0 / sf[0]) if sf else h / oh
        rw = (1.0 / sf[1]) if sf else w / ow
        ih = np.minimum(np.floor(np.arange(oh) * rh).astype(np.int64), h - 1)
        iw = np.minimum(np.floor(np.arange(ow) * rw).astype(np.int64), w - 1)
        return nchw(np.take(np.take(xs, ih, axis=1), iw, axis=2))
    if mode == "bilinear":
        al = bool(align_corners)
        h0, h1, lh = _linear_source(h, oh, al, sf[0] if sf else None)
        w0, w1, lw = _linear_source(w, ow, al, sf[1] if sf else None)
        return nchw(kernels.bilinear_nhwc(xs, h0, h1, lh, w0, w1, lw, threads=threads))
    raise ValueError(f"interpolate mode {mode!r} is not supported")


def pixel_shuffle(x: np.ndarray, upscale_factor) -> np.ndarray:
    """``F.pixel_shuffle``: ``(N, C r^2, H, W) -> (N, C, H r, W r)``."""
    n, c, h, w = x.shape
    r = int(upscale_factor)
    co = c // (r * r)
    y = nhwc(x).reshape(n, h, w, co, r, r).transpose(0, 1, 4, 2, 5, 3)
    return nchw(np.ascontiguousarray(y).reshape(n, h * r, w * r, co))


# ---------------------------------------------------------------------------------------------
# elementwise and normalization


def _fma32(a: np.ndarray, b: np.ndarray, c: Any) -> np.ndarray:
    # float32 products are exact in float64, so this rounds like a fused multiply-add (up to
    # rare double rounding)
    return (a.astype(np.float64) * b + np.float64(c) if np.isscalar(c) else
            a.astype(np.float64) * b + c).astype(np.float32)


def erf32(u: np.ndarray) -> np.ndarray:
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


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU in PyTorch's float32 order, ``x * 0.5 * (1 + erf(x * sqrt(1/2)))``."""
    x = x.astype(np.float32, copy=False)
    e = erf32(x * np.float32(0.7071067811865476))
    return (x * np.float32(0.5)) * (np.float32(1.0) + e)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float64, rounded once to float32."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``F.layer_norm`` over the last ``len(normalized_shape)`` axes (float64 statistics)."""
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


def apply_epilogue(y: np.ndarray, epi: dict[str, Any] | None) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# BiDense's channel-adaptive bypass


def cfb(x: np.ndarray, c_out: int, cdim: int, grouping: str) -> np.ndarray:
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
                reg = unflatten(reg, cdim, (g, m - 1)).mean(axis=cdim, dtype=np.float64)
            else:
                reg = unflatten(reg, cdim, (m - 1, g)).mean(axis=cdim + 1, dtype=np.float64)
            parts.append(reg.astype(np.float32))
        rest = np.take(x, np.arange(n_reg, c_in), axis=cdim)
        parts.append(rest.mean(axis=cdim, keepdims=True, dtype=np.float64).astype(np.float32))
    return np.concatenate(parts, axis=cdim)


def cfb_channels_last(x: np.ndarray, c_out: int, cdim: int, grouping: str, *,
                      threads: int = 1) -> np.ndarray:
    """:func:`cfb` that keeps a 4-D channels-last activation channels-last (compiled
    ``kernels.cfb_nhwc`` when available, the same float64 means)."""
    if x.ndim == 4 and cdim % 4 == 1:
        if x.shape[1] == c_out:
            return x
        y = kernels.cfb_nhwc(nhwc(x), c_out, grouping, threads=threads)
        return nchw(cfb(nhwc(x), c_out, 3, grouping) if y is None else y)
    return cfb(x, c_out, cdim % x.ndim, grouping)
