"""KITTI-Road style pixel metrics: MaxF, AP, and PRE/REC/FPR/FNR at the MaxF threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Metric, as_tensor, split_batch

__all__ = ["RoadMetric"]

_NTHR = 256


class RoadMetric(Metric):
    """Road-segmentation metrics from pixel counts accumulated over the whole split.

    Follows the KITTI Road devkit (Fritsch et al., ITSC 2013, ``evalExp`` and
    ``pxEval_maximizeFMeasure``), evaluated in the **perspective (image) view**, not the
    official bird's-eye view: the usual setting of papers reporting on a validation split carved
    from the 289 training images.

    Thresholds are t_k = k / 255 for k = 0..255; a pixel is predicted road when p >= t_k. The
    state holds, per threshold, the number of road and non-road pixels predicted road (TP_k,
    FP_k), and the totals P and N of road / non-road pixels (``ignore_index`` pixels excluded),
    summed over images, so everything all-reduces. Then::

        PRE_k = TP_k / (TP_k + FP_k),  REC_k = TP_k / P
        F_k   = 2 PRE_k REC_k / (PRE_k + REC_k)                    (beta = 1)
        max_f = max_k F_k, at k* (the lowest threshold on ties)
        precision, recall = PRE_k*, REC_k*;  fpr = FP_k* / N;  fnr = (P - TP_k*) / P
        ap    = (1/11) sum_{r in 0, 0.1, ..., 1} max{PRE_k : REC_k >= r}

    ``ap`` is the devkit's 11-point interpolated (PASCAL VOC 2007) average precision, ignoring
    thresholds where both PRE and REC are 0, as the devkit does.

    Args:
        ignore_index: ground-truth value marking "don't care" pixels.
    """

    def __init__(self, ignore_index: int | None = 255) -> None:
        super().__init__()
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.thresholds = torch.arange(_NTHR, dtype=torch.float64) / 255.0
        self._add_state("tp", torch.zeros(_NTHR, dtype=torch.int64))
        self._add_state("fp", torch.zeros(_NTHR, dtype=torch.int64))
        self._add_state("pos", torch.zeros((), dtype=torch.int64))
        self._add_state("neg", torch.zeros((), dtype=torch.int64))

    def _config(self) -> dict[str, Any]:
        return {"ignore_index": self.ignore_index}

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch: ``pred`` road probabilities in [0, 1] (uint8 maps read as /255),
        ``target`` road mask with values 0, 1 or ``ignore_index`` (bool accepted);
        shapes (H, W), (B, H, W) or (B, 1, H, W)."""
        p = split_batch(as_tensor(pred, "pred"), "pred")
        t = split_batch(as_tensor(target, "target"), "target").to(p.device)
        if p.shape != t.shape:
            raise ValueError(
                f"pred shape {tuple(p.shape)} does not match target shape {tuple(t.shape)}"
            )
        p = p.double() / 255.0 if p.dtype == torch.uint8 else p.double()
        if p.numel():
            if not bool(torch.isfinite(p).all()):
                raise ValueError("pred: road probability map holds NaN or inf")
            if float(p.min()) < 0 or float(p.max()) > 1:
                raise ValueError(
                    f"pred: road probabilities must lie in [0, 1], got range "
                    f"[{float(p.min()):.4g}, {float(p.max()):.4g}] (apply a sigmoid to logits)"
                )
        if t.dtype == torch.bool:
            valid = torch.ones_like(t)
            road = t
        else:
            valid = torch.ones_like(t, dtype=torch.bool)
            if self.ignore_index is not None:
                valid = t != self.ignore_index
            tv = t[valid]
            if not bool(((tv == 0) | (tv == 1)).all()):
                bad = tv[(tv != 0) & (tv != 1)][0]
                raise ValueError(
                    f"target: road label {bad.item()} is not 0, 1 or ignore_index "
                    f"{self.ignore_index}"
                )
            road = t == 1
        # Index of the highest threshold <= p; p counts as positive for thresholds 0..idx.
        thr = self.thresholds.to(p.device)
        idx = torch.bucketize(p, thr, right=True) - 1
        pos_mask = valid & road
        neg_mask = valid & ~road
        pos_hist = torch.bincount(idx[pos_mask], minlength=_NTHR)
        neg_hist = torch.bincount(idx[neg_mask], minlength=_NTHR)
        self._add_to("tp", pos_hist.flip(0).cumsum(0).flip(0).cpu())
        self._add_to("fp", neg_hist.flip(0).cumsum(0).flip(0).cpu())
        self._add_to("pos", pos_mask.sum().cpu())
        self._add_to("neg", neg_mask.sum().cpu())

    def compute(self) -> dict[str, Any]:
        """Return ``max_f ap precision recall fpr fnr threshold`` (floats) and the pixel counts
        ``pos``/``neg``. Metrics are NaN when no road pixel has been seen."""
        tp = self._state["tp"].double()
        fp = self._state["fp"].double()
        pos = int(self._state["pos"])
        neg = int(self._state["neg"])
        nan = float("nan")
        if pos == 0:
            return {"max_f": nan, "ap": nan, "precision": nan, "recall": nan, "fpr": nan,
                    "fnr": nan, "threshold": nan, "pos": pos, "neg": neg}
        pred_pos = tp + fp
        precision = torch.where(pred_pos > 0, tp / pred_pos.clamp_min(1), torch.zeros_like(tp))
        recall = tp / pos
        den = precision + recall
        f1 = torch.where(den > 0, 2 * precision * recall / den.clamp_min(1e-300),
                         torch.zeros_like(den))
        best = int(torch.argmax(f1))  # first maximum = lowest threshold
        keep = ~((precision == 0) & (recall == 0))
        pk, rk = precision[keep], recall[keep]
        ap = 0.0
        # The devkit's recall levels, np.arange(0, 1.1, 0.1), float rounding included
        # (0.30000000000000004 etc.), so exact-0.3 recalls fall where they do in the devkit.
        for level in np.arange(0, 1.1, 0.1):
            sel = rk >= float(level)
            ap += float(pk[sel].max()) if bool(sel.any()) else 0.0
        ap /= 11.0
        return {
            "max_f": float(f1[best]),
            "ap": ap,
            "precision": float(precision[best]),
            "recall": float(recall[best]),
            "fpr": float(fp[best] / neg) if neg > 0 else nan,
            "fnr": float((pos - tp[best]) / pos),
            "threshold": float(self.thresholds[best]),
            "pos": pos,
            "neg": neg,
        }
