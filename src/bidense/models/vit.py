"""ViT in the DINOv2 layout (Oquab et al., "DINOv2", 2023), fp32 or BiViT-style binary.

Layout (module names as DINOv2): ``patch_embed.proj`` (conv p x p / p), ``cls_token``,
``pos_embed`` for a ``img_size`` grid (518 px -> 37 x 37 for ViT-S/14), ``blocks.i`` = pre-norm
``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))`` with LayerScale (init 1.0,
bidense-method.md §9) and ``norm``. The position embedding is interpolated bicubically to the
input grid with DINOv2's offset: scale factor ``(g + 0.1) / M`` for a grid side ``g`` and a
stored side ``M``.

The input is resized bilinearly to ``(floor(H/2p)*2p, floor(W/2p)*2p)`` (476 for 480 with p = 14)
so that the patch grid is even (§9). ``forward`` returns the last 4 blocks' outputs after the
final LayerNorm, cls token dropped, as NCHW maps (B, C, H/p, W/p).

Binary variant (every method except fp32; BiViT, He et al., ICCV 2023, as in the BiDense
reference, §9):

* qkv, proj: ``W_hat = lambda * sign(W - mean_row W)``, learnable per-row lambda initialised at
  the first forward to mean|W_row| (``learned_scale``); activations sign with clip-STE; bias kept.
* fc1, fc2: ``W_hat = mean|W_row| * sign(W - mean_row W)`` (``centered_mean_abs``); activations
  sign with clip-STE; bias on; GELU between.
* Attention: ``q, k, v = sign(qkv)`` (clip-STE), ``S = q k^T / sqrt(d)``, attention dropout,
  ``A_b = 1[softmax(S) >= 0.25 * max_row softmax(S)]`` with the softmax's gradient passed
  straight through, ``out = A_b v`` (no renormalisation).
* Binary weights are initialised U(-0.015, 0.015). Patch embedding, tokens, LayerNorms and
  LayerScales stay FP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bidense.binarize import get_activation_binarizer
from bidense.nn import BinaryLinear

from .methods import FP32, MethodSpec

SAB_FRACTION = 0.25


def softmax_aware_binarize(scores: Tensor, fraction: float = SAB_FRACTION) -> Tensor:
    """BiViT Softmax-aware Binarization (He et al., ICCV 2023).

    ``A_b = 1[p >= fraction * max_row p]`` with ``p = softmax(scores, -1)``; forward A_b,
    backward the gradient of ``p`` (straight-through).
    """
    p = scores.softmax(dim=-1)
    hard = (p >= fraction * p.amax(dim=-1, keepdim=True)).to(p.dtype)
    return p + (hard - p).detach()


class LayerScale(nn.Module):
    """Per-channel learnable scale ``gamma * x`` (CaiT/DINOv2)."""

    def __init__(self, dim: int, init_values: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def _binary_linear(cin: int, cout: int, weight: str) -> nn.Module:
    layer = BinaryLinear(cin, cout, bias=True, act_binarizer="sign", weight_binarizer=weight)
    nn.init.uniform_(layer.weight, -0.015, 0.015)
    return layer


class Attention(nn.Module):
    """Multi-head self-attention; FP softmax attention or BiViT binary attention."""

    def __init__(
        self, dim: int, num_heads: int, binary: bool = False, attn_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.binary = binary
        if binary:
            self.qkv = _binary_linear(dim, 3 * dim, "learned_scale")
            self.proj = _binary_linear(dim, dim, "learned_scale")
            self.qkv_binarizer = get_activation_binarizer("sign", channel_dim=-1)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x)
        if self.binary:
            qkv = self.qkv_binarizer(qkv)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        if self.binary:
            a = self.attn_drop(s)
            a = softmax_aware_binarize(a)
        else:
            a = self.attn_drop(s.softmax(dim=-1))
        out = (a @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (binary: centred mean|W| weights, sign activations)."""

    def __init__(self, dim: int, hidden: int, binary: bool = False) -> None:
        super().__init__()
        if binary:
            self.fc1 = _binary_linear(dim, hidden, "centered_mean_abs")
            self.fc2 = _binary_linear(hidden, dim, "centered_mean_abs")
        else:
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """DINOv2 pre-norm transformer block with LayerScale."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, binary: bool, ls_init: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, binary)
        self.ls1 = LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), binary)
        self.ls2 = LayerScale(dim, ls_init)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens (FP conv)."""

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class VisionTransformer(nn.Module):
    """DINOv2-layout ViT returning the last ``n_out`` block outputs as NCHW feature maps.

    Args:
        img_size: size the position embedding is stored for (518 -> 37 x 37 for p = 14).
        patch_size: patch side p.
        embed_dim, depth, num_heads, mlp_ratio: transformer shape (ViT-S: 384, 12, 6, 4).
        method: the method's spec: fp32, or any binary method (BiViT-style binarization,
            module docstring).
        ls_init: LayerScale init (1.0 as the reference).
        n_out: number of final blocks returned (4).
    """

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        method: MethodSpec = FP32,
        in_chans: int = 3,
        ls_init: float = 1.0,
        n_out: int = 4,
    ) -> None:
        super().__init__()
        if n_out > depth:
            raise ValueError(f"n_out={n_out} exceeds depth={depth}")
        self.method = method.name
        self.patch_size = patch_size
        self.n_out = n_out
        self.embed_dim = embed_dim
        self.out_channels = [embed_dim] * n_out
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, method.is_binary, ls_init) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        if not method.is_binary:
            for m in self.blocks.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, gh: int, gw: int) -> Tensor:
        """Position embedding for a ``gh x gw`` grid (bicubic, DINOv2 offset 0.1)."""
        pos = self.pos_embed
        m = int(math.isqrt(pos.shape[1] - 1))
        if gh == m and gw == m:
            return pos
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        patch_pos = patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos.float(),
            scale_factor=((gh + 0.1) / m, (gw + 0.1) / m),
            mode="bicubic",
            align_corners=False,
        )
        if patch_pos.shape[-2:] != (gh, gw):  # guard against float rounding of the offset trick
            raise RuntimeError(f"position embedding resized to {patch_pos.shape[-2:]}")
        patch_pos = patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the last ``n_out`` block outputs (after ``norm``) as (B, C, h, w) maps."""
        p2 = 2 * self.patch_size
        h, w = x.shape[-2:]
        th, tw = max(p2, (h // p2) * p2), max(p2, (w // p2) * p2)
        if (th, tw) != (h, w):
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
        t = self.patch_embed(x)
        b, c, gh, gw = t.shape
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], dim=1)
        t = t + self.interpolate_pos_encoding(gh, gw)
        outs = []
        first = len(self.blocks) - self.n_out
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i >= first:
                outs.append(self.norm(t))
        return [o[:, 1:].transpose(1, 2).reshape(b, c, gh, gw) for o in outs]
