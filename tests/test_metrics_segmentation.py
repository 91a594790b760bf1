"""SegmentationMetric: hand-worked counts, an independent float64 computation, torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bidense.metrics import SegmentationMetric
from bidense.metrics.segmentation import class_names_or_ids, format_per_class

# 2x3 map, K = 3, one ignored pixel (255).
#   gt   = 0 0 1      pred = 0 1 1
#          1 2 255           1 0 2
# Valid pixels (gt -> pred): 0->0, 0->1, 1->1, 1->1, 2->0.
GT = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.int64)
PRED = np.array([[0, 1, 1], [1, 0, 2]], dtype=np.int64)


def test_hand_worked_2x3():
    m = SegmentationMetric(num_classes=3)
    m.update(PRED, GT)
    r = m.compute()
    # class 0: TP 1, FP 1 (gt 2 -> 0), FN 1 (0 -> 1)  => 1/3
    # class 1: TP 2, FP 1 (gt 0 -> 1), FN 0             => 2/3
    # class 2: TP 0, FP 0 (the pred 2 sits on ignore), FN 1  => 0
    assert r["IoU"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert r["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert r["pixAcc"] == pytest.approx(3 / 5)
    assert r["Acc"] == pytest.approx([1 / 2, 1.0, 0.0])
    assert r["mAcc"] == pytest.approx(0.5)
    expected_cm = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert torch.equal(m.confusion_matrix, expected_cm)


def test_absent_class_nanmean_vs_reference_zero():
    default = SegmentationMetric(num_classes=4)
    ref = SegmentationMetric(num_classes=4, protocol="bidense-reference")
    for m in (default, ref):
        m.update(PRED, GT)
    d, r = default.compute(), ref.compute()
    # class 3 appears in neither GT nor prediction
    assert math.isnan(d["IoU"][3])
    assert d["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert r["IoU"][3] == 0.0
    assert r["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0 + 0) / 4)


def test_reference_pixacc_is_batch_weighted_mean():
    default = SegmentationMetric(num_classes=3)
    ref = SegmentationMetric(num_classes=3, protocol="bidense-reference")
    batch_b_gt = np.array([[[0, 1]], [[2, 2]]])  # 2 images, 2 pixels each, all correct
    for m in (default, ref):
        m.update(PRED[None], GT[None])  # batch of 1, accuracy 3/5
        m.update(batch_b_gt.copy(), batch_b_gt)  # batch of 2, accuracy 1
    assert default.compute()["pixAcc"] == pytest.approx((3 + 4) / (5 + 4))
    assert ref.compute()["pixAcc"] == pytest.approx((1 * 3 / 5 + 2 * 1.0) / 3)


def _numpy_iou(pred: np.ndarray, gt: np.ndarray, k: int, ignore: int) -> np.ndarray:
    """Per-class IoU by explicit set counting in float64 (independent of bincount)."""
    valid = gt != ignore
    out = np.full(k, np.nan)
    for c in range(k):
        inter = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        if union > 0:
            out[c] = inter / union
    return out


def test_random_batches_match_numpy_and_torchmetrics():
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    k = 5
    m = SegmentationMetric(num_classes=k)
    tm = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=255)
    preds, gts = [], []
    for _ in range(3):
        logits = torch.randn(2, k, 7, 9, generator=g)
        gt = torch.randint(0, k - 1, (2, 7, 9), generator=g)  # class k-1 never in GT
        gt[torch.rand(2, 7, 9, generator=g) < 0.15] = 255
        m.update(logits, gt)
        pred = logits.argmax(1)
        tm.update(pred, gt)
        preds.append(pred.numpy())
        gts.append(gt.numpy())
    r = m.compute()
    p_all, g_all = np.concatenate(preds), np.concatenate(gts)
    want = _numpy_iou(p_all, g_all, k, 255)
    np.testing.assert_allclose(np.array(r["IoU"]), want, rtol=1e-12, equal_nan=True)
    assert r["mIoU"] == pytest.approx(np.nanmean(want))
    tm_iou = tm.compute().double().numpy()
    present = ~np.isnan(want)
    np.testing.assert_allclose(np.array(r["IoU"])[present], tm_iou[present], rtol=1e-6)
    valid = g_all != 255
    assert r["pixAcc"] == pytest.approx(np.mean(p_all[valid] == g_all[valid]))


def test_input_forms_agree():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    gt = torch.randint(0, 4, (2, 5, 6), generator=g)
    ref = SegmentationMetric(4)
    ref.update(logits, gt)
    want = ref.compute()
    variants = [
        (logits.argmax(1), gt),
        (logits.argmax(1, keepdim=True), gt.unsqueeze(1)),
        (logits.argmax(1).numpy(), gt.numpy()),
        (logits.argmax(1).float(), gt.float()),
    ]
    for pred, target in variants:
        m = SegmentationMetric(4)
        m.update(pred, target)
        assert m.compute()["IoU"] == pytest.approx(want["IoU"], nan_ok=True)
    single = SegmentationMetric(4)
    for i in range(2):
        single.update(logits[i], gt[i])  # (K, H, W) logits with an (H, W) target
    assert torch.equal(single.confusion_matrix, ref.confusion_matrix)


def test_out_of_range_prediction_counts_as_miss():
    # A model with an extra ignore-slot output predicts 3 with K = 3.
    gt = np.array([[0, 1]])
    pred = np.array([[3, 1]])
    m = SegmentationMetric(3)
    m.update(pred, gt)
    r = m.compute()
    assert r["IoU"][0] == 0.0  # TP 0, FN 1
    assert r["IoU"][1] == 1.0
    assert r["pixAcc"] == pytest.approx(0.5)


def test_merge_equals_single_pass_and_reset():
    g = torch.Generator().manual_seed(2)
    gt = torch.randint(0, 3, (4, 6, 6), generator=g)
    pred = torch.randint(0, 3, (4, 6, 6), generator=g)
    whole = SegmentationMetric(3, protocol="bidense-reference")
    whole.update(pred, gt)
    a = SegmentationMetric(3, protocol="bidense-reference")
    b = SegmentationMetric(3, protocol="bidense-reference")
    a.update(pred[:2], gt[:2])
    b.update(pred[2:], gt[2:])
    a.merge(b)
    assert torch.equal(a.confusion_matrix, whole.confusion_matrix)
    # Two batches of 2 vs one batch of 4: reference pixAcc is per batch, so compare with its def.
    acc = lambda s: float((pred[s] == gt[s]).double().mean())  # noqa: E731
    assert a.compute()["pixAcc"] == pytest.approx((2 * acc(slice(0, 2)) + 2 * acc(slice(2, 4))) / 4)
    with pytest.raises(ValueError, match="different settings"):
        a.merge(SegmentationMetric(4, protocol="bidense-reference"))
    a.reset()
    assert int(a.confusion_matrix.sum()) == 0
    assert math.isnan(a.compute()["mIoU"])


def test_bad_inputs():
    m = SegmentationMetric(3)
    with pytest.raises(ValueError, match="label 7 outside"):
        m.update(np.zeros((2, 2), np.int64), np.array([[0, 7], [1, 255]]))
    with pytest.raises(ValueError, match="does not match"):
        m.update(np.zeros((2, 3), np.int64), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="fewer than num_classes"):
        m.update(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="protocol"):
        SegmentationMetric(3, protocol="mmseg")


def test_per_class_rows_follow_compute_and_name_the_classes():
    gt = np.array([[0, 0, 1, 1, 255, 1]])
    pred = np.array([[0, 1, 1, 1, 2, 0]])
    m = SegmentationMetric(3)
    m.update(pred, gt)
    r = m.compute()
    rows = m.per_class(["sky", "ground", "box"])
    assert [row["id"] for row in rows] == [0, 1, 2]
    assert [row["name"] for row in rows] == ["sky", "ground", "box"]
    assert [row["pixels"] for row in rows] == [2, 3, 0]  # labelled GT pixels; 255 is ignored
    for row in rows:
        for key in ("IoU", "Acc"):
            want = r[key][row["id"]]
            assert row[key] == want or (math.isnan(row[key]) and math.isnan(want))
    # hand-worked: class 0 TP 1, FP 1, FN 1 -> 1/3; class 1 TP 2, FP 1, FN 1 -> 1/2
    assert rows[0]["IoU"] == pytest.approx(1 / 3) and rows[1]["IoU"] == pytest.approx(1 / 2)
    assert [row["name"] for row in m.per_class()] == ["class_0", "class_1", "class_2"]
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        m.per_class(["a", "b"])


def test_per_class_table_text():
    m = SegmentationMetric(2)
    m.update(np.array([[0, 0, 1]]), np.array([[0, 1, 1]]))
    lines = format_per_class(m.per_class(["wall", "floor mat"])).splitlines()
    assert lines[0].split() == ["id", "class", "IoU", "Acc", "pixels"]
    assert lines[1].split() == ["0", "wall", "0.5000", "1.0000", "1"]
    assert lines[2].split() == ["1", "floor", "mat", "0.5000", "0.5000", "2"]
    empty = format_per_class(SegmentationMetric(2).per_class()).splitlines()
    assert empty[1].split() == ["0", "class_0", "nan", "nan", "0"]
    assert class_names_or_ids(2) == ["class_0", "class_1"]
