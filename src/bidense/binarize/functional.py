"""Sign functions with surrogate (straight-through) gradients.

Forward values follow PyTorch's ``torch.sign`` (``sign(0) = 0``); only the backward differs.
Custom ``autograd.Function`` s are used instead of the ``detach`` trick because they keep one
saved tensor and one fused backward kernel per call, which matters for training speed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class _SignClipSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class _ApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp_(min=0.0)


class _ScaledSignClipSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return scale * torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype), None


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
