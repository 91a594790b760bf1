"""Sign functions with surrogate (straight-through) gradients.

Forward values follow PyTorch's ``torch.sign`` (``sign(0) = 0``); only the backward differs.
Custom ``autograd.Function`` s are used instead of the ``detach`` trick because they keep one
saved tensor and one fused backward kernel per call, which matters for training speed.

:func:`dab` and :func:`mean_abs_sign` are whole binarizers in one ``autograd.Function`` each
(forward and backward written out by hand). On CPU a training step is dominated by memory
traffic and, above all, by page faults on every freshly allocated activation-sized temporary,
so these functions allocate one full-size tensor per direction and reuse it in place.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _SignClipSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _clip_ste_grad(x, grad)


def _clip_ste_grad(x: Tensor, grad: Tensor) -> Tensor:
    """``grad * 1_{|x| <= 1}`` with one allocation (the mask is built in place as 1.0/0.0)."""
    if x.dtype != grad.dtype or x.shape != grad.shape:
        return grad * (x.abs() <= 1).to(grad.dtype)
    return torch.abs(x).le_(1.0).mul_(grad)


def _approx_sign_grad(s: Tensor, grad: Tensor) -> Tensor:
    """``grad * max(0, 2 - 2|s|)`` with one allocation (bit-identical to the plain formula)."""
    if s.dtype != grad.dtype or s.shape != grad.shape:
        return grad * (2.0 - 2.0 * s.abs()).clamp_(min=0.0)
    return torch.abs(s).mul_(-2.0).add_(2.0).clamp_(min=0.0).mul_(grad)


class _ApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _approx_sign_grad(x, grad)


class _ShiftedApproxSign(torch.autograd.Function):
    # sign(x - t) with ApproxSign backward; s = x - t is recomputed in backward, not stored
    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, t)
        return torch.sub(x, t).sign_()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, t = ctx.saved_tensors
        s = torch.sub(x, t)
        if s.dtype == grad.dtype and s.shape == grad.shape:
            grad_s = s.abs_().mul_(-2.0).add_(2.0).clamp_(min=0.0).mul_(grad)
        else:
            grad_s = _approx_sign_grad(s, grad)
        grad_t = -grad_s.sum_to_size(t.shape) if ctx.needs_input_grad[1] else None
        grad_x = grad_s.sum_to_size(x.shape) if ctx.needs_input_grad[0] else None
        return grad_x, grad_t


class _ScaledSignClipSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return scale * torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _clip_ste_grad(x, grad), None


class _TanhSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, beta)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, beta = ctx.saved_tensors
        sech2 = 1.0 - torch.tanh(beta * x).square()
        grad_beta = (grad * x * sech2).sum().reshape(beta.shape)
        return grad * beta * sech2, grad_beta


class _EDESign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, k: float, t: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.k, ctx.t = k, t
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        th = torch.tanh(ctx.t * x)
        return grad * (ctx.k * ctx.t) * (1.0 - th * th), None, None


def _channel_sum(t: Tensor, cdim: int) -> Tensor:
    """Sum over every dim except ``cdim``; returns shape (C,)."""
    return t.sum(dim=[d for d in range(t.dim()) if d != cdim])


class _DAB(torch.autograd.Function):
    # Saves x, the output y and per-(n, c) statistics; s = x - tau is recomputed in backward
    # into the gradient buffer instead of being stored (one allocation fewer per direction).
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, a: Tensor, k: Tensor, b: Tensor, cdim: int, group: int | None
    ) -> Tensor:
        dims = [d for d in range(1, x.dim()) if d != cdim]
        shape = [1] * x.dim()
        shape[cdim] = x.shape[cdim]
        a_shape, k_shape, b_shape = a.shape, k.shape, b.shape
        a, k, b = a.view(shape), k.view(shape), b.view(shape)
        mu = x.mean(dim=dims, keepdim=True) if dims else x
        tau = k * mu + b
        y = torch.sub(x, tau)
        # m = mean|s|: |s| in y's buffer, then s is recomputed there (cheaper than a temporary)
        m = y.abs_().mean(dim=dims, keepdim=True) if dims else y.abs()
        alpha_c = torch.exp(a * (m - 1.0))
        alpha = alpha_c if group is None else group_mean(alpha_c, cdim, group)
        torch.sub(x, tau, out=y).sign_().mul_(alpha)
        ctx.save_for_backward(x, y, mu, tau, m, alpha_c, alpha)
        ctx.cdim, ctx.dims, ctx.group = cdim, dims, group
        ctx.param_shapes = (a_shape, k_shape, b_shape)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, y, mu, tau, m, alpha_c, alpha = ctx.saved_tensors
        cdim, dims, group = ctx.cdim, ctx.dims, ctx.group
        need_x, need_a, need_k, need_b = ctx.needs_input_grad[:4]
        grad_x = grad_a = grad_k = grad_b = None
        a_shape, k_shape, b_shape = ctx.param_shapes
        # one activation-sized buffer: first g*y (for a), then s, then the gradient of s
        buf = torch.mul(g, y) if need_a else torch.empty_like(y)
        if need_a:
            # dL/dalpha = sum g*sign(s) and dalpha/da = (m-1) alpha, so dL/da = (m-1) sum(g*y)
            gy = buf.sum(dim=dims, keepdim=True) if dims else buf
            if group is not None:
                # y = alpha_bar sign(s) with alpha_bar the mean of alpha_c over the channel's
                # group: sum(g*sign(s)) = sum(g*y) / alpha_bar (0 where it is 0) per group, and
                # d alpha_bar / d alpha_c = 1 / (group length)
                g_bar = _group_reduce(gy, cdim, group, Tensor.sum)
                g_bar = torch.where(alpha > 0, g_bar / alpha, torch.zeros_like(g_bar))
                gy = g_bar * alpha_c / _group_lengths(gy, cdim, group)
            grad_a = _channel_sum(gy * (m - 1.0), cdim).view(a_shape)
        if need_x or need_k or need_b:
            # alpha * ApproxSign'(s) * g with ApproxSign'(s) = 2 max(0, 1 - |s|) = -2 min(|s|-1, 0)
            s = torch.sub(x, tau, out=buf)
            grad_s = s.abs_().sub_(1.0).clamp_(max=0.0).mul_(g).mul_(alpha * -2.0)
            if need_k or need_b:
                r = grad_s.sum(dim=dims, keepdim=True) if dims else grad_s
                if need_b:
                    grad_b = -_channel_sum(r, cdim).view(b_shape)
                if need_k:
                    grad_k = -_channel_sum(r * mu, cdim).view(k_shape)
            if need_x:
                grad_x = grad_s
        return grad_x, grad_a, grad_k, grad_b, None, None


class _MeanAbsSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:  # type: ignore[override]
        gamma = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
        ctx.save_for_backward(w)
        return torch.sign(w).mul_(gamma)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return _clip_ste_grad(w, grad)


#: DAB's scale variants (bidense-method.md §3): "channel" is the paper's alpha per (sample,
#: channel); "shared" and "group" are our deployment-friendly variants (alpha averaged over all
#: channels, or over each group of consecutive channels).
DAB_SCALES = ("channel", "shared", "group")


def dab(
    x: Tensor,
    a: Tensor,
    k: Tensor,
    b: Tensor,
    channel_dim: int = 1,
    scale: str = "channel",
    group: int = 64,
) -> Tensor:
    r"""BiDense's Distribution-adaptive Binarizer (Yin et al., arXiv 2411.10346), fused.

    For sample :math:`n` and channel :math:`c` (statistics over all other dims, none for (B, C)):
    :math:`\mu = \operatorname{mean} x` (detached), :math:`\tau = k_c\mu + b_c`,
    :math:`s = x - \tau`, :math:`m = \operatorname{mean}|s|` (detached),
    :math:`\alpha = \exp(a_c(m - 1))` and :math:`y = \alpha \operatorname{sign}(s)`.
    Our variants replace :math:`\alpha_{n,c}` by a mean (:func:`group_mean`):
    ``scale="shared"``: :math:`\bar\alpha_n = \operatorname{mean}_c \alpha_{n,c}`;
    ``scale="group"``: :math:`\bar\alpha_{n,g} = \operatorname{mean}_{c \in g}
    \alpha_{n,c}` over groups of ``group`` consecutive channels (the last one possibly shorter).

    Gradients (hand-written, identical to the autograd composition of
    :class:`bidense.binarize.DAB`): :math:`\partial L/\partial x = g\,\alpha\,
    \operatorname{ApproxSign}'(s)` with :math:`\operatorname{ApproxSign}'(s) = \max(0, 2-2|s|)`
    (Bi-Real Net); :math:`\partial L/\partial b_c = -\sum \partial L/\partial x`,
    :math:`\partial L/\partial k_c = -\sum \mu\,\partial L/\partial x`;
    :math:`\partial L/\partial a_c = \sum_n (m-1)\alpha \sum g \operatorname{sign}(s)`
    (through the mean for the variants). ``a``, ``k``, ``b`` have shape (C,).
    """
    if scale not in DAB_SCALES:
        raise ValueError(f"DAB scale must be one of {DAB_SCALES}, got {scale!r}")
    if scale == "group" and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
        raise ValueError(f"DAB group must be a positive int, got {group!r}")
    if x.dim() < 2:
        raise ValueError(f"dab expects an input with a batch and a channel dim, got {x.dim()}-D")
    cdim = channel_dim % x.dim()
    if cdim == 0:
        raise ValueError("dab: channel_dim must not be the batch dim 0")
    return _DAB.apply(x, a, k, b, cdim, _averaging_group(scale, group, x.shape[cdim]))


def _averaging_group(scale: str, group: int, channels: int) -> int | None:
    """The group size DAB's alpha is averaged over: none ("channel"), all channels ("shared")
    or ``group``."""
    return {"channel": None, "shared": channels, "group": group}[scale]


def _group_reduce(t: Tensor, dim: int, group: int, reduce) -> Tensor:
    """``reduce(chunk, dim=dim, keepdim=True)`` of each run of ``group`` consecutive entries of
    ``dim`` (the last run possibly shorter), broadcast back to every entry of its run."""
    c = t.shape[dim]
    if group >= c:
        return reduce(t, dim=dim, keepdim=True)
    parts = [reduce(chunk, dim=dim, keepdim=True) for chunk in t.split(group, dim=dim)]
    return torch.cat(parts, dim=dim).repeat_interleave(group, dim=dim).narrow(dim, 0, c)


def _group_lengths(t: Tensor, dim: int, group: int) -> Tensor | int:
    """The length of the group of each entry of ``dim`` (an int when they are all equal)."""
    c = t.shape[dim]
    if c % group == 0 or group >= c:
        return min(group, c)
    shape = [1] * t.dim()
    shape[dim] = c
    last = c % group
    idx = torch.arange(c, device=t.device)
    return torch.where(idx >= c - last, last, group).to(t.dtype).view(shape)


def group_mean(t: Tensor, dim: int, group: int) -> Tensor:
    r"""Mean of ``t`` over each group of ``group`` consecutive entries of ``dim`` (the last group
    possibly shorter), kept at every entry of the group; ``group >= t.shape[dim]`` is the mean
    over the whole dim, kept as size 1 (DAB's ``scale="shared"``).

    DAB's group scale (our variant): :math:`\bar\alpha_{n,g} = \frac{1}{|g|}\sum_{c\in g}
    \alpha_{n,c}`; with ``group`` a multiple of the packing word (64) it is constant over each
    packed word, so a packed conv stays exact with one multiply-add per word.
    """
    return _group_reduce(t, dim, group, Tensor.mean)


def mean_abs_sign(w: Tensor) -> Tensor:
    r"""Scaled sign weights :math:`\gamma_o \operatorname{sign}(W_o)` with
    :math:`\gamma_o = \operatorname{mean}|W_o|` over all but dim 0, **detached**, and the clip-STE
    :math:`\partial \hat W/\partial W = 1_{|W|\le 1}` not multiplied by :math:`\gamma` (Bi-Real /
    ReActNet code, BiDense arXiv 2411.10346 §3.1). One fused ``autograd.Function``; the value and
    gradient equal ``scaled_sign_clip_ste(w, w.detach().abs().mean(...))``.
    """
    return _MeanAbsSign.apply(w)


def sign_clip_ste(x: Tensor) -> Tensor:
    r"""BNN sign with the clipped straight-through estimator (Hubara et al., 2016).

    Forward :math:`\operatorname{sign}(x)`; backward :math:`\partial y/\partial x = 1_{|x| \le 1}`.
    """
    return _SignClipSTE.apply(x)


def scaled_sign_clip_ste(x: Tensor, scale: Tensor) -> Tensor:
    r"""``scale * sign(x)`` with a constant ``scale`` and the clip-STE on ``x`` *not* multiplied by
    the scale: :math:`\partial y/\partial x = 1_{|x|\le 1}`. This is the Bi-Real/ReActNet/BiDense
    code's ``scale*sign(W)`` straight-through ``clamp(W, -1, 1)``.
    """
    return _ScaledSignClipSTE.apply(x, scale.detach())


def approx_sign(x: Tensor) -> Tensor:
    r"""Bi-Real Net ApproxSign (Liu et al., ECCV 2018).

    Forward :math:`\operatorname{sign}(x)`; backward is the derivative of the piecewise
    polynomial :math:`-1\ (x<-1),\ x^2+2x\ (-1\le x<0),\ -x^2+2x\ (0\le x<1),\ 1\ (x\ge 1)`,
    i.e. :math:`\max(0, 2 - 2|x|)`.
    """
    return _ApproxSign.apply(x)


def shifted_approx_sign(x: Tensor, t: Tensor) -> Tensor:
    r""":math:`\operatorname{sign}(x - t)` with the Bi-Real ApproxSign backward (Liu et al., ECCV
    2018) on :math:`s = x - t`, for a broadcastable shift ``t`` (ReActNet's RSign threshold):
    :math:`\partial/\partial x = \max(0, 2 - 2|s|)` and :math:`\partial/\partial t` is its
    negative, summed to ``t``'s shape. One fused function equal to ``approx_sign(x - t)``.
    """
    return _ShiftedApproxSign.apply(x, t)


def ede_sign(x: Tensor, k: float, t: float) -> Tensor:
    r"""Sign with IR-Net's Error Decay Estimator backward (Qin et al., CVPR 2020).

    Surrogate :math:`F(x) = k \tanh(t x)`, so :math:`F'(x) = k t (1 - \tanh^2(t x))`.
    """
    return _EDESign.apply(x, float(k), float(t))


def tanh_sign(x: Tensor, beta: Tensor) -> Tensor:
    r"""BiSRNet sign (Cai et al., NeurIPS 2023): forward :math:`\operatorname{sign}(x)`,
    backward through :math:`\tanh(\beta x)`, so
    :math:`\partial/\partial x = \beta(1-\tanh^2(\beta x))` and the
    learnable :math:`\beta` receives :math:`x(1-\tanh^2(\beta x))`.
    """
    return _TanhSign.apply(x, beta)


def ede_schedule(progress: float, t_min: float = 0.1, t_max: float = 10.0) -> tuple[float, float]:
    r"""IR-Net / AdaBin EDE annealing: :math:`t = T_{min} 10^{p \log_{10}(T_{max}/T_{min})}`,
    :math:`k = \max(1/t, 1)` for training progress :math:`p \in [0, 1]`. Returns ``(k, t)``.
    """
    p = min(max(float(progress), 0.0), 1.0)
    t = t_min * 10.0 ** (p * math.log10(t_max / t_min))
    return max(1.0 / t, 1.0), t
