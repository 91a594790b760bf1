"""Semantic-segmentation metrics from a dataset-level confusion matrix, and the per-class table
users report beside mIoU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import Metric, as_tensor, split_batch

__all__ = ["SegmentationMetric", "class_names_or_ids", "format_per_class"]

_PROTOCOLS = ("default", "bidense-reference")


def class_names_or_ids(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """``names`` as a list when it has one name per class; ``None`` gives ``class_<i>``."""
    if names is None:
        return [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return [str(n) for n in names]


def format_per_class(rows: Sequence[dict[str, Any]]) -> str:
    """The per-class table (:meth:`SegmentationMetric.per_class` rows) as aligned text, values
    as fractions like the other metrics; NaN (class never seen) prints as ``nan``."""
    width = max([len("class")] + [len(r["name"]) for r in rows])
    lines = [f"{'id':>4}  {'class':<{width}}  {'IoU':>7}  {'Acc':>7}  {'pixels':>10}"]
    for r in rows:
        lines.append(f"{r['id']:>4}  {r['name']:<{width}}  {r['IoU']:7.4f}  {r['Acc']:7.4f}  "
                     f"{r['pixels']:>10}")
    return "\n".join(lines)


class SegmentationMetric(Metric):
    """mIoU, pixel accuracy and per-class IoU/accuracy from a confusion matrix summed over a split.

    The confusion matrix ``cm[g, p]`` counts pixels with ground truth ``g`` and prediction ``p``
    over every image seen (``torch.bincount`` per batch, summed), as in mmsegmentation and the
    torchvision reference scripts. With ``TP_c = cm[c, c]``, ``FP_c = sum_g cm[g, c] - TP_c`` and
    ``FN_c = sum_p cm[c, p] - TP_c``::

        IoU_c  = TP_c / (TP_c + FP_c + FN_c)          (Jaccard index, Everingham et al. 2010)
        Acc_c  = TP_c / (TP_c + FN_c)
        pixAcc = sum_c TP_c / (number of labelled pixels)
        mIoU   = mean_c IoU_c,   mAcc = mean_c Acc_c

    Pixels whose ground truth equals ``ignore_index`` are excluded. Predicted labels outside
    ``[0, num_classes)`` (e.g. the ignore slot of a model with K + 1 outputs) are counted as wrong
    for their ground-truth class and as a false positive for no class.

    Protocols:

    * ``"default"`` (mmseg convention): classes absent from both ground truth and prediction have
      an undefined IoU (NaN in ``IoU``) and are left out of the mean; ``pixAcc`` is dataset-level.
    * ``"bidense-reference"`` (the BiDense code, bidense-method.md §13 quirks 5 and 6): absent
      classes score IoU 0 and still count in the mean; ``pixAcc`` is the batch-size-weighted mean
      of per-batch pixel accuracies (a batch with no labelled pixel is skipped).

    ``mAcc`` is a NaN-mean over classes present in the ground truth under both protocols.

    Args:
        num_classes: number of real classes K (ground-truth labels must lie in ``[0, K)``).
        ignore_index: ground-truth value excluded from every count.
        protocol: ``"default"`` or ``"bidense-reference"``.
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = 255, protocol: str = "default"
    ) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if protocol not in _PROTOCOLS:
            raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {protocol!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.protocol = protocol
        k = self.num_classes
        # The extra column K collects predictions outside [0, K).
        self._add_state("confmat", torch.zeros(k, k + 1, dtype=torch.int64))
        self._add_state("batch_acc_sum", torch.zeros((), dtype=torch.float64))
        self._add_state("batch_images", torch.zeros((), dtype=torch.int64))

    def _config(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "protocol": self.protocol,
        }

    # ----------------------------------------------------------------- input handling
    def _labels(self, pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
        t_raw = as_tensor(target, "target")
        p = as_tensor(pred, "pred")
        t = split_batch(t_raw, "target")
        if t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise ValueError("target: segmentation labels must be integers")
        t = t.long()
        if p.is_floating_point() and p.ndim == 4 and p.shape[1] > 1:
            p = self._argmax(p, 1)
        elif p.is_floating_point() and p.ndim == 3 and t_raw.ndim == 2 and p.shape[0] > 1:
            p = self._argmax(p, 0).unsqueeze(0)
        else:
            if p.ndim == 4 and p.shape[1] > 1:
                raise ValueError(
                    f"pred: (B, C, H, W) input with C = {p.shape[1]} must be floating-point logits"
                )
            p = split_batch(p, "pred")
            if p.is_floating_point() and not torch.equal(p, p.round()):
                raise ValueError(
                    "pred: a class map must hold integers; pass logits as (B, K, H, W)"
                )
            p = p.long()
        if p.shape != t.shape:
            raise ValueError(
                f"pred shape {tuple(p.shape)} does not match target shape {tuple(t.shape)}"
            )
        return p, t.to(p.device)

    def _argmax(self, logits: torch.Tensor, dim: int) -> torch.Tensor:
        if logits.shape[dim] < self.num_classes:
            raise ValueError(
                f"pred: logits have {logits.shape[dim]} channels, fewer than num_classes "
                f"{self.num_classes}"
            )
        return logits.argmax(dim)

    # ----------------------------------------------------------------- interface
    def update(self, pred: Any, target: Any) -> None:
        """Add a batch: ``pred`` is a class map (like ``target``) or logits (B, K, H, W)/(K, H, W).

        ``target`` is (H, W), (B, H, W) or (B, 1, H, W) with labels in ``[0, K)`` or
        ``ignore_index``; anything else raises ``ValueError``.
        """
        p, t = self._labels(pred, target)
        k = self.num_classes
        valid = torch.ones_like(t, dtype=torch.bool) if self.ignore_index is None else (
            t != self.ignore_index
        )
        bad = valid & ((t < 0) | (t >= k))
        if bool(bad.any()):
            raise ValueError(
                f"target: label {int(t[bad][0])} outside [0, {k}) and not ignore_index "
                f"{self.ignore_index}"
            )
        tv = t[valid]
        pv = p[valid]
        pv = torch.where((pv < 0) | (pv >= k), torch.full_like(pv, k), pv)
        cm = torch.bincount(tv * (k + 1) + pv, minlength=k * (k + 1)).reshape(k, k + 1)
        self._add_to("confmat", cm)
        labelled = int(tv.numel())
        if labelled > 0:
            # Reference quirk 5: a per-batch accuracy, weighted by the batch size.
            acc = (tv == pv).sum().double() / labelled
            self._add_to("batch_acc_sum", acc.cpu() * t.shape[0])
            self._add_to("batch_images", torch.tensor(t.shape[0]))

    def per_class(self, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per class, sorted by class id: ``{"id", "name", "IoU", "Acc", "pixels"}``.

        ``IoU``/``Acc`` are :meth:`compute`'s values (so the protocol's convention for absent
        classes holds), ``pixels`` the labelled ground-truth pixels of the class, ``name`` from
        ``class_names`` (one per class) or ``class_<i>``.
        """
        names = class_names_or_ids(self.num_classes, class_names)
        result = self.compute()
        pixels = self._state["confmat"].sum(1).tolist()
        return [
            {"id": i, "name": names[i], "IoU": result["IoU"][i], "Acc": result["Acc"][i],
             "pixels": int(pixels[i])}
            for i in range(self.num_classes)
        ]

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """The (K, K) int64 confusion matrix ``cm[gt, pred]`` (out-of-range predictions dropped)."""
        return self._state["confmat"][:, : self.num_classes].clone()

    def compute(self) -> dict[str, Any]:
        """Return ``mIoU``, ``pixAcc``, ``mAcc`` (floats) and ``IoU``, ``Acc`` (per-class lists).

        Values are fractions in [0, 1]. With nothing seen, every value is NaN.
        """
        cm = self._state["confmat"].double()
        k = self.num_classes
        tp = cm.diagonal()
        gt_count = cm.sum(1)
        pred_count = cm[:, :k].sum(0)
        union = gt_count + pred_count - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        if self.protocol == "default":
            iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
        else:
            iou = torch.where(union > 0, tp / union.clamp_min(1), torch.zeros_like(tp))
        acc = torch.where(gt_count > 0, tp / gt_count.clamp_min(1), nan)
        total = gt_count.sum()
        if self.protocol == "default":
            pix_acc = float(tp.sum() / total) if total > 0 else float("nan")
        else:
            n = int(self._state["batch_images"])
            pix_acc = float(self._state["batch_acc_sum"]) / n if n > 0 else float("nan")
        if total == 0:
            miou = float("nan")
        elif self.protocol == "default":
            miou = float(torch.nanmean(iou))
        else:
            miou = float(iou.mean())
        macc = float(torch.nanmean(acc)) if bool((gt_count > 0).any()) else float("nan")
        return {
            "mIoU": miou,
            "pixAcc": pix_acc,
            "mAcc": macc,
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }
