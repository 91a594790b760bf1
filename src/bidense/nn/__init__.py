"""Binary layers for dense prediction (sits on :mod:`bidense.binarize`).

- :class:`BinaryConv2d`, :class:`BinaryConvTranspose2d`, :class:`BinaryLinear`: ops on
  binarized activations and weights, binarizers by registry name or module.
- :func:`channel_adaptive_bypass` (CFB) and :func:`cfb_matrix`: BiDense's parameter-free
  channel map.
- :class:`BiDenseConv2d`, :class:`BiDenseConvTranspose2d`, :class:`BiDenseDown`,
  :class:`BiDenseUp`, :class:`BiDenseTransition`, :class:`BiDenseLinear`: BiDense blocks.
- :class:`LearnableBias`, :class:`RPReLU`, :class:`Maxout`: FP non-linearities between blocks.
- :class:`DingUnit` (``units``): the ``ding`` method's binary unit (after Ding et al. 2024).
- :class:`MultiBranchUpsample` (``upsample``): gated parallel binary upsampling branches
  (:data:`UPSAMPLE_BRANCHES`).
- :class:`BinaryDualAttention` (``attention``): two-part binary position + channel attention,
  :class:`FullPrecisionDualAttention` its DANet reference, :func:`hard_row_threshold`.

Op counts of these layers live in :mod:`bidense.profile` (``module_ops``); nn never imports it.
"""

from .activations import LearnableBias, Maxout, RPReLU
from .attention import BinaryDualAttention, FullPrecisionDualAttention, hard_row_threshold
from .bidense import (
    BiDenseConv2d,
    BiDenseConvTranspose2d,
    BiDenseDown,
    BiDenseLinear,
    BiDenseTransition,
    BiDenseUp,
)
from .binary import LATENT_INIT_STD, BinaryConv2d, BinaryConvTranspose2d, BinaryLinear
from .bypass import (
    add_channel_adaptive_bypass,
    cfb_matrix,
    channel_adaptive_bypass,
    channel_adaptive_bypass_groups,
)
from .units import DingUnit
from .upsample import UPSAMPLE_BRANCHES, MultiBranchUpsample

__all__ = [
    "add_channel_adaptive_bypass",
    "LATENT_INIT_STD",
    "BiDenseConv2d",
    "BiDenseConvTranspose2d",
    "BiDenseDown",
    "BiDenseLinear",
    "BiDenseTransition",
    "BiDenseUp",
    "BinaryConv2d",
    "BinaryConvTranspose2d",
    "BinaryLinear",
    "LearnableBias",
    "Maxout",
    "RPReLU",
    "cfb_matrix",
    "channel_adaptive_bypass",
    "channel_adaptive_bypass_groups",
    "UPSAMPLE_BRANCHES",
    "BinaryDualAttention",
    "DingUnit",
    "FullPrecisionDualAttention",
    "MultiBranchUpsample",
    "hard_row_threshold",
]
