r"""Multi-branch binary upsampling and two-part binary attention (after Ding et al. 2024).

X. Ding, L. Shan, G. Zhao, M. Wu, W. Zhou, W. Li, *The Binary Quantized Neural Network for Dense
Prediction via Specially Designed Upsampling and Attention*, arXiv 2405.17776 (2024). No code is
public and the paper's formulas are not known to us: from the abstract and third-party summaries
we only know that the upsampler runs **parallel branches merged by learned sigmoid gates with
Hadamard products**, that the attention has **two parts** and cuts the cost "by one hundred
times", and that the binarizers use **learned scales**. Every concrete choice below (branch
operators, gate shape, the bypass, the attention formulas, the thresholds, the counting rule) is
**our design**, specified in ``shared/reference/ding2024.md`` ("Our design" D0-D2); each
docstring marks which parts are which.

Counting hook (D2's rule): every module here has ``profile_ops(input_shape) -> dict`` returning
exact counts for one forward pass (eval mode, whole batch) on that input shape, with keys

* ``binary_macs``: MACs whose two operands are 1-bit ({+-1} or {0,1}), i.e. BOPs;
* ``fp_macs``: every other MAC (FP x FP or FP x 1-bit), i.e. FLOPs in the BNN-literature sense;
* ``elementwise``: floating-point elementwise work, by the per-element rule below.

Elementwise rule (same constants as :mod:`bidense.profile.rules` where both count the same op):
BatchNorm folded to scale + shift 2 per output element; softmax 3 per element (exp, sum, divide);
an activation threshold ``x >= tau`` (RSign, the attention's signs and {0,1} masks) 1 per
element; a row max or row sum 1 per input element; RPReLU 3 per element; sigmoid, scalar or
per-channel scaling, division, residual add 1 per element; bilinear interpolation 7 and nearest 1
per output element; average pooling 1 per input element of every (possibly overlapping) window;
CFB 0 for an identity or tiled channel and ``len(group)`` per pixel for an averaged channel;
PixelShuffle, reshapes and the latent-weight binarization (done once offline) 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bidense.binarize import approx_sign

from .activations import RPReLU
from .binary import BinaryConv2d, BinaryConvTranspose2d
from .bypass import channel_adaptive_bypass, channel_adaptive_bypass_groups

__all__ = [
    "UPSAMPLE_BRANCHES",
    "BinaryDualAttention",
    "DingUnit",
    "FullPrecisionDualAttention",
    "MultiBranchUpsample",
    "attention_cost_comparison",
    "binary_attention_sa_ops",
    "full_precision_attention_ops",
]

#: Branch operators of :class:`MultiBranchUpsample`, in their default order.
UPSAMPLE_BRANCHES: tuple[str, ...] = ("nearest", "bilinear", "transposed", "pixelshuffle")

# Elementwise costs per element (see the module docstring).
EW_BN = 2
EW_SOFTMAX = 3
EW_RPRELU = 3
EW_BILINEAR = 7
EW_NEAREST = 1

#: D0 binarizers of the ``ding`` method: RSign activations, learned-scale centred weights.
DING_ACT = "rsign"
DING_WEIGHT = "learned_scale"

Counts = dict[str, int]


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


def _check_shape(input_shape: Sequence[int], channels: int, who: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[1] != channels or min(shape) < 1:
        raise ValueError(f"{who}.profile_ops expects (B, {channels}, H, W), got {shape}")
    return shape[0], shape[2], shape[3]


def _adaptive_window_sum(in_size: int, out_size: int) -> int:
    # PyTorch's adaptive pooling windows are [floor(i*In/Out), ceil((i+1)*In/Out)).
    return sum(
        -((-(i + 1) * in_size) // out_size) - (i * in_size) // out_size for i in range(out_size)
    )


def adaptive_pool_cost(h: int, w: int, grid: tuple[int, int]) -> int:
    """Elementwise cost of ``adaptive_avg_pool2d`` of one (h, w) plane to ``grid``: 1 per input
    element of every window (windows overlap when the sizes do not divide)."""
    return _adaptive_window_sum(h, grid[0]) * _adaptive_window_sum(w, grid[1])


def cfb_cost(c_in: int, c_out: int) -> int:
    """Elementwise cost per pixel of :func:`channel_adaptive_bypass` ``c_in -> c_out``: tiled
    (copied) channels are free, each averaged channel costs the size of its group."""
    if c_in == c_out:
        return 0
    r = c_out // c_in
    groups = channel_adaptive_bypass_groups(c_in, c_out)
    return sum(len(g) for g in groups[r * c_in :])


def _conv(
    cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, binary: bool = True
) -> nn.Conv2d:
    if binary:
        return BinaryConv2d(
            cin, cout, k, stride=stride, padding=padding,
            act_binarizer=DING_ACT, weight_binarizer=DING_WEIGHT,
        )
    return nn.Conv2d(cin, cout, k, stride, padding, bias=False)


def _conv_counts(
    cin: int, cout: int, k: int, h_in: int, w_in: int, h_out: int, w_out: int, batch: int,
    binary: bool,
) -> Counts:
    """A conv (+ its RSign threshold when binary) followed by BN."""
    macs = batch * cin * cout * k * k * h_out * w_out
    thr = batch * cin * h_in * w_in if binary else 0
    bn = EW_BN * batch * cout * h_out * w_out
    return _counts(macs if binary else 0, 0 if binary else macs, thr + bn)


# ---------------------------------------------------------------------------------------------
# D0: the binary unit
# ---------------------------------------------------------------------------------------------
class DingUnit(nn.Module):
    r"""The ``ding`` method's binary unit (our design D0; Bi-Real/ReActNet layout).

    .. math::
        u(x) = \operatorname{RPReLU}\big(\operatorname{BN}(\operatorname{BinConv}(
               \operatorname{RSign}(x))) + \operatorname{shortcut}(x)\big)

    BinConv uses the ``learned_scale`` weights :math:`\hat W_o = \lambda_o
    \operatorname{sign}(W_o - \bar W_o)` (learnable :math:`\lambda_o`, init mean\|W_o\|; BiViT's
    parameterised scale, He et al. ICCV 2023) and RSign activations (ReActNet, Liu et al. ECCV
    2020). "Learned scaling" is all the paper summaries say; these particular binarizers are our
    choice. Shortcut: identity when shapes match; CFB (BiDense, Yin et al. arXiv 2411.10346) when
    only the channels change; ``AvgPool2d(stride)`` then an FP 1x1 conv + BN
    (``down_shortcut="fp"``, Bi-Real Net) or then CFB (``down_shortcut="cfb"``, no parameters)
    when the stride changes. ``binary=False`` replaces the binary conv by an FP ``Conv2d`` and
    keeps everything else (the "same topology in FP32" of D3).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        down_shortcut: Literal["fp", "cfb"] = "fp",
        binary: bool = True,
    ) -> None:
        super().__init__()
        if down_shortcut not in ("fp", "cfb"):
            raise ValueError(
                f"DingUnit: down_shortcut must be 'fp' or 'cfb', got {down_shortcut!r}"
            )
        if int(stride) < 1 or int(kernel_size) < 1:
            raise ValueError(f"DingUnit: bad kernel_size={kernel_size} or stride={stride}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = int(kernel_size), int(stride)
        self.down_shortcut = down_shortcut
        self.binary = bool(binary)
        self.conv = _conv(in_channels, out_channels, kernel_size, stride, kernel_size // 2, binary)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else None
        self.proj: nn.Module | None = None
        if stride > 1 and down_shortcut == "fp":
            self.proj = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = RPReLU(out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        """The real-valued shortcut branch."""
        if self.pool is not None:
            x = self.pool(x)
        if self.proj is not None:
            return self.proj(x)
        return channel_adaptive_bypass(x, self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.conv(x))
        sc = self.shortcut(x)
        if sc.shape[-2:] != y.shape[-2:]:
            raise ValueError(
                f"DingUnit: stride {self.stride} needs H and W divisible by it, got input "
                f"{tuple(x.shape)}"
            )
        return self.act(y + sc)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial output size for an (h, w) input."""
        p, k, s = self.kernel_size // 2, self.kernel_size, self.stride
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def profile_ops(self, input_shape: tuple[int, ...]) -> Counts:
        """Exact counts of one forward on ``input_shape`` (see the module docstring's rule).

        conv: ``C_in C_out k^2 H_out W_out`` MACs (binary or FP) + RSign ``C_in H W`` + BN;
        shortcut: pooling ``C_in H_out W_out s^2``, FP 1x1 ``C_in C_out H_out W_out`` + BN, or
        CFB; residual add and RPReLU (1 + 3 per output element). Multiplied by the batch.
        """
        b, h, w = _check_shape(input_shape, self.in_channels, "DingUnit")
        ho, wo = self.output_size(h, w)
        cin, cout = self.in_channels, self.out_channels
        parts = [_conv_counts(cin, cout, self.kernel_size, h, w, ho, wo, b, self.binary)]
        n_out = b * ho * wo
        if self.pool is not None:
            parts.append(_counts(elementwise=cin * n_out * self.stride**2))
        if self.proj is not None:
            parts.append(_counts(fp_macs=cin * cout * n_out, elementwise=EW_BN * cout * n_out))
        else:
            parts.append(_counts(elementwise=cfb_cost(cin, cout) * n_out))
        parts.append(_counts(elementwise=(1 + EW_RPRELU) * cout * n_out))
        return _sum_counts(parts)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
            f"binary={self.binary}, down_shortcut={self.down_shortcut!r}"
        )


# ---------------------------------------------------------------------------------------------
# D1: multi-branch parallel binary upsampling
# ---------------------------------------------------------------------------------------------
class MultiBranchUpsample(nn.Module):
    r"""Multi-branch parallel binary upsampling ``(B, C_in, H, W) -> (B, C_out, sH, sW)``.

    **From the paper** (Ding et al., arXiv 2405.17776, via summaries): several parallel branches,
    each learned on its own, merged with learned weights written with sigmoids and Hadamard
    products, to mimic full-precision upsampling with binary operations.

    **Our design** (ding2024.md D1): the branches (``branches`` selects any subset, in order)

    ============== ======================================================================
    ``nearest``     nearest xs -> binary 3x3 conv (p1) -> BN
    ``bilinear``    bilinear xs (align_corners=False) -> binary 3x3 conv -> BN
                    (interpolate *before* binarizing: bilinear output is real-valued)
    ``transposed``  binary ConvTranspose2d(k=s, stride=s) -> BN
    ``pixelshuffle`` binary 1x1 conv to C_out s^2 -> BN -> PixelShuffle(s)
    ============== ======================================================================

    gates per branch b and output channel c,
    :math:`g_{b,c} = \sigma(\theta_{b,c} + [\varphi(\operatorname{GAP}(x))]_{b,c})` with
    :math:`\theta` learnable, init 0 (every gate starts at 0.5), and :math:`\varphi` an FP 1x1
    conv ``C_in -> n_b C_out`` on the pooled input, zero-initialised, only for
    ``gate="conditioned"`` (``"static"``: :math:`\varphi = 0`); and the output

    .. math::
        y = \operatorname{RPReLU}\Big(\sum_b g_b \odot \operatorname{Branch}_b(x)
            + \operatorname{CFB}(\operatorname{nearest}_s(x), C_{out})\Big)

    where the CFB bypass (BiDense) keeps real-valued information. Binary convs use the D0
    binarizers (RSign, learned-scale weights). A single ``bilinear`` or ``transposed`` branch is
    the plain ablation baseline. ``binary=False`` gives the same topology with FP convs.

    Cost per image with :math:`N_{out} = s^2 HW`: ``nearest``/``bilinear``
    :math:`9 C_{in} C_{out} N_{out}` BOPs each, ``transposed``/``pixelshuffle``
    :math:`C_{in} C_{out} N_{out}` BOPs each, :math:`\varphi` :math:`C_{in} n_b C_{out}` FP MACs;
    the rest is elementwise (:meth:`profile_ops`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        branches: Sequence[str] = UPSAMPLE_BRANCHES,
        gate: Literal["static", "conditioned"] = "static",
        binary: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
            raise ValueError(f"MultiBranchUpsample: scale must be an int >= 2, got {scale!r}")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(
                f"MultiBranchUpsample: channels must be >= 1, got {in_channels} -> {out_channels}"
            )
        branches = tuple(branches)
        if not branches or len(set(branches)) != len(branches):
            raise ValueError(f"MultiBranchUpsample: need distinct branches, got {branches}")
        bad = [b for b in branches if b not in UPSAMPLE_BRANCHES]
        if bad:
            raise ValueError(
                f"MultiBranchUpsample: unknown branch(es) {bad}; choose from {UPSAMPLE_BRANCHES}"
            )
        if gate not in ("static", "conditioned"):
            raise ValueError(
                f"MultiBranchUpsample: gate must be 'static' or 'conditioned', got {gate!r}"
            )
        self.in_channels, self.out_channels, self.scale = int(in_channels), int(out_channels), scale
        self.branch_names = branches
        self.gate_mode = gate
        self.binary = bool(binary)
        cin, cout, s = self.in_channels, self.out_channels, scale
        mods: dict[str, nn.Module] = {}
        for name in branches:
            if name in ("nearest", "bilinear"):
                mods[name] = nn.Sequential(_conv(cin, cout, 3, 1, 1, binary), nn.BatchNorm2d(cout))
            elif name == "transposed":
                conv: nn.Module = (
                    BinaryConvTranspose2d(
                        cin, cout, s, stride=s, act_binarizer=DING_ACT, weight_binarizer=DING_WEIGHT
                    )
                    if binary
                    else nn.ConvTranspose2d(cin, cout, s, stride=s, bias=False)
                )
                mods[name] = nn.Sequential(conv, nn.BatchNorm2d(cout))
            else:
                mods[name] = nn.Sequential(
                    _conv(cin, cout * s * s, 1, 1, 0, binary),
                    nn.BatchNorm2d(cout * s * s),
                    nn.PixelShuffle(s),
                )
        self.branches = nn.ModuleDict(mods)
        nb = len(branches)
        self.gate_logits = nn.Parameter(torch.zeros(nb, cout))
        self.gate_proj: nn.Conv2d | None = None
        if gate == "conditioned":
            self.gate_proj = nn.Conv2d(cin, nb * cout, 1, bias=False)
            nn.init.zeros_(self.gate_proj.weight)
        self.act = RPReLU(cout)

    def gates(self, x: Tensor) -> Tensor:
        """Gate values :math:`g` of shape (B, n_b, C_out) for input ``x``."""
        logits = self.gate_logits.unsqueeze(0).expand(x.shape[0], -1, -1)
        if self.gate_proj is not None:
            pooled = F.adaptive_avg_pool2d(x, 1)
            logits = logits + self.gate_proj(pooled).view(x.shape[0], *self.gate_logits.shape)
        return torch.sigmoid(logits)

    def branch_outputs(self, x: Tensor, near: Tensor | None = None) -> list[Tensor]:
        """Each branch's output (B, C_out, sH, sW), in ``branch_names`` order; ``near`` is the
        nearest xs input if already computed (it is shared with the bypass)."""
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if near is None:
            near = F.interpolate(x, size=size, mode="nearest")
        outs = []
        for name in self.branch_names:
            if name == "nearest":
                inp = near
            elif name == "bilinear":
                inp = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            else:
                inp = x
            outs.append(self.branches[name](inp))
        return outs

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MultiBranchUpsample expects input (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        g = self.gates(x)
        near = F.interpolate(x, size=size, mode="nearest")
        y = channel_adaptive_bypass(near, self.out_channels)
        for b, out in enumerate(self.branch_outputs(x, near)):
            y = y + g[:, b, :, None, None] * out
        return self.act(y)

    def profile_ops(self, input_shape: tuple[int, ...]) -> Counts:
        """Exact counts of one forward on ``input_shape`` (the module docstring's rule).

        Per image, :math:`N = HW`, :math:`N_{out} = s^2 N`, :math:`n_b` branches:
        nearest xs of the input once, shared by the ``nearest`` branch and the bypass
        (:math:`C_{in} N_{out}`); ``nearest`` :math:`9 C_{in} C_{out} N_{out}` MACs + RSign
        :math:`C_{in} N_{out}` + BN; ``bilinear`` the same + :math:`7 C_{in} N_{out}`;
        ``transposed`` :math:`C_{in} C_{out} N_{out}` MACs + RSign :math:`C_{in} N` + BN;
        ``pixelshuffle`` :math:`C_{in} C_{out} N_{out}` MACs + RSign :math:`C_{in} N` + BN on
        :math:`C_{out} N_{out}`; gates :math:`n_b C_{out}` sigmoids (+ GAP :math:`C_{in} N`, add
        :math:`n_b C_{out}` and :math:`C_{in} n_b C_{out}` FP MACs when conditioned); Hadamard
        products and sums :math:`2 n_b C_{out} N_{out}`; CFB; RPReLU :math:`3 C_{out} N_{out}`.
        """
        b, h, w = _check_shape(input_shape, self.in_channels, "MultiBranchUpsample")
        s, cin, cout, nb = self.scale, self.in_channels, self.out_channels, len(self.branch_names)
        n, n_out = h * w, h * w * s * s
        parts = [_counts(elementwise=EW_NEAREST * cin * n_out)]
        for name in self.branch_names:
            if name in ("nearest", "bilinear"):
                parts.append(_conv_counts(cin, cout, 3, h * s, w * s, h * s, w * s, 1, self.binary))
                if name == "bilinear":
                    parts.append(_counts(elementwise=EW_BILINEAR * cin * n_out))
            else:
                macs = cin * cout * n_out
                ew = (cin * n if self.binary else 0) + EW_BN * cout * n_out
                if self.binary:
                    parts.append(_counts(binary_macs=macs, elementwise=ew))
                else:
                    parts.append(_counts(fp_macs=macs, elementwise=ew))
        parts.append(_counts(elementwise=nb * cout))
        if self.gate_proj is not None:
            parts.append(_counts(fp_macs=cin * nb * cout, elementwise=cin * n + nb * cout))
        parts.append(_counts(elementwise=2 * nb * cout * n_out))
        parts.append(_counts(elementwise=cfb_cost(cin, cout) * n_out + EW_RPRELU * cout * n_out))
        one = _sum_counts(parts)
        return {k: v * b for k, v in one.items()}

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, scale={self.scale}, "
            f"branches={self.branch_names}, gate={self.gate_mode!r}, binary={self.binary}"
        )


# ---------------------------------------------------------------------------------------------
# D2: two-part binary attention
# ---------------------------------------------------------------------------------------------
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


def _pair(grid: int | Sequence[int]) -> tuple[int, int]:
    g = (int(grid), int(grid)) if isinstance(grid, int) else tuple(int(v) for v in grid)
    if len(g) != 2 or min(g) < 1:
        raise ValueError(f"grid must be a positive int or a pair, got {grid!r}")
    return g  # type: ignore[return-value]


def _proj(cin: int, cout: int, binary: bool) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, 1, 1, 0, binary), nn.BatchNorm2d(cout))


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

    :meth:`profile_ops` counts the whole module; :meth:`efficiency_counts` is the hook of
    :mod:`bidense.profile` (only this module's own functional ops, its children are counted by
    the profiler) and also reports the full-precision DANet reference of
    :func:`full_precision_attention_ops`.
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
        self.grid = _pair(grid)
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

    # -- counting ------------------------------------------------------------------------
    def _own_counts(self, b: int, h: int, w: int) -> Counts:
        """This module's functional ops (everything except the child modules)."""
        c, d, (gh, gw) = self.channels, self.key_channels, self.grid
        n, p = h * w, gh * gw
        pool = adaptive_pool_cost(h, w, self.grid)
        bin_, fp, ew = 0, 0, (d + c) * pool  # pooling of k and v
        # position part
        if self.binary:
            ew += d * n + d * p  # thresholds of q and k
            bin_ += n * p * d
        else:
            fp += n * p * d
        ew += n * p + EW_SOFTMAX * n * p  # scaling of S, softmax
        if self.binary_values:
            bin_ += n * p * c
            ew += 2 * n * p + c * p + n * p + 2 * c * n  # A_b (max, compare), sign v, count, /, a_v
        else:
            fp += n * p * c
        # channel part
        if self.binary:
            ew += c * n  # threshold of x
            bin_ += 2 * c * c * n
            ew += 2 * c * c + c * c + 2 * c * n  # A_b (max, compare), row count, /count and a_c
        else:
            fp += 2 * c * c * n
            ew += c * n  # a_c
        ew += (3 if self.channel_form == "danet" else 1) * c * c + EW_SOFTMAX * c * c
        ew += 4 * c * n  # merge: two scalings, two adds
        return _counts(bin_ * b, fp * b, ew * b)

    def profile_ops(self, input_shape: tuple[int, ...]) -> Counts:
        """Exact counts of one forward on ``input_shape`` (the module docstring's rule).

        Projections: q, k ``C d N`` and v ``C^2 N`` MACs (binary when ``binary``), each with its
        RSign (``C N``) and BN (2 per output element). Pooling of k and v (1 per element of each
        window). Position part: thresholds ``d N + d P``; similarity ``N P d`` BOPs; scaling and
        softmax ``4 N P``; aggregation ``N P C`` FP MACs (BOPs with ``binary_values``, plus
        ``A_b`` ``2 N P``, sign of v ``C P``, row count ``N P``, divide and scale ``2 C N``).
        Channel part: threshold ``C N``; ``E`` and aggregation ``C^2 N`` BOPs each; logits
        ``C^2`` (``3 C^2`` for the DANet form: row max, subtract, scale); softmax ``3 C^2``;
        ``A_b`` ``2 C^2``; row count ``C^2``; divide and scale ``2 C N``. Merge ``4 C N``. The
        out unit by :meth:`DingUnit.profile_ops`. Multiplied by the batch.
        """
        b, h, w = _check_shape(input_shape, self.channels, "BinaryDualAttention")
        c, d = self.channels, self.key_channels
        parts = [
            _conv_counts(c, d, 1, h, w, h, w, b, self.binary),
            _conv_counts(c, d, 1, h, w, h, w, b, self.binary),
            _conv_counts(c, c, 1, h, w, h, w, b, self.binary),
            self._own_counts(b, h, w),
        ]
        if self.out_unit is not None:
            parts.append(self.out_unit.profile_ops((b, c, h, w)))
        return _sum_counts(parts)

    def efficiency_counts(self, args: tuple[Any, ...], output: Any) -> dict[str, int]:
        """Hook of :mod:`bidense.profile`: this module's own functional ops for the traced call
        (children such as the projections are counted by the profiler itself), plus
        ``reference_fp_macs``, the FP32 DANet PAM + CAM MACs at the same C and N."""
        x = args[0]
        b, _, h, w = (int(s) for s in x.shape)
        out: dict[str, int] = dict(self._own_counts(b, h, w))
        ref = full_precision_attention_ops(self.channels, h, w, reduction=self.reduction)
        out["reference_fp_macs"] = int(ref["sa_ops"]) * b
        return out

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

    def profile_ops(self, input_shape: tuple[int, ...]) -> Counts:
        """Exact counts: projections ``(2 d + C) C N`` FP MACs + biases ``(2 d + C) N``;
        matmuls ``N^2 d + N^2 C + 2 C^2 N`` FP MACs; softmax ``3 N^2 + 3 C^2``; CAM row max and
        subtraction ``2 C^2``; merge ``4 C N``. Multiplied by the batch."""
        b, h, w = _check_shape(input_shape, self.channels, "FullPrecisionDualAttention")
        c, d, n = self.channels, self.key_channels, h * w
        ref = full_precision_attention_ops(c, h, w, reduction=self.reduction)
        fp = (2 * d + c) * c * n + ref["sa_ops"]
        ew = (2 * d + c) * n + EW_SOFTMAX * (n * n + c * c) + 2 * c * c + 4 * c * n
        return _counts(0, fp * b, ew * b)

    def extra_repr(self) -> str:
        return f"{self.channels}, d={self.key_channels}"


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
    r"""SA-OPs of :class:`BinaryDualAttention` (ding2024.md D2): OPs = BOPs/64 + FP MACs of the
    four matmuls only (projections are ordinary conv rows). Per image.

    ``similarity`` :math:`NPd/64`; ``aggregation`` :math:`NPC` (or :math:`NPC/64` with
    ``binary_values``); ``channel_similarity`` and ``channel_aggregation`` :math:`C^2 N / 64`
    each; ``sa_ops`` the sum; ``softmax_exps`` :math:`NP + C^2`. Example: C = 128, 64x128, grid
    8x8 gives 131,072 + 67,108,864 + 2,097,152 + 2,097,152 = 71,434,240.
    """
    c, n = int(channels), int(height) * int(width)
    d = max(1, c // int(reduction))
    gh, gw = _pair(grid)
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
