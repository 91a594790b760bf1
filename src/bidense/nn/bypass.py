"""CFB: the Channel-adaptive Full-precision Bypass of BiDense.

Yin et al., *BiDense: Binarization for Dense Prediction*, arXiv 2411.10346 (2024), and the
reference code ``frickyinn/BiDense``. The map is parameter-free and acts on channels only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Grouping = Literal["strided", "contiguous"]
_GROUPINGS = ("strided", "contiguous")

__all__ = [
    "add_channel_adaptive_bypass",
    "channel_adaptive_bypass",
    "channel_adaptive_bypass_groups",
    "cfb_matrix",
]


def _check(c_in: int, c_out: int, grouping: str) -> None:
    if grouping not in _GROUPINGS:
        raise ValueError(f"CFB grouping must be 'strided' or 'contiguous', got {grouping!r}")
    if int(c_in) < 1 or int(c_out) < 1:
        raise ValueError(f"CFB needs positive channel counts, got {c_in} -> {c_out}")


@lru_cache(maxsize=256)
def channel_adaptive_bypass_groups(
    c_in: int, c_out: int, grouping: Grouping = "strided"
) -> tuple[tuple[int, ...], ...]:
    """The input channels averaged into each CFB output channel, in output order.

    Returns a tuple of ``c_out`` tuples of input indices; output channel ``j`` is the mean of
    ``x[groups[j]]``. The rule is the one documented in :func:`channel_adaptive_bypass`.
    """
    _check(c_in, c_out, grouping)
    r, m = divmod(c_out, c_in)
    out: list[tuple[int, ...]] = [(j % c_in,) for j in range(r * c_in)]
    if m > 0:
        g = c_in // m
        for j in range(m - 1):
            if grouping == "strided":
                out.append(tuple(i * (m - 1) + j for i in range(g)))
            else:
                out.append(tuple(range(j * g, (j + 1) * g)))
        out.append(tuple(range(g * (m - 1), c_in)))
    return tuple(out)


@lru_cache(maxsize=256)
def _cfb_matrix_cached(c_in: int, c_out: int, grouping: Grouping) -> np.ndarray:
    mat = np.zeros((c_out, c_in), dtype=np.float64)
    for j, members in enumerate(channel_adaptive_bypass_groups(c_in, c_out, grouping)):
        mat[j, list(members)] = 1.0 / len(members)
    mat.setflags(write=False)
    return mat


def cfb_matrix(c_in: int, c_out: int, grouping: Grouping = "strided") -> np.ndarray:
    """CFB as a ``(c_out, c_in)`` float64 averaging matrix: ``CFB(x)[j] = sum_i M[j, i] x[i]``.

    Cached per ``(c_in, c_out, grouping)`` and read-only. Useful to exporters and runtimes that
    fold the bypass into a matrix product; the layers themselves use the cheaper slicing form.
    """
    return _cfb_matrix_cached(int(c_in), int(c_out), grouping)


def channel_adaptive_bypass(
    x: Tensor, out_channels: int, grouping: Grouping = "strided", channel_dim: int = 1
) -> Tensor:
    r"""Channel-adaptive Full-precision Bypass (CFB), BiDense (Yin et al., arXiv 2411.10346).

    Maps the ``C_in`` channels of the real-valued tensor ``x`` to ``C_out = out_channels``
    channels without parameters. With :math:`r = \lfloor C_{out}/C_{in} \rfloor` and
    :math:`m = C_{out} \bmod C_{in}` the output is the concatenation, in this order, of

    1. tiling ("fusion-up", if :math:`r > 0`): ``x`` repeated ``r`` times as a block, so output
       channel :math:`j < r C_{in}` is :math:`x_{j \bmod C_{in}}`;
    2. merging ("fusion-down", if :math:`m > 0`), with :math:`g = \lfloor C_{in}/m \rfloor`:
       :math:`m-1` regular channels averaging ``g`` inputs each, then one final channel averaging
       all remaining inputs :math:`x_{g(m-1)}, \dots, x_{C_{in}-1}`. The regular groups are

       - ``grouping="strided"`` (the reference's 2-D version, default): channel
         :math:`j = \operatorname{mean}_{i<g} x_{i(m-1)+j}`;
       - ``grouping="contiguous"`` (the reference's 1-D token version): channel
         :math:`j = \operatorname{mean}_{i<g} x_{jg+i}`.

    Equal widths give the identity (``x`` itself). For :math:`m = 1` (e.g. ``C -> 1`` or
    ``C -> C+1``) the reference crashes; here the regular part is empty and the final channel is
    the mean of all inputs, the result the formula defines (``C -> C+1`` gives ``[x, mean(x)]``).

    ``channel_dim`` is 1 for NCHW and -1 for tokens (B, N, C). Vectorised (slicing and means,
    no loop over channels) and differentiable.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"channel_adaptive_bypass expects a Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("channel_adaptive_bypass needs a tensor with a channel dimension")
    cdim = channel_dim % x.dim() if -x.dim() <= channel_dim < x.dim() else None
    if cdim is None:
        raise ValueError(f"channel_dim={channel_dim} is out of range for a {x.dim()}-D tensor")
    c_in, c_out = int(x.shape[cdim]), int(out_channels)
    _check(c_in, c_out, grouping)
    if c_out == c_in:
        return x
    r, m = divmod(c_out, c_in)
    parts: list[Tensor] = []
    if r > 0:
        reps = [1] * x.dim()
        reps[cdim] = r
        parts.append(x.repeat(*reps))
    if m > 0:
        g = c_in // m
        n_reg = g * (m - 1)
        if n_reg > 0:
            regular = x.narrow(cdim, 0, n_reg)
            if grouping == "strided":
                # row-major g x (m-1) grid: averaging over the rows gives stride m-1
                parts.append(regular.unflatten(cdim, (g, m - 1)).mean(cdim))
            else:
                parts.append(regular.unflatten(cdim, (m - 1, g)).mean(cdim + 1))
        parts.append(x.narrow(cdim, n_reg, c_in - n_reg).mean(cdim, keepdim=True))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=cdim)


def _add_cfb_(out: Tensor, x: Tensor, cdim: int, grouping: str) -> Tensor:
    """``out += CFB(x)`` in place, computing each part as :func:`channel_adaptive_bypass` does
    (so the values are bit-identical to ``out + channel_adaptive_bypass(x)``) without building
    the tiled/concatenated tensor."""
    c_in, c_out = x.shape[cdim], out.shape[cdim]
    if c_out == c_in:
        return out.add_(x)
    r, m = divmod(c_out, c_in)
    if r > 0:
        # tiling by broadcasting: view the first r*C_in output channels as (r, C_in)
        out.narrow(cdim, 0, r * c_in).unflatten(cdim, (r, c_in)).add_(x.unsqueeze(cdim))
    if m > 0:
        g = c_in // m
        n_reg = g * (m - 1)
        if n_reg > 0:
            regular = x.narrow(cdim, 0, n_reg)
            if grouping == "strided":
                merged = regular.unflatten(cdim, (g, m - 1)).mean(cdim)
            else:
                merged = regular.unflatten(cdim, (m - 1, g)).mean(cdim + 1)
            out.narrow(cdim, r * c_in, m - 1).add_(merged)
        last = x.narrow(cdim, n_reg, c_in - n_reg).mean(cdim, keepdim=True)
        out.narrow(cdim, r * c_in + m - 1, 1).add_(last)
    return out


def _cfb_adjoint(grad: Tensor, c_in: int, cdim: int, grouping: str) -> Tensor:
    """The transpose of the CFB map: the gradient of ``sum(grad * CFB(x))`` w.r.t. ``x``."""
    c_out = grad.shape[cdim]
    if c_out == c_in:
        return grad
    r, m = divmod(c_out, c_in)
    if r > 0:
        gx = grad.narrow(cdim, 0, r * c_in).unflatten(cdim, (r, c_in)).sum(cdim)
    else:
        shape = list(grad.shape)
        shape[cdim] = c_in
        gx = grad.new_zeros(shape)
    if m > 0:
        g = c_in // m
        n_reg = g * (m - 1)
        if n_reg > 0:
            g_reg = grad.narrow(cdim, r * c_in, m - 1) / g
            reg = gx.narrow(cdim, 0, n_reg)
            if grouping == "strided":
                reg.unflatten(cdim, (g, m - 1)).add_(g_reg.unsqueeze(cdim))
            else:
                reg.unflatten(cdim, (m - 1, g)).add_(g_reg.unsqueeze(cdim + 1))
        g_last = grad.narrow(cdim, r * c_in + m - 1, 1) / (c_in - n_reg)
        gx.narrow(cdim, n_reg, c_in - n_reg).add_(g_last)
    return gx


class _AddBypass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, x: Tensor, cdim: int, grouping: str) -> Tensor:  # type: ignore[override]
        ctx.mark_dirty(y)
        ctx.c_in, ctx.cdim, ctx.grouping = x.shape[cdim], cdim, grouping
        return _add_cfb_(y, x, cdim, grouping)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        gx = None
        if ctx.needs_input_grad[1]:
            gx = _cfb_adjoint(grad, ctx.c_in, ctx.cdim, ctx.grouping)
        return grad, gx, None, None


def add_channel_adaptive_bypass(
    y: Tensor, x: Tensor, grouping: Grouping = "strided", channel_dim: int = 1
) -> Tensor:
    r"""``y + CFB(x, C_out)`` with ``C_out = y.shape[channel_dim]`` (see
    :func:`channel_adaptive_bypass` for the map, BiDense arXiv 2411.10346).

    The sum is written **into y in place** when that is allowed (y is not a view and not a leaf
    that requires grad), so no tiled or concatenated copy of ``x`` and no new output tensor are
    made; the backward applies the transposed map to the gradient directly. Use it only where
    ``y`` is a fresh result that nothing else reads, such as the output of a BatchNorm or
    LayerNorm (they save their input, not their output; autograd's version check raises if a
    saved output were overwritten). Otherwise the out-of-place composition is returned.
    The values equal ``y + channel_adaptive_bypass(x, C_out)`` exactly.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("add_channel_adaptive_bypass expects Tensors")
    if x.dim() != y.dim() or x.dim() == 0:
        raise ValueError(
            f"add_channel_adaptive_bypass: y {tuple(y.shape)} and x {tuple(x.shape)} must have "
            "the same number of dims"
        )
    if not -x.dim() <= channel_dim < x.dim():
        raise ValueError(f"channel_dim={channel_dim} is out of range for a {x.dim()}-D tensor")
    cdim = channel_dim % x.dim()
    c_in, c_out = int(x.shape[cdim]), int(y.shape[cdim])
    _check(c_in, c_out, grouping)
    same_rest = all(x.shape[d] == y.shape[d] for d in range(x.dim()) if d != cdim)
    in_place_ok = (
        same_rest
        # a tracer (the ONNX exporter) cannot record an in-place autograd.Function on a view
        and not torch.jit.is_tracing()
        and y._base is None
        and not (y.is_leaf and y.requires_grad)
        and y.dtype == torch.promote_types(y.dtype, x.dtype)
    )
    if not in_place_ok:
        return y + channel_adaptive_bypass(x, c_out, grouping, channel_dim)
    return _AddBypass.apply(y, x, cdim, grouping)
