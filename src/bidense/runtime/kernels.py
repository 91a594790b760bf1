"""Binary (XNOR/XOR-popcount) convolution kernels on numpy arrays, with no torch dependency.

Conventions (engines.md section 5.1; LCE's layout):

* Activations are **NHWC**, packed along channels **LSB-first into ``uint64`` words**, 64 channels
  per word: channel ``c`` is bit ``c % 64`` of word ``c // 64``. Bits above the true channel count
  are 0.
* **Bit 1 = -1, bit 0 = +1** (the float sign bit). :func:`pack_nhwc` maps ``x < 0`` to bit 1, so
  ``+0.0``, ``-0.0`` and NaN all become +1. ``torch.sign(0) = 0`` is a third value one bit cannot
  hold; the caller (the graph runtime) must treat exact zeros/ties separately. :func:`count_zeros`
  helps to detect them.
* Weights are packed the same way in canonical **OHWI** order, shape ``(O, KH, KW, ceil(I/64))``.
* With ``c = popcount(x XOR w)`` over the taps, the +-1 dot product is ``K_eff - 2c``
  (engines.md 5.1) and every conv returns, in float32 NHWC,

  ``y = (K_eff - 2c) * scale_o + bias_o`` (+ ``bypass``) then optionally
  ``y = PReLU(y + prelu_pre; prelu) + prelu_post`` (ReActNet's RPReLU when both biases are given).

  ``pad_mode="zero"`` reproduces PyTorch's ``F.conv2d`` on the binarized tensor: padded taps
  contribute 0 (``K_eff`` counts only valid taps; the compiled kernels compute with +1 padding and
  subtract the exact per-output-channel border correction, engines.md 7 (1)).
  ``pad_mode="one"`` treats padded taps as +1 inputs (Larq's ``pad_values=1``).

Backends (``backend()``; forced with ``BIDENSE_KERNEL=avx512|avx2|popcnt|neon|portable|numpy``
or the ``backend=`` argument): ``avx512`` (VPOPCNTDQ, 16 oc x 6 px), ``avx2`` (nibble-LUT popcount
with byte accumulators flushed by ``vpsadbw`` at most every 31 K-words, 8 oc x 4 px, engines.md
5.5-5.6), ``popcnt`` (scalar POPCNT, 8 oc x 2 px), ``neon`` (aarch64 only: ``vcntq_u8`` byte
popcounts in byte accumulators flushed at most every 31 K-words by pairwise widening adds,
``vpaddlq_u8``/``vpaddlq_u16``/``vpaddq_u32``, into per-oc counts, 8 oc x 4 px; NEON is mandatory on
aarch64, so the build decides and ``cpu_features()["neon"]`` reports it), ``portable`` (plain C,
SWAR popcount) and ``numpy`` (pure numpy reference path used when the extension is not built).
All integer results are bit-exact on every backend, and the float epilogue uses the same float32
operations everywhere (the build disables floating-point contraction, so no compiler fuses them
into FMAs, which aarch64 compilers otherwise do), so the backends agree bit for bit. The NEON path
is checked against the portable one under user-mode emulation by ``tests/test_kernels_neon.py``
(``tools/neon_check.c``). Only the dense conv has a NEON micro-kernel: on aarch64 packing,
thresholding, ``fp_gemm`` and the other helpers run their portable C versions. The depthwise kernel
is a single ISA-independent C routine (bit-sliced counters) on every compiled backend.

Calling the extension (``bidense.runtime._bkernels``, ``csrc/bkernels.c``): every entry point
with more than one argument takes **keyword arguments only**, the fields of the ``*_args`` struct
next to it in the C file; operands that may be ``None`` default to ``None``, the rest are
required, and a positional, missing or misnamed argument raises ``TypeError``. Each call here
spells its keywords out in one place (both conv entry points in ``_ext_conv``, from
:class:`_Geometry` and :class:`_Epilogue`), so a new field cannot shift the others. Every array
operand must be a C-contiguous buffer of the stated element type (uint64 bits, int64 indices,
float32 or float64 data) holding exactly the element count its sizes imply (outputs writable);
the extension raises ``ValueError`` naming the argument otherwise.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# Idle OpenMP workers must not spin for long: the runtime alternates OpenMP kernels with numpy
# steps, and unbounded spinning fought OpenBLAS's threads for the cores. Sleeping at once
# (PASSIVE) costs a futex wake-up of about 50 us per parallel region instead, more than the
# whole of many small kernels, so libgomp gets a short spin (30000 spins, a fraction of a ms)
# that bridges consecutive kernels (measured with BLAS at one thread, upernet_resnet18 at 2
# threads: 32.6 ms PASSIVE -> 27.0 ms). Only effective before libgomp is first loaded, i.e. in
# torch-free deployment processes; a user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT wins, and
# PASSIVE stays the default for other OpenMP runtimes (GOMP_SPINCOUNT overrides it in libgomp).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "30000"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # the compiled extension is optional (see setup.py)
    from bidense.runtime import _bkernels as _ext

    _EXT_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - depends on the build
    _ext = None
    _EXT_ERROR = str(_exc)
    warnings.warn(
        f"bidense.runtime: compiled kernels unavailable ({_EXT_ERROR}); using the portable numpy "
        "path, which is much slower (reinstall with a C compiler to build them)",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = [
    "BACKENDS",
    "available_backends",
    "backend",
    "binary_conv2d",
    "binary_conv2d_dab",
    "binary_conv2d_group_alpha",
    "binary_conv_transpose2d",
    "count_zeros",
    "cpu_features",
    "extension_info",
    "pack_nhwc",
    "pack_weights_ohwi",
    "pack_weights_transpose",
    "unpack_nhwc",
]

#: All backends, fastest first on each platform (the x86 ones, then aarch64's, then the portable).
BACKENDS: tuple[str, ...] = ("avx512", "avx2", "popcnt", "neon", "portable", "numpy")
_PATH_ID = {"portable": 0, "popcnt": 1, "avx2": 2, "avx512": 3, "neon": 4}
_ENV = "BIDENSE_KERNEL"

IntPair = int | Sequence[int]


# ---------------------------------------------------------------------------------------------
# Backend selection


def extension_info() -> dict:
    """Facts about the compiled extension: whether it loaded, why not, OpenMP, compiler."""
    if _ext is None:
        return {"available": False, "error": _EXT_ERROR}
    info = dict(_ext.build_info())
    info["available"] = True
    return info


def cpu_features() -> dict[str, bool]:
    """Run-time CPU features relevant to the kernels (all False without the extension)."""
    if _ext is None:
        names = ("popcnt", "avx2", "fma", "bmi2", "avx512f", "avx512vpopcntdq", "neon")
        return dict.fromkeys(names, False)
    return dict(_ext.cpu_features())


def available_backends() -> list[str]:
    """Backends that can run on this machine and build, fastest first (``numpy`` always)."""
    out = []
    if _ext is not None:
        out = [b for b in BACKENDS[:-1] if _ext.path_supported(_PATH_ID[b])]
    return out + ["numpy"]


def backend(name: str | None = None) -> str:
    """Resolve the backend to use.

    ``name`` (or else the ``BIDENSE_KERNEL`` environment variable) forces one; otherwise the
    fastest available is returned. Forcing an unknown name raises ``ValueError``; forcing one this
    CPU/build cannot run raises ``RuntimeError`` (never a silent substitution).
    """
    forced = name if name is not None else os.environ.get(_ENV, "").strip().lower() or None
    avail = available_backends()
    if forced is None:
        return avail[0]
    if forced not in BACKENDS:
        src = "backend argument" if name is not None else f"${_ENV}"
        raise ValueError(f"{src}: unknown kernel backend {forced!r}; choose one of {BACKENDS}")
    if forced not in avail:
        why = (
            f"the compiled extension is not available ({_EXT_ERROR})"
            if _ext is None
            else "this CPU lacks the instructions it needs"
        )
        raise RuntimeError(f"kernel backend {forced!r} cannot run here: {why}")
    return forced


_resolve = backend  # the conv functions take a ``backend=`` argument that shadows the name


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _pair(v: IntPair, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        t = (int(v), int(v))
    else:
        t = tuple(int(i) for i in v)
        if len(t) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    if min(t) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v!r}")
    return t  # type: ignore[return-value]


def _words(c: int) -> int:
    return (c + 63) // 64


def _check_bits(a: np.ndarray, name: str, ndim: int, channels: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy uint64 array, got {type(a).__name__}")
    if a.dtype != np.uint64:
        raise ValueError(f"{name} must have dtype uint64 (packed bits), got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.shape[-1] != _words(channels):
        raise ValueError(
            f"{name} has {a.shape[-1]} words per position, but {channels} channels need "
            f"{_words(channels)}"
        )
    a = np.ascontiguousarray(a)
    r = channels % 64
    if r and a.size and np.any(a[..., -1] >> np.uint64(r)):
        raise ValueError(f"{name}: bits above channel {channels} must be zero")
    return a


def _check_float(a, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _scale_bias(scale, bias, n: int, o: int) -> tuple[np.ndarray, bool, np.ndarray]:
    if scale is None:
        s = np.ones(o, np.float32)
    else:
        s = np.asarray(scale)
        if s.ndim == 0:
            s = np.full(o, float(s), np.float32)
        s = _check_float(s, "scale", (n, o) if s.ndim == 2 else (o,))
    b = np.zeros(o, np.float32) if bias is None else _check_float(bias, "bias", (o,))
    return s, s.ndim == 2, b


def _opt(a, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if a is None else _check_float(a, name, shape)


def _prelu_args(prelu, prelu_pre, prelu_post, o: int):
    if prelu is None:
        if prelu_pre is not None or prelu_post is not None:
            raise ValueError("prelu_pre/prelu_post need prelu (the slopes)")
        return None, None, None
    slope = np.asarray(prelu)
    if slope.ndim == 0:
        slope = np.full(o, float(slope), np.float32)
    return (
        _check_float(slope, "prelu", (o,)),
        _opt(prelu_pre, "prelu_pre", (o,)),
        _opt(prelu_post, "prelu_post", (o,)),
    )


class _Epilogue(NamedTuple):
    """Checked float32 operands of the fused conv epilogue (:func:`epilogue_numpy`): ``y = dot *
    scale + bias (+ bypass)``, then ``PReLU(y + pre; slope) + post`` when ``slope`` is set."""

    scale: np.ndarray  # (O,), or (N, O) when per_n
    per_n: bool
    bias: np.ndarray  # (O,)
    bypass: np.ndarray | None  # (N, Ho, Wo, O)
    slope: np.ndarray | None  # (O,); pre and post (O,) only with it
    pre: np.ndarray | None
    post: np.ndarray | None

    def apply(self, dot: np.ndarray) -> np.ndarray:
        """The numpy path: the epilogue applied to float dot products ``(N, Ho, Wo, O)``."""
        return epilogue_numpy(dot, self.scale, self.per_n, self.bias, self.bypass, self.slope,
                              self.pre, self.post)

    def channels(self, sl: slice) -> _Epilogue:
        """The operands of output channels ``sl`` (one group of a grouped conv), contiguous."""

        def part(a):
            return None if a is None else np.ascontiguousarray(a[..., sl])

        return self._replace(scale=part(self.scale), bias=part(self.bias),
                             bypass=part(self.bypass), slope=part(self.slope),
                             pre=part(self.pre), post=part(self.post))


def _epilogue(scale, bias, bypass, prelu, prelu_pre, prelu_post, n: int, o: int,
              out_hw: tuple[int, int]) -> _Epilogue:
    scale_a, per_n, bias_a = _scale_bias(scale, bias, n, o)
    byp = _opt(bypass, "bypass", (n, *out_hw, o))
    slope, pre, post = _prelu_args(prelu, prelu_pre, prelu_post, o)
    return _Epilogue(scale_a, per_n, bias_a, byp, slope, pre, post)


class _Geometry(NamedTuple):
    """A conv's window: kernel, stride, symmetric padding and dilation pairs, and whether padded
    taps are zeros (PyTorch) rather than +1 inputs."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    zero_pad: bool

    def out_size(self, h: int, w: int, what: str) -> tuple[int, int]:
        """``(Ho, Wo)`` for an ``h x w`` input; ``ValueError`` (naming ``what``) if empty."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, \
            self.dilation
        return _out_size(h, kh, sh, ph, dh, what), _out_size(w, kw, sw, pw, dw, what)


def _threads(threads: int) -> int:
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return int(threads)


def _out_size(size: int, k: int, s: int, p: int, d: int, what: str) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        raise ValueError(f"{what}: kernel (dilated extent {d * (k - 1) + 1}) larger than padded "
                         f"input ({size + 2 * p})")
    return span // s + 1


# ---------------------------------------------------------------------------------------------
# Packing


def _pack_bool(neg: np.ndarray) -> np.ndarray:
    """Pack a boolean (..., C) array (True = -1) into uint64 (..., ceil(C/64)), LSB-first."""
    c = neg.shape[-1]
    cw = _words(c)
    if c != cw * 64:
        pad = np.zeros(neg.shape[:-1] + (cw * 64 - c,), bool)
        neg = np.concatenate([neg, pad], axis=-1)
    by = np.packbits(neg, axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view("<u8").astype(np.uint64, copy=False)


def unpack_nhwc(bits: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`pack_nhwc` on signs: uint64 (..., ceil(C/64)) -> float32 +-1 (..., C)."""
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint64:
        raise ValueError("unpack_nhwc: bits must be a numpy uint64 array")
    if bits.ndim < 1 or bits.shape[-1] != _words(channels):
        raise ValueError(f"unpack_nhwc: last dim must be {_words(channels)} for {channels} "
                         f"channels, got shape {bits.shape}")
    by = np.ascontiguousarray(bits.astype("<u8", copy=False)).view(np.uint8)
    b = np.unpackbits(by, axis=-1, bitorder="little")[..., :channels]
    return (1.0 - 2.0 * b).astype(np.float32)


def pack_nhwc(x: np.ndarray, *, threads: int = 1, backend: str | None = None) -> np.ndarray:
    """Pack a float NHWC tensor to sign bits: uint64 ``(N, H, W, ceil(C/64))``.

    Bit 1 = negative (``x < 0``), LSB-first, 64 channels per word, zero bits padding. Exact zeros
    (and NaN) map to bit 0 = +1; see :func:`count_zeros` for ``torch.sign``'s ternary 0.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError("pack_nhwc: x must be a floating-point numpy array (N, H, W, C)")
    if x.ndim != 4 or x.shape[-1] < 1:
        raise ValueError(f"pack_nhwc: x must be 4-D NHWC with C >= 1, got shape {x.shape}")
    be = _resolve(backend)
    threads = _threads(threads)
    if be == "numpy":
        return _pack_bool(x < 0)
    xf = np.ascontiguousarray(x, dtype=np.float32)
    c = x.shape[-1]
    out = np.empty(x.shape[:-1] + (_words(c),), np.uint64)
    _ext.pack_f32(x=xf, out=out, rows=int(np.prod(x.shape[:-1])), c=c, threads=threads,
                  path=_PATH_ID[be])
    return out


def count_zeros(x: np.ndarray) -> int:
    """Number of exact zeros in ``x`` (values ``torch.sign`` maps to 0, which bits cannot hold)."""
    return int(np.count_nonzero(np.asarray(x) == 0))


def pack_weights_ohwi(w_sign: np.ndarray, *, layout: str = "oihw") -> np.ndarray:
    """Pack binary conv weights to canonical OHWI bits: uint64 ``(O, KH, KW, ceil(I/64))``.

    ``w_sign`` holds the weights (only the sign matters: ``w < 0`` -> bit 1 = -1, else +1; a 0
    weight becomes +1). ``layout="oihw"`` is PyTorch's ``Conv2d.weight`` layout (also for grouped
    and depthwise weights ``(O, I/groups, KH, KW)``); ``layout="ohwi"`` takes OHWI directly.
    """
    w = np.asarray(w_sign)
    if w.ndim != 4 or not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype,
                                                                                  np.integer)):
        raise ValueError(f"pack_weights_ohwi: need a 4-D real array, got {w.dtype} {w.shape}")
    if layout == "oihw":
        w = w.transpose(0, 2, 3, 1)
    elif layout != "ohwi":
        raise ValueError(f"pack_weights_ohwi: layout must be 'oihw' or 'ohwi', got {layout!r}")
    return _pack_bool(w < 0)


def pack_weights_transpose(w_sign: np.ndarray) -> np.ndarray:
    """Pack PyTorch ``ConvTranspose2d.weight`` ``(I, O, KH, KW)`` to uint64 ``(KH, KW, O, I/64)``.

    Row ``(ky, kx, o)`` is the 1x1 binary conv producing output sub-pixel ``(ky, kx)`` of channel
    ``o`` (the stride = kernel decomposition used by :func:`binary_conv_transpose2d`).
    """
    w = np.asarray(w_sign)
    if w.ndim != 4:
        raise ValueError(f"pack_weights_transpose: need (I, O, KH, KW), got shape {w.shape}")
    return _pack_bool(w.transpose(2, 3, 1, 0) < 0)


# ---------------------------------------------------------------------------------------------
# numpy reference path (exact: +-1 / 0 values, float32 sums of small integers)


def _windows(xs, kh, kw, sh, sw, dh, dw, ho, wo):
    """(N, Hp, Wp, C) -> view (N, Ho, Wo, C, KH, KW) of the conv windows."""
    v = np.lib.stride_tricks.sliding_window_view(xs, (dh * (kh - 1) + 1, dw * (kw - 1) + 1),
                                                 axis=(1, 2))
    return v[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, :, ::dh, ::dw]


def _np_dot(x_bits, w_bits, c: int, geom: _Geometry, depthwise: bool) -> np.ndarray:
    (sh, sw), (ph, pw), (dh, dw) = geom.stride, geom.padding, geom.dilation
    xs = unpack_nhwc(x_bits, c)
    xs = np.pad(xs, ((0, 0), (ph, ph), (pw, pw), (0, 0)),
                constant_values=0.0 if geom.zero_pad else 1.0)
    if depthwise:
        kh, kw = w_bits.shape[0], w_bits.shape[1]
        ws = unpack_nhwc(w_bits, c)  # (KH, KW, C)
    else:
        kh, kw = w_bits.shape[1], w_bits.shape[2]
        ws = unpack_nhwc(w_bits, c)  # (O, KH, KW, C)
    n, hp, wp = xs.shape[:3]
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    win = _windows(xs, kh, kw, sh, sw, dh, dw, ho, wo)
    if depthwise:
        return np.einsum("nhwcij,ijc->nhwc", win, ws, optimize=True)
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)
    return (cols @ ws.reshape(ws.shape[0], -1).T).reshape(n, ho, wo, -1)


def epilogue_numpy(dot: np.ndarray, scale: np.ndarray, per_n: bool, bias: np.ndarray,
                   bypass: np.ndarray | None, slope: np.ndarray | None, pre: np.ndarray | None,
                   post: np.ndarray | None) -> np.ndarray:
    """The conv epilogue in numpy float32: ``y = dot * scale + bias (+ bypass)``, then ``y =
    PReLU(y + pre; slope) + post`` when ``slope`` is given (``pre``/``post`` optional);
    ``scale`` is ``(O,)`` or, with ``per_n``, ``(N, O)``. The compiled kernels' operations and
    their order are the same, so both paths agree bit for bit."""
    s = scale[:, None, None, :] if per_n else scale
    y = dot.astype(np.float32) * s + bias
    if bypass is not None:
        y = y + bypass
    if slope is not None:
        if pre is not None:
            y = y + pre
        y = np.where(y > 0, y, y * slope)
        if post is not None:
            y = y + post
    return y.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# Convolutions


def binary_conv2d(
    x_bits: np.ndarray,
    w_bits: np.ndarray,
    in_channels: int,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    groups: int = 1,
    scale=None,
    bias=None,
    pad_mode: str = "zero",
    bypass: np.ndarray | None = None,
    prelu=None,
    prelu_pre=None,
    prelu_post=None,
    threads: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """Binary conv2d on packed NHWC bits; returns float32 NHWC ``(N, Ho, Wo, O)``.

    ``y = (K_eff - 2*popcount(x XOR w)) * scale_o + bias_o`` (XNOR-Net / LCE formulation: the
    +-1 dot product over K bit positions is ``K - 2c``), then ``+ bypass`` and the optional
    PReLU ``PReLU(y + prelu_pre; prelu) + prelu_post``.

    Args:
        x_bits: uint64 ``(N, H, W, ceil(in_channels/64))`` from :func:`pack_nhwc`.
        w_bits: uint64 ``(O, KH, KW, ceil((in_channels/groups)/64))`` from
            :func:`pack_weights_ohwi`.
        kernel, stride, padding, dilation: ints or pairs (padding is symmetric, like PyTorch).
        groups: 1 (dense), ``in_channels`` (depthwise, ``O == in_channels``) or any divisor.
        scale: ``(O,)`` or per-sample ``(N, O)`` (a per-sample scalar DAB alpha folds in here;
            in the depthwise case a per-sample per-channel alpha does too, exactly).
        bias: ``(O,)``. bypass: float ``(N, Ho, Wo, O)`` added after the bias.
        pad_mode: ``"zero"`` (padded taps contribute 0, PyTorch) or ``"one"`` (+1 inputs).
        threads: kernel threads (OpenMP); results do not depend on it.
        backend: force a backend (see :func:`backend`).
    """
    be = _resolve(backend)
    threads = _threads(threads)
    if pad_mode not in ("zero", "one"):
        raise ValueError(f"pad_mode must be 'zero' or 'one', got {pad_mode!r}")
    if not isinstance(in_channels, (int, np.integer)) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    c = int(in_channels)
    kh, kw = _pair(kernel, "kernel", 1)
    st, pad, dil = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation,
                                                                                   "dilation", 1)
    if not isinstance(groups, (int, np.integer)) or groups < 1 or c % groups:
        raise ValueError(f"groups={groups!r} must be a positive divisor of in_channels={c}")
    x_bits = _check_bits(x_bits, "x_bits", 4, c)
    cg = c // groups
    w_bits = _check_bits(w_bits, "w_bits", 4, cg)
    o = w_bits.shape[0]
    if w_bits.shape[1:3] != (kh, kw):
        raise ValueError(f"w_bits has kernel {w_bits.shape[1:3]}, expected {(kh, kw)}")
    if o < 1 or o % groups:
        raise ValueError(f"w_bits has {o} output channels, not a positive multiple of groups")
    n, h, w = x_bits.shape[:3]
    geom = _Geometry((kh, kw), st, pad, dil, pad_mode == "zero")
    ep = _epilogue(scale, bias, bypass, prelu, prelu_pre, prelu_post, n, o,
                   geom.out_size(h, w, "binary_conv2d"))

    if groups == 1:
        return _dense(x_bits, w_bits, c, o, geom, ep, threads, be)
    if groups == c and o == c:
        # depthwise: bit 0 of each weight word -> channel-packed per tap (KH, KW, C/64)
        wd = _pack_bool((w_bits[:, :, :, 0] & np.uint64(1)).astype(bool).transpose(1, 2, 0))
        if be == "numpy":
            return ep.apply(_np_dot(x_bits, wd, c, geom, True))
        return _ext_conv(_ext.depthwise2d, x_bits, wd, c, c, geom, ep, threads, be)
    # general groups: run each group as a dense conv on its own channel slice
    og = o // groups
    xs = None if cg % 64 == 0 else unpack_nhwc(x_bits, c) < 0
    parts = []
    for g in range(groups):
        if xs is None:
            xg = np.ascontiguousarray(x_bits[..., g * cg // 64 : (g + 1) * cg // 64])
        else:
            xg = _pack_bool(xs[..., g * cg : (g + 1) * cg])
        sl = slice(g * og, (g + 1) * og)
        parts.append(_dense(xg, w_bits[sl], cg, og, geom, ep.channels(sl), threads, be))
    return np.concatenate(parts, axis=-1)


def _dense(x_bits, w_bits, c: int, o: int, geom: _Geometry, ep: _Epilogue, threads: int,
           be: str) -> np.ndarray:
    if be == "numpy":
        return ep.apply(_np_dot(x_bits, w_bits, c, geom, False))
    k, dil = geom.kernel, geom.dilation
    if max(k) > 64 or (dil[1] > 1 and k[0] * k[1] > 64):
        raise ValueError(f"binary_conv2d: kernel {k} with dilation {dil} is too large for the "
                         "compiled kernels (at most 64 per side, 64 taps when dilated)")
    return _ext_conv(_ext.conv2d, x_bits, w_bits, c, o, geom, ep, threads, be)


def _ext_conv(entry, x_bits, w_bits, c: int, o: int, geom: _Geometry, ep: _Epilogue,
              threads: int, be: str) -> np.ndarray:
    """Run ``_ext.conv2d`` or ``_ext.depthwise2d`` (they share their keywords; the depthwise
    one has ``o == c``) into a new float32 ``(N, Ho, Wo, O)`` output. The one call site of
    both; its keywords are spelled out rather than merged from dicts, which would cost more
    than a small kernel's work."""
    n, h, w = x_bits.shape[:3]
    ho, wo = geom.out_size(h, w, "binary_conv2d")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.padding, geom.dilation
    out = np.empty((n, ho, wo, o), np.float32)
    entry(x_bits=x_bits, w_bits=w_bits, out=out, n=n, h=h, w=w, c=c, o=o, kh=kh, kw=kw, sh=sh,
          sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, zero_pad=int(geom.zero_pad), scale=ep.scale,
          scale_per_n=int(ep.per_n), bias=ep.bias, bypass=ep.bypass, prelu=ep.slope,
          prelu_pre=ep.pre, prelu_post=ep.post, path=_PATH_ID[be], threads=threads)
    return out


def binary_conv_transpose2d(
    x_bits: np.ndarray,
    w_bits: np.ndarray,
    in_channels: int,
    kernel: IntPair,
    stride: IntPair | None = None,
    *,
    scale=None,
    bias=None,
    bypass: np.ndarray | None = None,
    prelu=None,
    prelu_pre=None,
    prelu_post=None,
    threads: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """Binary transposed conv with ``stride == kernel`` and no padding (the ``BiDenseUp`` case).

    Each output pixel ``(iy*s + ky, ix*s + kx)`` receives exactly one tap, so the layer is
    ``KH*KW`` exact 1x1 binary convs (engines.md 7 (1)): ``y[n, iy*s+ky, ix*s+kx, o] =
    (I - 2*popcount(x[n, iy, ix] XOR w[ky, kx, o])) * scale_o + bias_o``, no border, no padding
    question. Epilogue as in :func:`binary_conv2d`. ``w_bits`` comes from
    :func:`pack_weights_transpose`; the output is float32 ``(N, H*KH, W*KW, O)``.
    """
    be = _resolve(backend)
    kh, kw = _pair(kernel, "kernel", 1)
    st = (kh, kw) if stride is None else _pair(stride, "stride", 1)
    if st != (kh, kw):
        raise ValueError(f"binary_conv_transpose2d supports only stride == kernel, got "
                         f"stride {st} for kernel {(kh, kw)}")
    c = int(in_channels)
    x_bits = _check_bits(x_bits, "x_bits", 4, c)
    w_bits = _check_bits(w_bits, "w_bits", 4, c)
    if w_bits.shape[:2] != (kh, kw):
        raise ValueError(f"w_bits has kernel {w_bits.shape[:2]}, expected {(kh, kw)}")
    n, h, w = x_bits.shape[:3]
    o = w_bits.shape[2]
    ep = _epilogue(scale, bias, bypass, prelu, prelu_pre, prelu_post, n, o, (h * kh, w * kw))
    t = kh * kw

    def tile(a):
        return None if a is None else np.ascontiguousarray(np.tile(a, t))

    s_t = np.ascontiguousarray(np.tile(ep.scale, (1, t)) if ep.per_n else np.tile(ep.scale, t))
    byp = ep.bypass
    if byp is not None:  # to the (N, H, W, KH, KW, O) order of the 1x1 conv's channels
        byp = np.ascontiguousarray(
            byp.reshape(n, h, kh, w, kw, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, t * o))
    y = binary_conv2d(
        x_bits, w_bits.reshape(t * o, 1, 1, -1), c, 1, scale=s_t, bias=tile(ep.bias),
        bypass=byp, prelu=tile(ep.slope), prelu_pre=tile(ep.pre), prelu_post=tile(ep.post),
        threads=threads, backend=be)
    return np.ascontiguousarray(
        y.reshape(n, h, w, kh, kw, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * kh, w * kw, o))


def binary_conv2d_group_alpha(
    x_bits: np.ndarray,
    w_bits: np.ndarray,
    in_channels: int,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    alpha: np.ndarray,
    group: int,
    groups: int = 1,
    scale=None,
    bias=None,
    pad_mode: str = "zero",
    bypass: np.ndarray | None = None,
    prelu=None,
    prelu_pre=None,
    prelu_post=None,
    threads: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """Exact packed dense conv for DAB's group scale: one alpha per sample and per group of
    ``group`` consecutive input channels (a multiple of 64, so each group is whole words).

    ``y = sum_g D_g * (alpha[n, g] * scale_o) + bias_o`` (+ ``bypass``, PReLU as in
    :func:`binary_conv2d`), ``D_g`` the exact +-1 dot product over group ``g``'s words: the
    packed conv runs once per group on that group's words with its alpha folded into the scale,
    and the float32 results are summed in group order; the last group's call adds that sum as
    its bypass and runs the fused epilogue. The order is the same on every backend, so they
    agree bit for bit. ``alpha`` is float32 ``(N, ceil(in_channels / group))``; ``groups`` must
    be 1 (it is accepted so the signature matches :func:`binary_conv2d`).
    """
    if groups != 1:
        raise ValueError(f"binary_conv2d_group_alpha supports dense convs only, got groups "
                         f"{groups!r}")
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 64 or \
            group % 64:
        raise ValueError(f"group must be a positive multiple of 64, got {group!r}")
    c, group = int(in_channels), int(group)
    x_bits = _check_bits(x_bits, "x_bits", 4, c)
    w_bits = _check_bits(w_bits, "w_bits", 4, c)
    n, o, n_groups = x_bits.shape[0], w_bits.shape[0], -(-c // group)
    al = _check_float(alpha, "alpha", (n, n_groups))
    s = np.ones(o, np.float32) if scale is None else _check_float(scale, "scale", (o,))
    geo = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
               pad_mode=pad_mode, threads=threads, backend=backend)

    def group_conv(g: int, **epilogue) -> np.ndarray:
        words = slice(g * group // 64, (g + 1) * group // 64)
        return binary_conv2d(np.ascontiguousarray(x_bits[..., words]),
                             np.ascontiguousarray(w_bits[..., words]),
                             min(group, c - g * group), scale=al[:, g : g + 1] * s[None, :],
                             **geo, **epilogue)

    acc = None
    for g in range(n_groups - 1):
        y = group_conv(g)
        acc = y if acc is None else np.add(acc, y, out=acc)
    if acc is not None:
        bypass = acc if bypass is None else np.add(
            acc, _check_float(bypass, "bypass", acc.shape), out=acc)
    return group_conv(n_groups - 1, bias=bias, bypass=bypass, prelu=prelu, prelu_pre=prelu_pre,
                      prelu_post=prelu_post)


def binary_conv2d_dab(
    x_bits: np.ndarray,
    alpha: np.ndarray,
    w_bits: np.ndarray,
    in_channels: int,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    scale=None,
    bias=None,
    pad_mode: str = "zero",
    bypass: np.ndarray | None = None,
    prelu=None,
    prelu_pre=None,
    prelu_post=None,
) -> np.ndarray:
    """Exact dense conv for DAB inputs with a per-sample, per-input-channel scale ``alpha``.

    BiDense's DAB feeds ``alpha[n, c] * s[n, h, w, c]`` (``s`` = +-1 from ``x_bits``) to a conv
    with +-1 weights, so ``sum_c alpha_c * sum_t w_{o,c,t} s_{c,t}`` cannot come from one
    XOR-popcount unless all ``alpha_c`` are equal (engines.md 7 (2)). This helper is the **float
    path**: an im2col + float32 GEMM (numpy/BLAS) of the +-alpha tensor with the +-1 weights,
    exact to float32 rounding, at roughly fp32 conv speed (weights still stored in 1 bit).
    Padding: ``"zero"`` pads with 0; ``"one"`` pads with ``+alpha[n, c]`` (a +1 sign scaled by
    its channel's alpha). Threads are those of numpy's BLAS.

    A per-sample *scalar* alpha needs no float path: pass ``scale=alpha[:, None] * scale_o`` to
    :func:`binary_conv2d`.
    """
    if pad_mode not in ("zero", "one"):
        raise ValueError(f"pad_mode must be 'zero' or 'one', got {pad_mode!r}")
    c = int(in_channels)
    kh, kw = _pair(kernel, "kernel", 1)
    st, pad, dil = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation,
                                                                                   "dilation", 1)
    x_bits = _check_bits(x_bits, "x_bits", 4, c)
    w_bits = _check_bits(w_bits, "w_bits", 4, c)
    if w_bits.shape[1:3] != (kh, kw):
        raise ValueError(f"w_bits has kernel {w_bits.shape[1:3]}, expected {(kh, kw)}")
    n, h, w = x_bits.shape[:3]
    o = w_bits.shape[0]
    al = _check_float(alpha, "alpha", (n, c))
    geom = _Geometry((kh, kw), st, pad, dil, pad_mode == "zero")
    ho, wo = geom.out_size(h, w, "binary_conv2d_dab")
    ep = _epilogue(scale, bias, bypass, prelu, prelu_pre, prelu_post, n, o, (ho, wo))
    xs = unpack_nhwc(x_bits, c) * al[:, None, None, :]
    if pad_mode == "zero":
        xs = np.pad(xs, ((0, 0), pad[:1] * 2, pad[1:] * 2, (0, 0)))
    else:
        full = np.broadcast_to(al[:, None, None, :], (n, h + 2 * pad[0], w + 2 * pad[1], c)).copy()
        full[:, pad[0] : pad[0] + h, pad[1] : pad[1] + w] = xs
        xs = full
    win = _windows(xs, kh, kw, st[0], st[1], dil[0], dil[1], ho, wo)
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)
    ws = unpack_nhwc(w_bits, c).reshape(o, -1)
    return ep.apply((cols @ ws.T).reshape(n, ho, wo, o))


# ---------------------------------------------------------------------------------------------
# Private helpers of the graph runtime (NHWC float32 data; compiled when available)


def pack_threshold(
    xs: np.ndarray, tau: np.ndarray | None, *, absdev: bool = False, threads: int = 1
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Sign bits of ``xs - tau`` in one pass: ``(bits, ties, dev)``.

    ``xs`` is float32 NHWC ``(N, H, W, C)``; ``tau`` is ``None`` (0), ``(C,)`` or ``(N, C)``
    float32. Bit 1 where ``x < tau``, which equals ``sign(x - tau) = -1`` in float32 because an
    IEEE difference is zero only for equal operands; ``ties`` counts ``x == tau`` (where
    ``torch.sign`` gives 0). With ``absdev`` also returns ``dev[n, c] = sum_hw |x - tau|`` in
    float64 (DAB's mean absolute deviation numerator), summed in a thread-independent order.
    """
    n, h, w, c = xs.shape
    xs = np.ascontiguousarray(xs, np.float32)
    t = None
    if tau is not None:
        t = np.ascontiguousarray(tau, np.float32)
        if t.shape not in ((c,), (n, c)):
            raise ValueError(f"pack_threshold: tau must be ({c},) or ({n}, {c}), got {t.shape}")
    if _ext is None or backend() == "numpy":
        tt = 0.0 if t is None else (t if t.ndim == 1 else t[:, None, None, :])
        bits = _pack_bool(xs < tt)
        ties = int(np.count_nonzero(xs == tt))
        dev = None
        if absdev:
            dev = np.abs(xs.astype(np.float64) - np.asarray(tt, np.float64)).sum(axis=(1, 2))
        return bits, ties, dev
    bits = np.empty((n, h, w, _words(c)), np.uint64)
    dev = np.empty((n, c), np.float64) if absdev else None
    ties = _ext.pack_thresh(x=xs, tau=t, out=bits, dev=dev, n=n, hw=h * w, c=c,
                            per_n=int(t is not None and t.ndim == 2), threads=_threads(threads),
                            path=_PATH_ID[backend()])
    return bits, int(ties), dev


def channel_sum(xs: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Per-(sample, channel) float64 sums of float32 NHWC data, ``(N, C)``."""
    n, h, w, c = xs.shape
    xs = np.ascontiguousarray(xs, np.float32)
    if _ext is None:
        return xs.sum(axis=(1, 2), dtype=np.float64)
    out = np.empty((n, c), np.float64)
    _ext.chan_sum(x=xs, out=out, n=n, hw=h * w, c=c, threads=_threads(threads))
    return out


def bilinear_nhwc(xs: np.ndarray, h0: np.ndarray, h1: np.ndarray, lh: np.ndarray,
                   w0: np.ndarray, w1: np.ndarray, lw: np.ndarray, *,
                   threads: int = 1) -> np.ndarray:
    """Separable bilinear resize of float32 NHWC data with precomputed source rows/columns
    ``h0, h1, w0, w1`` and weights ``lh, lw``: ``top = x[h0] (1 - lh) + x[h1] lh``, then
    ``y = top[:, w0] (1 - lw) + top[:, w1] lw`` (float32, in this order on every path)."""
    n, h, w, c = xs.shape
    oh, ow = len(h0), len(w0)
    xs = np.ascontiguousarray(xs, np.float32)
    h0, h1, w0, w1 = (np.ascontiguousarray(a, np.int64) for a in (h0, h1, w0, w1))
    lh = np.ascontiguousarray(lh, np.float32)
    lw = np.ascontiguousarray(lw, np.float32)
    if _ext is None:
        top = (np.take(xs, h0, axis=1) * (np.float32(1) - lh)[:, None, None]
               + np.take(xs, h1, axis=1) * lh[:, None, None])
        return (np.take(top, w0, axis=2) * (np.float32(1) - lw)[:, None]
                + np.take(top, w1, axis=2) * lw[:, None]).astype(np.float32)
    out = np.empty((n, oh, ow, c), np.float32)
    _ext.bilinear_nhwc(x=xs, out=out, h0=h0, h1=h1, lh=lh, w0=w0, w1=w1, lw=lw, n=n, h=h, w=w,
                       c=c, oh=oh, ow=ow, threads=_threads(threads))
    return out


def fp_gemm(a: np.ndarray, w: np.ndarray, scale: np.ndarray | None = None,
             bias: np.ndarray | None = None, *, threads: int = 1,
             variant: int = -1) -> np.ndarray:
    """Float32 ``(a @ w) * scale + bias`` for ``a (M, K)``, ``w (K, O)`` (``scale``/``bias``
    ``(O,)`` or ``None``), with a result that does not depend on ``threads``.

    Compiled: each output is one float32 accumulator over ``k = 0..K-1`` in order (FMA on
    AVX-512), threads split the rows. Without the extension (or with the ``numpy`` backend) it is
    numpy's matmul, whose BLAS the runtime keeps at one thread for the same reason. ``variant``
    (tests) forces the compiled code: 0 plain C, 1 AVX2, 2 AVX-512 (at most ``gemm_kind()``).
    """
    a = np.ascontiguousarray(a, np.float32)
    w = np.ascontiguousarray(w, np.float32)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"fp_gemm: shapes {a.shape} @ {w.shape} do not match")
    m, k = a.shape
    o = w.shape[1]
    sc = None if scale is None else np.ascontiguousarray(scale, np.float32).reshape(o)
    bi = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(o)
    if _ext is None or backend() == "numpy" or k == 0:
        y = a @ w
        if sc is not None:
            y = y * sc
        if bi is not None:
            y = y + bi
        return y.astype(np.float32, copy=False)
    out = np.empty((m, o), np.float32)
    _ext.fp_gemm(x=a, w=w, out=out, m=m, k=k, o=o, scale=sc, bias=bi, threads=_threads(threads),
                 variant=int(variant))
    return out


def gemm_kind() -> int:
    """The :func:`fp_gemm` code this CPU runs: 2 AVX-512 FMA, 1 AVX2, 0 plain C, -1 numpy."""
    return -1 if _ext is None else int(_ext.gemm_kind())


def cfb_nhwc(xs: np.ndarray, c_out: int, grouping: str, *, threads: int = 1) -> np.ndarray | None:
    """BiDense's channel-adaptive bypass (CFB, Yin et al., arXiv 2411.10346) of float32 NHWC
    ``xs (N, H, W, C_in)`` to ``C_out`` channels, compiled; ``None`` without the extension.

    ``r = C_out // C_in`` copies, then ``m = C_out % C_in`` means: ``m - 1`` of ``g = C_in // m``
    inputs (``"strided"``: channels ``j, j + (m - 1), ...``; ``"contiguous"``: ``j g .. j g + g
    - 1``) and one of the remaining ``C_in - g (m - 1)`` inputs; each mean a float64 sum in
    channel order divided by its count, rounded once to float32.
    """
    if _ext is None or backend() == "numpy" or grouping not in ("strided", "contiguous"):
        return None
    xs = np.ascontiguousarray(xs, np.float32)
    n, h, w, c = xs.shape
    out = np.empty((n, h, w, int(c_out)), np.float32)
    _ext.cfb_nhwc(x=xs, out=out, p=n * h * w, cin=c, cout=int(c_out),
                  contiguous=int(grouping == "contiguous"), threads=_threads(threads))
    return out


def _describe() -> str:  # pragma: no cover - diagnostic helper
    return f"bidense kernels: backend={backend()} features={cpu_features()} ext={extension_info()}"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(_describe() + "\n")
