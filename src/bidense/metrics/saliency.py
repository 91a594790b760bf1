"""Salient-object-detection metrics, following the PySODMetrics conventions.

Per image (float64 numpy, the maps are small): MAE, an F-measure curve over 256 thresholds, the
adaptive F-measure, the weighted F-measure, the S-measure and the E-measure curve plus its
adaptive value. The state is the sum of these per-image values and curves, so it merges and
all-reduces by addition.

The weighted F-measure needs ``scipy.ndimage`` (the ``[data]`` extra) for its Euclidean distance
transform and Gaussian filter, exactly as PySODMetrics computes them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .base import Metric, as_tensor, split_batch

try:
    from scipy import ndimage
except ImportError:  # optional: only the weighted F-measure needs it
    ndimage = None

__all__ = ["SaliencyMetric", "s_measure", "e_measure", "f_measure", "weighted_f_measure"]

_EPS = np.finfo(np.float64).eps
_NBINS = 256
#: per-image scalars summed in the ``scalars`` state, in this order
_SCALAR_KEYS = ("mae", "adp_f", "s_measure", "adp_e", "wfm")


def _quantise(pred: np.ndarray) -> np.ndarray:
    """Map [0, 1] to the 256 levels 0..255 the way PySODMetrics does: ``uint8(pred * 255)``."""
    return np.clip(np.floor(pred * 255.0), 0, 255).astype(np.int64)


def f_measure(precision: np.ndarray, recall: np.ndarray, beta2: float = 0.3) -> np.ndarray:
    """F_beta = (1 + beta^2) P R / (beta^2 P + R), 0 where the denominator is 0
    (Achanta et al. 2009, beta^2 = 0.3)."""
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    num = (1.0 + beta2) * p * r
    den = beta2 * p + r
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def _pr_counts(tp: np.ndarray, pred_pos: np.ndarray, gt_pos: int) -> tuple[np.ndarray, np.ndarray]:
    precision = np.divide(
        tp, pred_pos, out=np.zeros_like(tp, dtype=np.float64), where=pred_pos != 0
    )
    recall = tp / gt_pos if gt_pos > 0 else np.zeros_like(tp, dtype=np.float64)
    return precision, recall


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """The structural similarity of one S-measure quadrant (Fan et al. 2017, eq. 5)."""
    n = pred.size
    if n == 0:
        return 0.0  # an empty quadrant has weight 0 anyway
    x = pred.mean()
    y = gt.mean()
    # The formula divides by N - 1; a 1-pixel quadrant has all sums 0, so any divisor gives 0.
    denom = max(n - 1, 1)
    sigma_x = ((pred - x) ** 2).sum() / denom
    sigma_y = ((gt - y) ** 2).sum() / denom
    sigma_xy = ((pred - x) * (gt - y)).sum() / denom
    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    if alpha != 0:
        return float(alpha / (beta + _EPS))
    if beta == 0:
        return 1.0
    return 0.0


def _s_object(pred: np.ndarray, mask: np.ndarray) -> float:
    values = pred[mask]
    x = values.mean()
    sigma = values.std(ddof=1) if values.size > 1 else 0.0
    return float(2 * x / (x**2 + 1 + sigma + _EPS))


def _centroid(gt: np.ndarray) -> tuple[int, int]:
    """1-based rounded centroid (x, y) of the foreground, as in the authors' Matlab code."""
    h, w = gt.shape
    if not gt.any():
        return int(np.round(w / 2)) + 1, int(np.round(h / 2)) + 1
    ys, xs = np.nonzero(gt)
    return int(np.round(xs.mean())) + 1, int(np.round(ys.mean())) + 1


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure S = alpha * S_object + (1 - alpha) * S_region (Fan et al., ICCV 2017).

    ``pred`` is a float map in [0, 1], ``gt`` a boolean mask of the same shape.

    * All-background GT: S = 1 - mean(pred). All-foreground GT: S = mean(pred).
    * S_object = u * O(pred * gt | fg) + (1 - u) * O((1 - pred) * (1 - gt) | bg), with u the
      foreground fraction and O(v) = 2 x / (x^2 + 1 + sigma_x) over the region's values
      (x mean, sigma_x sample standard deviation).
    * S_region splits both maps at the 1-based rounded GT centroid into four quadrants and sums
      their SSIM (``_ssim``) weighted by quadrant area.

    The result is clipped below at 0, as in the reference implementation.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    y = gt.mean()
    if y == 0:
        return float(1.0 - pred.mean())
    if y == 1:
        return float(pred.mean())
    gt_f = gt.astype(np.float64)
    u = y
    obj = u * _s_object(pred * gt_f, gt) + (1 - u) * _s_object((1 - pred) * (1 - gt_f), ~gt)
    h, w = gt.shape
    cx, cy = _centroid(gt)
    area = h * w
    w1 = cx * cy / area
    w2 = cy * (w - cx) / area
    w3 = (h - cy) * cx / area
    w4 = 1.0 - w1 - w2 - w3
    region = (
        w1 * _ssim(pred[:cy, :cx], gt_f[:cy, :cx])
        + w2 * _ssim(pred[:cy, cx:], gt_f[:cy, cx:])
        + w3 * _ssim(pred[cy:, :cx], gt_f[cy:, :cx])
        + w4 * _ssim(pred[cy:, cx:], gt_f[cy:, cx:])
    )
    return float(max(0.0, alpha * obj + (1 - alpha) * region))


def _enhanced_sum(
    fg_fg: np.ndarray, fg_bg: np.ndarray, gt_fg: int, size: int
) -> np.ndarray:
    """Sum of the enhanced alignment matrix for binary maps, from the four pixel counts.

    ``fg_fg``/``fg_bg`` count predicted-foreground pixels on GT foreground/background (arrays over
    thresholds). A binary map only takes two values, so the matrix takes four values, each
    weighted by how many pixels fall in that (pred, gt) cell.
    """
    fg_fg = np.asarray(fg_fg, dtype=np.float64)
    fg_bg = np.asarray(fg_bg, dtype=np.float64)
    pred_fg = fg_fg + fg_bg
    pred_bg = size - pred_fg
    if gt_fg == 0:
        return pred_bg
    if gt_fg == size:
        return pred_fg
    bg_fg = gt_fg - fg_fg
    bg_bg = pred_bg - bg_fg
    mean_pred = pred_fg / size
    mean_gt = gt_fg / size
    total = np.zeros_like(fg_fg)
    for count, a, b in (
        (fg_fg, 1 - mean_pred, 1 - mean_gt),
        (fg_bg, 1 - mean_pred, -mean_gt),
        (bg_fg, -mean_pred, 1 - mean_gt),
        (bg_bg, -mean_pred, -mean_gt),
    ):
        align = 2 * a * b / (a**2 + b**2 + _EPS)
        total = total + (align + 1) ** 2 / 4 * count
    return total


def e_measure(pred_binary: np.ndarray, gt: np.ndarray) -> float:
    """Enhanced-alignment measure of a binary map (Fan et al., IJCAI 2018).

    With phi(X) = X - mean(X) for the binary prediction and GT::

        xi   = 2 phi_GT * phi_FM / (phi_GT^2 + phi_FM^2)     (alignment matrix)
        E    = sum((1 + xi)^2 / 4) / (W H - 1)

    All-background GT: the enhanced matrix is 1 - FM per pixel; all-foreground GT: FM.
    """
    fm = np.asarray(pred_binary, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    size = gt.size
    total = _enhanced_sum(
        np.array([np.count_nonzero(fm & gt)]), np.array([np.count_nonzero(fm & ~gt)]),
        int(gt.sum()), size,
    )
    return float(total[0] / (size - 1 + _EPS))


def _matlab_gaussian(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """MATLAB's ``fspecial('gaussian', size, sigma)``: exp(-(x^2 + y^2) / (2 sigma^2)) on the
    centred ``size x size`` grid, values below eps * max set to 0, normalised to sum 1."""
    half = (size - 1) / 2
    y, x = np.ogrid[-half : half + 1, -half : half + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < _EPS * h.max()] = 0
    return h / h.sum()


_FBW_KERNEL = _matlab_gaussian(7, 5.0)


def weighted_f_measure(pred: np.ndarray, gt: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure F^w_beta (Margolin, Zelnik-Manor and Tal, CVPR 2014), as the authors'
    MATLAB code and PySODMetrics compute it.

    ``pred`` is a float map in [0, 1], ``gt`` a boolean mask of the same shape. With
    E = |pred - gt| and, for every pixel, d its Euclidean distance to the nearest foreground pixel
    (``scipy.ndimage.distance_transform_edt``, which also picks that pixel; ties follow scipy)::

        Et      = E on the foreground; on the background, E of the nearest foreground pixel
        EA      = Et filtered with K, the 7x7 Gaussian of sigma 5 (zero padding)
        E'      = min(E, EA) on the foreground, E on the background     (pixel dependency)
        B       = 1 on the foreground, 2 - exp(ln(0.5) / 5 * d) on the background (importance)
        Ew      = E' * B
        TPw     = |gt| - sum_fg Ew,   FPw = sum_bg Ew
        R^w     = 1 - mean_fg Ew,     P^w = TPw / (TPw + FPw + eps)
        F^w     = (1 + beta^2) R^w P^w / (R^w + beta^2 P^w + eps)

    beta^2 = 1 as in the paper. An all-background ground truth scores 0 (PySODMetrics).
    """
    if ndimage is None:
        raise ImportError("the weighted F-measure needs scipy: pip install 'bidense[data]'")
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    if not gt.any():
        return 0.0
    dist, (rows, cols) = ndimage.distance_transform_edt(~gt, return_indices=True)
    error = np.abs(pred - gt)
    error_t = error[rows, cols]  # the foreground maps onto itself
    error_a = ndimage.convolve(error_t, _FBW_KERNEL, mode="constant", cval=0.0)
    min_error = np.where(gt & (error_a < error), error_a, error)
    importance = np.where(gt, 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * dist))
    error_w = min_error * importance
    tp_w = gt.sum() - error_w[gt].sum()
    fp_w = error_w[~gt].sum()
    recall = 1.0 - error_w[gt].mean()
    precision = tp_w / (tp_w + fp_w + _EPS)
    return float((1.0 + beta2) * recall * precision / (recall + beta2 * precision + _EPS))


class SaliencyMetric(Metric):
    """MAE, max/mean/adaptive F (beta^2 = 0.3), weighted F, S- and E-measure, averaged over images.

    Input preparation (PySODMetrics): ``pred`` holds probabilities in [0, 1] (uint8 maps are read
    as /255); unless ``normalize=False`` each image is min-max normalised when it is not constant.
    ``target`` is bool, {0, 1}, float in [0, 1] (foreground = > 0.5) or a uint8 0..255 mask
    (foreground = > 128).

    Per image:

    * ``mae`` = mean |S - G|.
    * F-measure curve (Achanta et al. 2009, beta^2 = 0.3): the map is quantised to
      ``uint8(S * 255)`` and binarised at each threshold t = 0..255 (S_q >= t). ``max_f`` is the
      maximum and ``mean_f`` the mean of the image-averaged curve.
    * ``adp_f``: F of ``S >= min(2 mean(S), 1)`` (Achanta et al. 2009), averaged over images.
    * ``wfm``: the weighted F-measure (Margolin et al. 2014, beta^2 = 1) of the continuous map,
      see :func:`weighted_f_measure`, averaged over images.
    * ``s_measure`` (Fan et al. 2017, alpha = 0.5): see :func:`s_measure`.
    * E-measure (Fan et al. 2018): see :func:`e_measure`; the curve over the same 256 thresholds
      gives ``max_e`` and ``mean_e``, the adaptive threshold gives ``adp_e``. The key
      ``e_measure`` is **mean-E** (``mean_e``), the variant most SOD papers tabulate as E_xi^m.

    Args:
        beta2: beta^2 of the F-measure (not of ``wfm``, whose beta^2 is 1).
        alpha: S-measure balance between object and region terms.
        normalize: min-max normalise each non-constant prediction first.
        weighted_f: compute ``wfm`` (needs scipy). ``None``: when scipy is installed (with a
            warning otherwise); ``False``: skip it. ``wfm`` is NaN when it is not computed.
    """

    def __init__(self, beta2: float = 0.3, alpha: float = 0.5, normalize: bool = True,
                 weighted_f: bool | None = None) -> None:
        super().__init__()
        self.beta2 = float(beta2)
        self.alpha = float(alpha)
        self.normalize = bool(normalize)
        if weighted_f is None:
            weighted_f = ndimage is not None
            if not weighted_f:
                warnings.warn("SaliencyMetric: scipy is not installed, so the weighted "
                              "F-measure 'wfm' is NaN (pip install 'bidense[data]')", stacklevel=2)
        elif weighted_f and ndimage is None:
            raise ImportError("SaliencyMetric(weighted_f=True) needs scipy: "
                              "pip install 'bidense[data]'")
        self.weighted_f = bool(weighted_f)
        self._add_state("scalars", torch.zeros(len(_SCALAR_KEYS), dtype=torch.float64))
        self._add_state("f_curve", torch.zeros(_NBINS, dtype=torch.float64))
        self._add_state("e_curve", torch.zeros(_NBINS, dtype=torch.float64))
        self._add_state("count", torch.zeros((), dtype=torch.int64))

    def _config(self) -> dict[str, Any]:
        return {"beta2": self.beta2, "alpha": self.alpha, "normalize": self.normalize,
                "weighted_f": self.weighted_f}

    def _prepare(self, pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
        p = split_batch(as_tensor(pred, "pred"), "pred").cpu()
        t = split_batch(as_tensor(target, "target"), "target").cpu()
        if p.shape != t.shape:
            raise ValueError(
                f"pred shape {tuple(p.shape)} does not match target shape {tuple(t.shape)}"
            )
        if p.dtype == torch.uint8:
            pn = p.numpy().astype(np.float64) / 255.0
        else:
            pn = p.double().numpy()
            if not np.isfinite(pn).all():
                raise ValueError("pred: saliency map holds NaN or inf")
            if pn.size and (pn.min() < 0 or pn.max() > 1):
                raise ValueError(
                    f"pred: saliency probabilities must lie in [0, 1], got range "
                    f"[{pn.min():.4g}, {pn.max():.4g}] (apply a sigmoid to logits)"
                )
        if t.dtype == torch.bool:
            tn = t.numpy()
        elif t.dtype == torch.uint8:
            tn = t.numpy() > 128 if t.numel() and int(t.max()) > 1 else t.numpy() > 0
        else:
            tf = t.double().numpy()
            if tf.size and (not np.isfinite(tf).all() or tf.min() < 0 or tf.max() > 1):
                raise ValueError("target: saliency mask must be bool, uint8 or float in [0, 1]")
            tn = tf > 0.5
        return pn, tn

    def _image(self, s: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.normalize:
            lo, hi = s.min(), s.max()
            if hi != lo:
                s = (s - lo) / (hi - lo)
        size = g.size
        gt_fg = int(g.sum())
        mae = np.abs(s - g).mean()

        # Curves: histogram of quantised levels on fg / bg, reverse cumulative sum gives the
        # counts of S_q >= t for every t at once.
        q = _quantise(s)
        fg_hist = np.bincount(q[g], minlength=_NBINS)
        bg_hist = np.bincount(q[~g], minlength=_NBINS)
        tp = np.cumsum(fg_hist[::-1])[::-1].astype(np.float64)
        fp = np.cumsum(bg_hist[::-1])[::-1].astype(np.float64)
        prec, rec = _pr_counts(tp, tp + fp, gt_fg)
        f_curve = f_measure(prec, rec, self.beta2)
        e_curve = _enhanced_sum(tp, fp, gt_fg, size) / (size - 1 + _EPS)

        thr = min(2.0 * s.mean(), 1.0)
        b = s >= thr
        a_tp = np.array([np.count_nonzero(b & g)], dtype=np.float64)
        a_fp = np.array([np.count_nonzero(b & ~g)], dtype=np.float64)
        a_prec, a_rec = _pr_counts(a_tp, a_tp + a_fp, gt_fg)
        adp_f = f_measure(a_prec, a_rec, self.beta2)[0]
        adp_e = _enhanced_sum(a_tp, a_fp, gt_fg, size)[0] / (size - 1 + _EPS)

        sm = s_measure(s, g, self.alpha)
        wfm = weighted_f_measure(s, g) if self.weighted_f else 0.0
        return np.array([mae, adp_f, sm, adp_e, wfm]), f_curve, e_curve

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch of maps: (H, W), (B, H, W) or (B, 1, H, W), pred and target alike."""
        pn, tn = self._prepare(pred, target)
        scal = np.zeros(len(_SCALAR_KEYS))
        fc = np.zeros(_NBINS)
        ec = np.zeros(_NBINS)
        for s, g in zip(pn, tn):
            a, f, e = self._image(s, g)
            scal += a
            fc += f
            ec += e
        self._add_to("scalars", torch.from_numpy(scal))
        self._add_to("f_curve", torch.from_numpy(fc))
        self._add_to("e_curve", torch.from_numpy(ec))
        self._add_to("count", torch.tensor(pn.shape[0]))

    def compute(self) -> dict[str, Any]:
        """Return ``mae max_f mean_f adp_f wfm s_measure e_measure max_e mean_e adp_e`` and
        ``count``.

        ``e_measure`` equals ``mean_e``; ``wfm`` is NaN unless ``weighted_f``. With no image seen
        every value is NaN.
        """
        n = int(self._state["count"])
        if n == 0:
            keys = ("mae", "max_f", "mean_f", "adp_f", "wfm", "s_measure", "e_measure", "max_e",
                    "mean_e", "adp_e")
            out: dict[str, Any] = {k: float("nan") for k in keys}
            out["count"] = 0
            return out
        scal = dict(zip(_SCALAR_KEYS, (self._state["scalars"] / n).tolist(), strict=True))
        f = self._state["f_curve"] / n
        e = self._state["e_curve"] / n
        return {
            "mae": scal["mae"],
            "max_f": float(f.max()),
            "mean_f": float(f.mean()),
            "adp_f": scal["adp_f"],
            "wfm": scal["wfm"] if self.weighted_f else float("nan"),
            "s_measure": scal["s_measure"],
            "e_measure": float(e.mean()),
            "max_e": float(e.max()),
            "mean_e": float(e.mean()),
            "adp_e": scal["adp_e"],
            "count": n,
        }
