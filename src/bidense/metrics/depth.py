"""Monocular-depth metrics: the nine standard error/accuracy measures, per image then averaged."""

from __future__ import annotations

from typing import Any

import torch

from .base import Metric, as_tensor, split_batch

__all__ = ["DepthMetric", "DEPTH_KEYS", "crop_mask", "crop_bounds"]

DEPTH_KEYS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
_CROPS = (None, "eigen", "garg", "eigen_kitti")


def crop_bounds(height: int, width: int, crop: str | tuple[int, int, int, int] | None) -> tuple[
    int, int, int, int
]:
    """Return ``(top, bottom, left, right)`` (Python slice bounds) of an evaluation crop.

    * ``None``: the whole image.
    * ``"eigen"`` (NYUv2, Eigen et al. 2014; BTS/AdaBins code): rows 45:471, cols 41:601. Defined on
      480x640 images only; other sizes raise ``ValueError``.
    * ``"garg"`` (KITTI, Garg et al. 2016): rows int(0.40810811 H):int(0.99189189 H),
      cols int(0.03594771 W):int(0.96405229 W), applied to the KB-cropped 352x1216 map.
    * ``"eigen_kitti"`` (the unused KITTI "Eigen crop" of the BTS/BiDense code):
      rows int(0.3324324 H):int(0.91351351 H), cols int(0.0359477 W):int(0.96405229 W).
    * a 4-tuple ``(top, bottom, left, right)`` of absolute slice bounds.
    """
    h, w = int(height), int(width)
    if crop is None:
        return 0, h, 0, w
    if isinstance(crop, tuple):
        if len(crop) != 4:
            raise ValueError(f"crop tuple must be (top, bottom, left, right), got {crop}")
        top, bottom, left, right = (int(v) for v in crop)
        if not (0 <= top < bottom <= h and 0 <= left < right <= w):
            raise ValueError(f"crop {crop} does not fit a {h}x{w} depth map")
        return top, bottom, left, right
    if crop == "eigen":
        if (h, w) != (480, 640):
            raise ValueError(f"the NYU 'eigen' crop is defined on 480x640 maps, got {h}x{w}")
        return 45, 471, 41, 601
    if crop == "garg":
        return int(0.40810811 * h), int(0.99189189 * h), int(0.03594771 * w), int(0.96405229 * w)
    if crop == "eigen_kitti":
        return int(0.3324324 * h), int(0.91351351 * h), int(0.0359477 * w), int(0.96405229 * w)
    raise ValueError(
        f"crop must be one of {_CROPS} or a (top, bottom, left, right) tuple, got {crop!r}"
    )


def crop_mask(
    height: int, width: int, crop: str | tuple[int, int, int, int] | None
) -> torch.Tensor:
    """Boolean (H, W) mask that is True inside :func:`crop_bounds`."""
    top, bottom, left, right = crop_bounds(height, width, crop)
    mask = torch.zeros(int(height), int(width), dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


class DepthMetric(Metric):
    """The nine depth metrics (Eigen et al. 2014; BTS, Lee et al. 2019), per image then averaged.

    For each image, predictions are first sanitised: NaN -> ``min_depth``, +inf -> ``max_depth``,
    then clamped to ``[min_depth, max_depth]``. Valid pixels satisfy
    ``min_depth < gt < max_depth`` inside the crop (so NaN/inf ground truth is never valid). Over
    the valid pixels of one image, with p the prediction and g the ground truth::

        d_k      = mean[max(g/p, p/g) < 1.25^k],  k = 1, 2, 3
        abs_rel  = mean |g - p| / g
        sq_rel   = mean (g - p)^2 / g
        rmse     = sqrt(mean (g - p)^2)
        rmse_log = sqrt(mean (ln g - ln p)^2)
        log10    = mean |log10 g - log10 p|
        silog    = 100 * sqrt(mean e^2 - (mean e)^2),  e = ln p - ln g

    The reported value of each metric is its mean over the images that have at least one valid
    pixel; images without one are skipped and counted in ``skipped``. All arithmetic is float64.

    Args:
        min_depth: lower bound of the evaluated range (NYU 1e-3, KITTI 1e-3). Must be > 0.
        max_depth: upper bound (NYU 10, KITTI 80).
        crop: ``None``, ``"eigen"``, ``"garg"``, ``"eigen_kitti"`` or a (top, bottom, left, right)
            tuple; see :func:`crop_bounds`.
    """

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        crop: str | tuple[int, int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if not (0 < float(min_depth) < float(max_depth)):
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        if not (crop in _CROPS or isinstance(crop, tuple)):
            raise ValueError(f"crop must be one of {_CROPS} or a tuple, got {crop!r}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.crop = crop
        self._add_state("sums", torch.zeros(len(DEPTH_KEYS), dtype=torch.float64))
        self._add_state("count", torch.zeros((), dtype=torch.int64))
        self._add_state("skipped", torch.zeros((), dtype=torch.int64))

    def _config(self) -> dict[str, Any]:
        return {"min_depth": self.min_depth, "max_depth": self.max_depth, "crop": self.crop}

    def per_image(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor | None:
        """The nine metrics (float64, order of ``DEPTH_KEYS``) of one (H, W) image, or ``None``
        when it has no valid pixel."""
        p = pred.double()
        g = gt.double()
        p = torch.nan_to_num(p, nan=self.min_depth, posinf=self.max_depth, neginf=self.min_depth)
        p = p.clamp(self.min_depth, self.max_depth)
        valid = (g > self.min_depth) & (g < self.max_depth)
        valid &= crop_mask(g.shape[0], g.shape[1], self.crop).to(g.device)
        if not bool(valid.any()):
            return None
        p = p[valid]
        g = g[valid]
        ratio = torch.maximum(g / p, p / g)
        diff = g - p
        log_diff = torch.log(p) - torch.log(g)
        var = (log_diff**2).mean() - log_diff.mean() ** 2
        return torch.stack(
            [
                (ratio < 1.25).double().mean(),
                (ratio < 1.25**2).double().mean(),
                (ratio < 1.25**3).double().mean(),
                (diff.abs() / g).mean(),
                (diff**2 / g).mean(),
                torch.sqrt((diff**2).mean()),
                torch.sqrt((log_diff**2).mean()),
                (torch.log10(g) - torch.log10(p)).abs().mean(),
                # Rounding can push the variance a hair below zero for a perfect prediction.
                100.0 * torch.sqrt(var.clamp_min(0.0)),
            ]
        )

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch of depth maps in metres: (H, W), (B, H, W) or (B, 1, H, W), same shape."""
        p = split_batch(as_tensor(pred, "pred"), "pred")
        g = split_batch(as_tensor(target, "target"), "target").to(p.device)
        if p.shape != g.shape:
            raise ValueError(
                f"pred shape {tuple(p.shape)} does not match target shape {tuple(g.shape)}"
            )
        if p.dtype == torch.bool or g.dtype == torch.bool:
            raise ValueError("depth maps must be numeric, got bool")
        sums = torch.zeros(len(DEPTH_KEYS), dtype=torch.float64)
        count = 0
        skipped = 0
        for i in range(p.shape[0]):
            m = self.per_image(p[i], g[i])
            if m is None:
                skipped += 1
            else:
                sums += m.cpu()
                count += 1
        self._add_to("sums", sums)
        self._add_to("count", torch.tensor(count))
        self._add_to("skipped", torch.tensor(skipped))

    def compute(self) -> dict[str, Any]:
        """Return the nine metrics (floats; NaN if no image was valid), ``count`` and ``skipped``.

        ``d1..d3``, ``abs_rel``, ``sq_rel``, ``log10`` are fractions/ratios, ``rmse`` is in metres,
        ``silog`` is the x100 convention.
        """
        n = int(self._state["count"])
        means = (self._state["sums"] / n).tolist() if n > 0 else [float("nan")] * len(DEPTH_KEYS)
        out: dict[str, Any] = dict(zip(DEPTH_KEYS, means))
        out["count"] = n
        out["skipped"] = int(self._state["skipped"])
        return out
