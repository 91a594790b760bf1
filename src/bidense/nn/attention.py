r"""Two-part (position + channel) binary attention and its full-precision reference.

After X. Ding et al., *The Binary Quantized Neural Network for Dense Prediction via Specially
Designed Upsampling and Attention*, arXiv 2405.17776 (2024). No code is public and the paper's
formulas are not known to us: from the abstract and third-party summaries we only know that the
attention has **two parts** and cuts the cost "by one hundred times". The attention formulas, the
thresholds and the pooled keys below are **our design** D2 of ``shared/reference/ding2024.md``,
in the spirit of DANet's position and channel modules (Fu et al., CVPR 2019);
:class:`FullPrecisionDualAttention` is that DANet reference. The SA-OPs comparison of the two
(D2's counting rule) is :func:`bidense.profile.attention_cost_comparison`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bidense.binarize import approx_sign

from .units import DingUnit, unit_conv

__all__ = [
    "BinaryDualAttention",
    "FullPrecisionDualAttention",
    "attention_grid",
    "hard_row_threshold",
]


class _HardRowThreshold(torch.autograd.Function):
    """Forward :math:`1[A \\ge r \\max_{row} A]` in {0, 1}; backward straight through to A."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, ratio: float) -> Tensor:  # type: ignore[override]
        return (a >= ratio * a.amax(dim=-1, keepdim=True)).to(a.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def hard_row_threshold(a: Tensor, ratio: float = 0.25) -> Tensor:
    r""":math:`A_b = 1[A \ge r \cdot \max_{row} A]` over the last dim, straight-through backward
    (the gradient reaches the softmax unchanged). Our design (ding2024.md D2), r = 0.25."""
    return _HardRowThreshold.apply(a, float(ratio))


def attention_grid(grid: int | Sequence[int]) -> tuple[int, int]:
    """The pooling grid ``(g_h, g_w)`` of :class:`BinaryDualAttention` from an int or a pair."""
    g = (int(grid), int(grid)) if isinstance(grid, int) else tuple(int(v) for v in grid)
    if len(g) != 2 or min(g) < 1:
        raise ValueError(f"grid must be a positive int or a pair, got {grid!r}")
    return g  # type: ignore[return-value]


def _proj(cin: int, cout: int, binary: bool) -> nn.Sequential:
    return nn.Sequential(unit_conv(cin, cout, 1, 1, 0, binary), nn.BatchNorm2d(cout))


class BinaryDualAttention(nn.Module):
    r"""Two-part (position + channel) binary attention on a (B, C, H, W) map.

    **From the paper** (Ding et al., arXiv 2405.17776, abstract and summaries): a "two-part"
    attention whose cost is about 100x below the original while keeping its effect. Nothing
    else is known; **everything below is our design** (ding2024.md D2), in the spirit of DANet's
    position (PAM) and channel (CAM) modules (Fu et al., CVPR 2019).

    With :math:`N = HW`, :math:`d = \max(1, C / \text{reduction})` (8 by default) and
    :math:`P = g_h g_w` (``grid``, 8x8 by default):

    *Position part.* :math:`q = \operatorname{BN}(\operatorname{BinConv}_{1\times1}(x)) \in
    \mathbb R^{d\times N}`; :math:`k, v` the same (d and C outputs), then adaptive-average-pooled
    to the grid: :math:`\bar k \in \mathbb R^{d\times P}`, :math:`\bar v \in \mathbb R^{C\times
    P}`. :math:`q_b = \operatorname{sign}(q - \tau_q)`, :math:`k_b = \operatorname{sign}(\bar k
    - \tau_k)` (learnable per-channel :math:`\tau`, ApproxSign backward);
    :math:`S = \frac{a_q a_k}{\sqrt d} q_b^\top k_b` (:math:`q_b^\top k_b = d - 2\,
    \operatorname{popcount}(q \oplus k)`, N P d BOPs); :math:`A = \operatorname{softmax}_P(S)`;
    :math:`O_p = \bar v A^\top` (N P C FP MACs). With ``binary_values=True``:
    :math:`O_p = a_v \odot (\operatorname{sign}(\bar v) A_b^\top) / \operatorname{rowcount}(A_b)`
    with :math:`A_b = 1[A \ge 0.25 \max_{row} A]` (straight-through to the softmax) and a
    learnable per-channel :math:`a_v` (init 1), N P C BOPs; dividing by the row count, as in the
    channel part, is our choice too.

    *Channel part.* :math:`x_b = \operatorname{sign}(x - \tau_c)`; :math:`E = x_b x_b^\top \in
    \mathbb Z^{C\times C}` (C^2 N BOPs); :math:`A_c = \operatorname{softmax}_{row}(t E / N)`
    (``channel_form="scaled"``, learnable temperature t, init 1) or
    :math:`\operatorname{softmax}_{row}(t(\max_{row}E - E)/N)` (``"danet"``: DANet's form; the
    t/N scaling is ours, it keeps the logits O(1)); :math:`A_b = 1[A_c \ge 0.25 \max_{row}
    A_c]`; :math:`O_c = a_c (A_b x_b) / \operatorname{rowcount}(A_b)` (C^2 N BOPs, learnable
    scalar :math:`a_c`, init 1).

    *Merge.* :math:`z = x + \gamma_p O_p + \gamma_c O_c` (:math:`\gamma` init 0, as DANet), then
    one :class:`DingUnit` 3x3 (``out_unit=True``). ``binary=False`` is the same pooled topology in
    FP (no signs, soft :math:`A`, no row-count normalisation, FP projections).

    Op counts live in :mod:`bidense.profile`: :func:`~bidense.profile.module_ops` counts the
    whole module; :func:`~bidense.profile.summarize` counts its children itself and takes this
    module's own functional ops, plus the FP DANet reference of
    :func:`~bidense.profile.full_precision_attention_ops`, from
    :data:`~bidense.profile.SELF_REPORTED_OPS`.
    """

    def __init__(
        self,
        channels: int,
        grid: int | Sequence[int] = (8, 8),
        *,
        reduction: int = 8,
        binary_values: bool = False,
        channel_form: Literal["scaled", "danet"] = "scaled",
        threshold_ratio: float = 0.25,
        out_unit: bool = True,
        binary: bool = True,
    ) -> None:
        super().__init__()
        if int(channels) < 1 or int(reduction) < 1:
            raise ValueError(
                f"BinaryDualAttention: bad channels={channels} or reduction={reduction}"
            )
        if channel_form not in ("scaled", "danet"):
            raise ValueError(
                f"BinaryDualAttention: channel_form must be 'scaled' or 'danet', got "
                f"{channel_form!r}"
            )
        if binary_values and not binary:
            raise ValueError("BinaryDualAttention: binary_values=True needs binary=True")
        c = self.channels = int(channels)
        self.grid = attention_grid(grid)
        self.reduction = int(reduction)
        d = self.key_channels = max(1, c // self.reduction)
        self.binary_values = bool(binary_values)
        self.channel_form = channel_form
        self.threshold_ratio = float(threshold_ratio)
        self.binary = bool(binary)
        self.q_proj = _proj(c, d, binary)
        self.k_proj = _proj(c, d, binary)
        self.v_proj = _proj(c, c, binary)
        self.tau_q = nn.Parameter(torch.zeros(d))
        self.tau_k = nn.Parameter(torch.zeros(d))
        self.tau_c = nn.Parameter(torch.zeros(c))
        self.a_q = nn.Parameter(torch.ones(()))
        self.a_k = nn.Parameter(torch.ones(()))
        self.a_c = nn.Parameter(torch.ones(()))
        self.a_v = nn.Parameter(torch.ones(c)) if self.binary_values else None
        self.temperature = nn.Parameter(torch.ones(()))
        self.gamma_p = nn.Parameter(torch.zeros(()))
        self.gamma_c = nn.Parameter(torch.zeros(()))
        self.out_unit = DingUnit(c, c, 3, binary=binary) if out_unit else None

    # -- the two parts -------------------------------------------------------------------
    def position_part(self, x: Tensor) -> Tensor:
        """:math:`O_p` as (B, C, N)."""
        d = self.key_channels
        q = self.q_proj(x).flatten(2)
        k = F.adaptive_avg_pool2d(self.k_proj(x), self.grid).flatten(2)
        v = F.adaptive_avg_pool2d(self.v_proj(x), self.grid).flatten(2)
        if self.binary:
            q = approx_sign(q - self.tau_q[:, None])
            k = approx_sign(k - self.tau_k[:, None])
            s = (self.a_q * self.a_k / math.sqrt(d)) * torch.bmm(q.transpose(1, 2), k)
        else:
            s = torch.bmm(q.transpose(1, 2), k) / math.sqrt(d)
        a = torch.softmax(s, dim=-1)  # (B, N, P)
        if not self.binary_values:
            return torch.bmm(v, a.transpose(1, 2))
        ab = hard_row_threshold(a, self.threshold_ratio)
        out = torch.bmm(approx_sign(v), ab.transpose(1, 2))  # (B, C, N)
        count = ab.detach().sum(dim=-1)  # (B, N), >= 1: the row max always passes
        assert self.a_v is not None
        return self.a_v[:, None] * out / count[:, None, :]

    def channel_part(self, x: Tensor) -> Tensor:
        """:math:`O_c` as (B, C, N)."""
        n = x.shape[-2] * x.shape[-1]
        xf = x.flatten(2)
        xb = approx_sign(xf - self.tau_c[:, None]) if self.binary else xf
        e = torch.bmm(xb, xb.transpose(1, 2))  # (B, C, C)
        if self.channel_form == "danet":
            e = e.amax(dim=-1, keepdim=True) - e
        a = torch.softmax(self.temperature * e / n, dim=-1)
        if not self.binary:
            return self.a_c * torch.bmm(a, xb)
        ab = hard_row_threshold(a, self.threshold_ratio)
        count = ab.detach().sum(dim=-1, keepdim=True)
        return self.a_c * torch.bmm(ab, xb) / count

    def attend(self, x: Tensor) -> Tensor:
        """The merged map :math:`z = x + \\gamma_p O_p + \\gamma_c O_c` (before the out unit)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"BinaryDualAttention expects input (B, {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        shape = x.shape
        op = self.position_part(x).view(shape)
        oc = self.channel_part(x).view(shape)
        return x + self.gamma_p * op + self.gamma_c * oc

    def forward(self, x: Tensor) -> Tensor:
        z = self.attend(x)
        return self.out_unit(z) if self.out_unit is not None else z

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, grid={self.grid}, d={self.key_channels}, binary={self.binary}, "
            f"binary_values={self.binary_values}, channel_form={self.channel_form!r}"
        )


class FullPrecisionDualAttention(nn.Module):
    r"""DANet-style full-precision position + channel attention (Fu et al., *Dual Attention
    Network for Scene Segmentation*, CVPR 2019), the ``attention="fp"`` ablation and the
    reference of the cost comparison.

    PAM: :math:`q, k = \operatorname{Conv}_{1\times1}(x) \in \mathbb R^{d\times N}` (d = C/8),
    :math:`v = \operatorname{Conv}_{1\times1}(x) \in \mathbb R^{C\times N}` (with bias, as DANet),
    :math:`A = \operatorname{softmax}_{row}(q^\top k) \in \mathbb R^{N\times N}`,
    :math:`O_p = v A^\top`. CAM: :math:`E = x x^\top`, :math:`A_c = \operatorname{softmax}_{row}
    (\max_{row} E - E)`, :math:`O_c = A_c x`. Output :math:`x + \gamma_p O_p + \gamma_c O_c`
    (:math:`\gamma` init 0). DANet's extra 3x3 convs around each module are left out (our
    simplification), so the matmul MACs are exactly the D2 reference
    :math:`N^2 d + N^2 C + 2 C^2 N`.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        if int(channels) < 1 or int(reduction) < 1:
            raise ValueError(f"FullPrecisionDualAttention: bad channels={channels}")
        c = self.channels = int(channels)
        self.reduction = int(reduction)
        d = self.key_channels = max(1, c // self.reduction)
        self.q = nn.Conv2d(c, d, 1)
        self.k = nn.Conv2d(c, d, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.gamma_p = nn.Parameter(torch.zeros(()))
        self.gamma_c = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"FullPrecisionDualAttention expects input (B, {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        shape = x.shape
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), self.v(x).flatten(2)
        a = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, N, N)
        op = torch.bmm(v, a.transpose(1, 2))
        xf = x.flatten(2)
        e = torch.bmm(xf, xf.transpose(1, 2))
        ac = torch.softmax(e.amax(dim=-1, keepdim=True) - e, dim=-1)
        oc = torch.bmm(ac, xf)
        return x + self.gamma_p * op.view(shape) + self.gamma_c * oc.view(shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, d={self.key_channels}"
