"""Full-precision per-channel non-linearities used between binary blocks.

All take ``channel_dim`` (1 for NCHW, -1 for tokens (B, N, C)) and keep one parameter per channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LearnableBias", "RPReLU", "Maxout"]


class _PerChannel(nn.Module):
    def __init__(self, channels: int, channel_dim: int) -> None:
        super().__init__()
        if int(channels) < 1:
            raise ValueError(f"{type(self).__name__} needs channels >= 1, got {channels}")
        self.channels = int(channels)
        self.channel_dim = int(channel_dim)

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        if x.dim() == 0 or not -x.dim() <= self.channel_dim < x.dim():
            raise ValueError(
                f"{type(self).__name__}: channel_dim={self.channel_dim} is out of range for a "
                f"{x.dim()}-D input"
            )
        if x.shape[self.channel_dim] != self.channels:
            raise ValueError(
                f"{type(self).__name__}: expected {self.channels} channels at dim "
                f"{self.channel_dim}, got input of shape {tuple(x.shape)}"
            )
        shape = [1] * x.dim()
        shape[self.channel_dim] = self.channels
        return p.view(shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, channel_dim={self.channel_dim}"


class LearnableBias(_PerChannel):
    r"""Learnable per-channel shift :math:`y = x + b_c`, :math:`b` initialised to 0.

    The ``LearnableBias`` of ReActNet (Liu et al., ECCV 2020) as used by BiDense (Yin et al.,
    arXiv 2411.10346) between binary blocks.
    """

    def __init__(self, channels: int, channel_dim: int = 1) -> None:
        super().__init__(channels, channel_dim)
        self.bias = nn.Parameter(torch.zeros(self.channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self._view(self.bias, x)


class RPReLU(_PerChannel):
    r"""ReActNet's RPReLU (Liu et al., *ReActNet*, ECCV 2020).

    .. math::
        f(x) = \begin{cases} x - \gamma_c + \zeta_c & x > \gamma_c \\
        \beta_c (x - \gamma_c) + \zeta_c & x \le \gamma_c \end{cases}

    i.e. :math:`\operatorname{PReLU}_\beta(x - \gamma) + \zeta`, with learnable per-channel
    :math:`\gamma` (init 0), :math:`\beta` (init 0.25) and :math:`\zeta` (init 0).
    ``zeta=False`` drops :math:`\zeta`, which is the LearnableBias + PReLU pair the BiDense
    reference uses inside its blocks (``gamma = -bias``).
    """

    def __init__(self, channels: int, zeta: bool = True, channel_dim: int = 1) -> None:
        super().__init__(channels, channel_dim)
        self.gamma = nn.Parameter(torch.zeros(self.channels))
        self.beta = nn.Parameter(torch.full((self.channels,), 0.25))
        self.zeta = nn.Parameter(torch.zeros(self.channels)) if zeta else None

    def forward(self, x: Tensor) -> Tensor:
        s = x - self._view(self.gamma, x)
        if self.channel_dim % x.dim() == 1 and x.dim() >= 2:
            # F.prelu (channel dim 1) is one kernel with a fused backward; it saves its input,
            # not its output, so zeta can be added in place
            y = F.prelu(s, self.beta)
            return y if self.zeta is None else y.add_(self._view(self.zeta, x))
        y = torch.where(s > 0, s, self._view(self.beta, x) * s)
        if self.zeta is not None:
            y = y + self._view(self.zeta, x)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, zeta={self.zeta is not None}"


class Maxout(_PerChannel):
    r"""AdaBin's Maxout non-linearity (Tu et al., *AdaBin*, ECCV 2022).

    :math:`f(x) = \gamma^+_c \operatorname{ReLU}(x) - \gamma^-_c \operatorname{ReLU}(-x)`, with
    learnable per-channel :math:`\gamma^+` (init 1) and :math:`\gamma^-` (init 0.25), so it starts
    as a PReLU with slope 0.25.
    """

    def __init__(self, channels: int, channel_dim: int = 1) -> None:
        super().__init__(channels, channel_dim)
        self.pos_scale = nn.Parameter(torch.ones(self.channels))
        self.neg_scale = nn.Parameter(torch.full((self.channels,), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        return self._view(self.pos_scale, x) * torch.relu(x) - self._view(
            self.neg_scale, x
        ) * torch.relu(-x)
