"""ConvNeXt backbone in plain torch, one file for every binarization method.

Liu et al., "A ConvNet for the 2020s", CVPR 2022. Block (fp32):
``x + gamma * pw2(GELU(pw1(LN(dw7x7(x)))))`` with LayerScale ``gamma`` (init 1e-6).

Per-method layouts (bidense-method.md §8, §10; baselines.md "Reference CNN skeleton"):

* ``fp32``: the original LN ConvNeXt (stem conv4x4/4 + LN, LN + conv2x2/2 downsampling, LN,
  GELU, LayerScale, block residual). No final norm/head (they are unused by dense decoders).
* baselines: stem conv4x4/4 + BN (FP); block ``y = x + BN(dw7x7(x))``,
  ``z = BN(pw2(act(BN(pw1(y)))))``, ``out = x + z`` (binary convs); transition binary
  conv k2s2 + BN without shortcut. BiSRNet (``MethodSpec.transition == "bisr"``) uses its own
  Down module (AvgPool2 -> two BiSR convs with residuals -> concat, Cai et al., NeurIPS 2023).
* ``bidense``: stem FP; block dw = BiDenseConv2d(k7, groups=d), pw1 = BiDenseConv2d(d->4d),
  LearnableBias -> PReLU, pw2 = BiDenseConv2d(4d->d), no block residual (the CFB inside every
  conv is the shortcut); transition ``BiDenseTransition`` (k2s2 conv + CFB(AvgPool2(x))). The
  ablation ``bidense_no_dab`` has this layout with RSign blocks; ``bidense_no_cfb`` has the
  baseline layout with DAB convs (:data:`~bidense.models.methods.ABLATION_SPECS`).

The forward returns the four stage outputs at strides 4/8/16/32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bidense import nn as bnn

from .methods import FP32, MethodSpec

CONVNEXT_PRESETS: dict[str, tuple[list[int], list[int]]] = {
    # CPU presets for demos and tests (ecosystem.md §2: sizes a 2-core CPU trains in minutes)
    "micro": ([16, 32, 64, 128], [1, 1, 3, 1]),
    "mini": ([32, 64, 128, 256], [2, 2, 2, 2]),
    "atto": ([40, 80, 160, 320], [2, 2, 6, 2]),
    "femto": ([48, 96, 192, 384], [2, 2, 6, 2]),
    "pico": ([64, 128, 256, 512], [2, 2, 6, 2]),
    "nano": ([80, 160, 320, 640], [2, 2, 8, 2]),
    "t": ([96, 192, 384, 768], [3, 3, 9, 3]),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW tensor (ConvNeXt "channels_first" LN)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlockFP(nn.Module):
    """Original ConvNeXt block: ``x + gamma * Linear(GELU(Linear(LN(dwconv(x)))))``."""

    def __init__(self, dim: int, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtBlockBaseline(nn.Module):
    """BN-ConvNeXt block of the reference baselines (binary convs, block residual)."""

    def __init__(self, dim: int, spec: MethodSpec) -> None:
        super().__init__()
        self.dw = spec.unit(dim, dim, 7, padding=3, groups=dim)
        self.pw1 = spec.unit(dim, 4 * dim, 1)
        self.act = spec.nonlinearity(4 * dim, "block")
        self.pw2 = spec.unit(4 * dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = x + self.dw(x)
        return x + self.pw2(self.act(self.pw1(y)))


class ConvNeXtBlockBiDense(nn.Module):
    """BiDense ConvNeXt block (bidense-method.md §8): no block residual, CFB in every conv."""

    def __init__(self, dim: int, spec: MethodSpec) -> None:
        super().__init__()
        self.dw = spec.unit(dim, dim, 7, padding=3, groups=dim)
        self.pw1 = spec.unit(dim, 4 * dim, 1)
        self.act = spec.nonlinearity(4 * dim, "block")
        self.pw2 = spec.unit(4 * dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw2(self.act(self.pw1(self.dw(x))))


class BiSRDown(nn.Module):
    """BiSRNet Down (C -> 2C, /2): AvgPool2 -> two parallel BiSR convs with residuals -> concat.

    Cai et al., "Binarized Spectral Compressive Imaging", NeurIPS 2023. Each branch is
    ``BN(BinConv3x3(p)) + p`` with ``p = AvgPool2d(2)(x)`` (BN as in the reference skeleton).
    """

    def __init__(self, dim: int, out_dim: int, spec: MethodSpec) -> None:
        super().__init__()
        if out_dim != 2 * dim:
            raise ValueError(f"BiSRDown needs out_dim == 2*dim, got {dim}->{out_dim}")
        self.pool = nn.AvgPool2d(2)
        self.branch1 = spec.unit(dim, dim, 3, padding=1)
        self.branch2 = spec.unit(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        p = self.pool(x)
        return torch.cat([self.branch1(p) + p, self.branch2(p) + p], dim=1)


#: Stage transitions by :attr:`MethodSpec.transition`: ``builder(c_in, c_out, spec)``.
TRANSITIONS: dict[str, Callable[[int, int, MethodSpec], nn.Module]] = {
    "fp32": lambda cin, cout, spec: nn.Sequential(
        LayerNorm2d(cin, eps=1e-6), nn.Conv2d(cin, cout, 2, stride=2)
    ),
    "unit": lambda cin, cout, spec: spec.unit(cin, cout, 2, stride=2, bypass=False),
    "bisr": BiSRDown,
    "bidense": lambda cin, cout, spec: bnn.BiDenseTransition(cin, cout, act_binarizer=spec.act),
}

#: Blocks by :attr:`MethodSpec.layout`: ``builder(dim, spec, layer_scale_init)``.
BLOCKS: dict[str, Callable[[int, MethodSpec, float], nn.Module]] = {
    "fp32": lambda dim, spec, ls_init: ConvNeXtBlockFP(dim, ls_init),
    "baseline": lambda dim, spec, ls_init: ConvNeXtBlockBaseline(dim, spec),
    "bidense": lambda dim, spec, ls_init: ConvNeXtBlockBiDense(dim, spec),
}


class ConvNeXt(nn.Module):
    """ConvNeXt feature extractor for any method; returns stage outputs C1..C4.

    Args:
        dims: channel widths of the four stages.
        depths: number of blocks per stage.
        method: the method's spec (blocks by ``layout``, transitions by ``transition``).
        in_chans: input channels (3).
        layer_scale_init: fp32 LayerScale init (1e-6, ConvNeXt paper).
    """

    def __init__(
        self,
        dims: list[int] | tuple[int, ...] = (96, 192, 384, 768),
        depths: list[int] | tuple[int, ...] = (3, 3, 9, 3),
        method: MethodSpec = FP32,
        in_chans: int = 3,
        layer_scale_init: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(dims) != 4 or len(depths) != 4:
            raise ValueError("ConvNeXt needs 4 dims and 4 depths")
        self.method = method.name
        self.dims = list(dims)
        self.out_channels = list(dims)
        fp = not method.is_binary
        # Stem is full precision for every method; BN replaces LN in the binary layouts.
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], 4, stride=4, bias=True),
            LayerNorm2d(dims[0], eps=1e-6) if fp else nn.BatchNorm2d(dims[0]),
        )
        transition = TRANSITIONS[method.transition]
        self.downsample = nn.ModuleList(
            transition(dims[i], dims[i + 1], method) for i in range(3)
        )
        block = BLOCKS[method.layout]
        self.stages = nn.ModuleList(
            nn.Sequential(*(block(dim, method, layer_scale_init) for _ in range(depth)))
            for dim, depth in zip(dims, depths)
        )
        if fp:
            self.apply(self._init_fp)

    @staticmethod
    def _init_fp(m: nn.Module) -> None:
        # ConvNeXt paper init: trunc_normal(std=0.02) weights, zero biases.
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return ``[C1, C2, C3, C4]`` at strides 4, 8, 16, 32."""
        feats = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsample[i - 1](x)
            x = stage(x)
            feats.append(x)
        return feats


def convnext(preset: str, method: MethodSpec = FP32, **kw: object) -> ConvNeXt:
    """ConvNeXt by preset name: ``t``, ``atto``, ``femto``, ``pico``, ``nano`` (published), and
    the CPU presets ``micro`` and ``mini``."""
    if preset not in CONVNEXT_PRESETS:
        raise ValueError(f"unknown ConvNeXt preset {preset!r}; choose {sorted(CONVNEXT_PRESETS)}")
    dims, depths = CONVNEXT_PRESETS[preset]
    return ConvNeXt(dims, depths, method=method, **kw)  # type: ignore[arg-type]
