"""Training options that make a binary model cheaper to deploy (our design, not the papers').

- ``dab_scale="shared"``: every DAB keeps its per-(sample, channel) threshold but uses one scale
  per sample (the mean over channels), so the scale factors out of a packed XNOR-popcount over all
  input channels and the runtime takes its fast path (bidense-method.md §3, "Deployment").
- ``dab_scale="group"`` (with ``dab_group=G``, default 64): one scale per sample and per group
  of G consecutive input channels (the mean over the group); with G a multiple of the 64-channel
  packing word the packed conv stays exact with one multiply-add per word.
- ``pad_mode="one"``: binary convs pad with a +1 bit instead of 0, so the border stays binary and
  needs no correction in a packed kernel (LCE/OpenVINO "one-padding").

Set them before training: they change the function the network computes.
"""

from __future__ import annotations

from torch import nn

from bidense.binarize import DAB
from bidense.binarize.functional import DAB_SCALES
from bidense.nn.binary import PAD_MODES, BinaryConv2d


def configure_deployment(
    model: nn.Module,
    dab_scale: str | None = None,
    pad_mode: str | None = None,
    dab_group: int | None = None,
) -> dict[str, int]:
    """Apply the options in place; returns how many DABs / convs were changed.

    ``dab_group`` sets every DAB's group size (used by ``scale="group"``; any positive int for
    training, a multiple of 64 for the packed runtime path).
    """
    if dab_scale not in (None, *DAB_SCALES):
        raise ValueError(f"dab_scale must be one of {DAB_SCALES}, got {dab_scale!r}")
    if dab_group is not None and (
        isinstance(dab_group, bool) or not isinstance(dab_group, int) or dab_group < 1
    ):
        raise ValueError(f"dab_group must be a positive int, got {dab_group!r}")
    if pad_mode not in (None, *PAD_MODES):
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    changed = {"dab": 0, "conv": 0}
    for module in model.modules():
        if (dab_scale is not None or dab_group is not None) and isinstance(module, DAB):
            if dab_scale is not None:
                module.scale = dab_scale
            if dab_group is not None:
                module.group = dab_group
            changed["dab"] += 1
        if (
            pad_mode is not None
            and isinstance(module, BinaryConv2d)
            and getattr(module.act_binarizer, "bits", 32) == 1
        ):
            module.pad_mode = pad_mode
            changed["conv"] += 1
    return changed
