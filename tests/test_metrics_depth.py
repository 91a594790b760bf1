"""DepthMetric: hand-worked values, a direct numpy implementation, crops, clamping, skipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bidense.metrics import DEPTH_KEYS, DepthMetric, crop_bounds, crop_mask


def _numpy_metrics(pred: np.ndarray, gt: np.ndarray, lo: float, hi: float, mask: np.ndarray):
    """The nine metrics of one image, written directly from their definitions (float64)."""
    p = np.array(pred, dtype=np.float64)
    p[np.isnan(p)] = lo
    p[np.isinf(p) & (p > 0)] = hi
    p = np.clip(p, lo, hi)
    g = np.asarray(gt, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = (g > lo) & (g < hi) & mask
    if not valid.any():
        return None
    p, g = p[valid], g[valid]
    thresh = np.maximum(g / p, p / g)
    e = np.log(p) - np.log(g)
    return {
        "d1": np.mean(thresh < 1.25),
        "d2": np.mean(thresh < 1.25**2),
        "d3": np.mean(thresh < 1.25**3),
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "log10": np.mean(np.abs(np.log10(g) - np.log10(p))),
        "silog": 100 * np.sqrt(np.mean(e**2) - np.mean(e) ** 2),
    }


def test_hand_worked_two_pixels():
    # gt = [2, 4], pred = [1, 4]: ratios [2, 1]; 2 > 1.25^3 = 1.953 so every delta is 1/2.
    m = DepthMetric(min_depth=1e-3, max_depth=10)
    m.update(np.array([[1.0, 4.0]]), np.array([[2.0, 4.0]]))
    r = m.compute()
    ln2 = math.log(2)
    assert r["d1"] == pytest.approx(0.5)
    assert r["d2"] == pytest.approx(0.5)
    assert r["d3"] == pytest.approx(0.5)
    assert r["abs_rel"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["sq_rel"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["rmse"] == pytest.approx(math.sqrt(1 / 2))
    assert r["rmse_log"] == pytest.approx(ln2 / math.sqrt(2))
    assert r["log10"] == pytest.approx(math.log10(2) / 2)
    # e = [-ln2, 0]: mean e^2 = ln2^2 / 2, (mean e)^2 = ln2^2 / 4
    assert r["silog"] == pytest.approx(100 * math.sqrt(ln2**2 / 4))
    assert r["count"] == 1 and r["skipped"] == 0


def test_random_batch_matches_numpy_per_image_mean():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 12.0, size=(3, 1, 6, 8))  # some pixels above max_depth = 10
    gt[0, 0, 0, :3] = 0.0  # missing depth
    pred = gt * rng.uniform(0.7, 1.4, size=gt.shape)
    pred[1, 0, 2, 2] = np.inf
    pred[1, 0, 3, 3] = np.nan
    pred[2, 0, 0, 0] = -5.0
    m = DepthMetric(min_depth=1e-3, max_depth=10.0)
    m.update(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    r = m.compute()
    per = [
        _numpy_metrics(
            pred[i, 0].astype(np.float32), gt[i, 0].astype(np.float32), 1e-3, 10.0,
            np.ones((6, 8), bool),
        )
        for i in range(3)
    ]
    for k in DEPTH_KEYS:
        assert r[k] == pytest.approx(np.mean([d[k] for d in per]), rel=1e-9), k
    # Per-image mean, not pooled: the pooled RMSE differs on this data.
    p32 = np.clip(np.nan_to_num(pred.astype(np.float32), nan=1e-3, posinf=10.0), 1e-3, 10.0)
    valid = (gt > 1e-3) & (gt < 10)
    pooled = np.sqrt(np.mean((gt.astype(np.float32)[valid] - p32[valid]) ** 2))
    assert abs(r["rmse"] - pooled) > 1e-6


def test_clamping_inf_nan_and_range():
    # gt 5 everywhere; pred inf -> max 10, nan -> min 1, 20 -> 10, -3 -> 1
    m = DepthMetric(min_depth=1.0, max_depth=10.0)
    m.update(np.array([[np.inf, np.nan, 20.0, -3.0]]), np.full((1, 4), 5.0))
    want = _numpy_metrics(np.array([[10.0, 1.0, 10.0, 1.0]]), np.full((1, 4), 5.0), 1.0, 10.0,
                          np.ones((1, 4), bool))
    r = m.compute()
    for k in DEPTH_KEYS:
        assert r[k] == pytest.approx(want[k]), k


def test_skipped_images_and_invalid_gt():
    m = DepthMetric(min_depth=0.1, max_depth=10.0)
    pred = np.ones((3, 2, 2))
    gt = np.ones((3, 2, 2))
    gt[1] = 0.0  # nothing valid
    gt[2] = [[np.nan, np.inf], [20.0, 0.05]]  # NaN, inf, too far, too near: nothing valid
    m.update(pred, gt)
    r = m.compute()
    assert r["skipped"] == 2 and r["count"] == 1
    assert r["d1"] == 1.0 and r["abs_rel"] == 0.0 and r["silog"] == 0.0
    empty = DepthMetric(0.1, 10.0)
    empty.update(pred[1], gt[1])
    assert math.isnan(empty.compute()["rmse"]) and empty.compute()["skipped"] == 1


def test_crop_indices():
    assert crop_bounds(480, 640, "eigen") == (45, 471, 41, 601)
    # KITTI KB-cropped 352x1216: 0.40810811*352 = 143.65, 0.99189189*352 = 349.15,
    # 0.03594771*1216 = 43.71, 0.96405229*1216 = 1172.29
    assert crop_bounds(352, 1216, "garg") == (143, 349, 43, 1172)
    # 0.3324324*352 = 117.02, 0.91351351*352 = 321.56, 0.0359477*1216 = 43.71
    assert crop_bounds(352, 1216, "eigen_kitti") == (117, 321, 43, 1172)
    assert crop_bounds(4, 5, None) == (0, 4, 0, 5)
    mask = crop_mask(480, 640, "eigen")
    assert int(mask.sum()) == (471 - 45) * (601 - 41)
    assert bool(mask[45, 41]) and not bool(mask[44, 41]) and not bool(mask[45, 601])
    assert bool(mask[470, 600]) and not bool(mask[471, 600])
    with pytest.raises(ValueError, match="480x640"):
        crop_bounds(240, 320, "eigen")
    with pytest.raises(ValueError, match="crop"):
        DepthMetric(crop="nyu")


def test_crop_is_applied_in_metric():
    h, w = 352, 1216
    gt = torch.full((h, w), 20.0)
    pred = gt.clone()
    top, bottom, left, right = crop_bounds(h, w, "garg")
    pred[:top] = 70.0  # gross error only outside the crop
    pred[top, left] = 40.0  # one error inside it
    m = DepthMetric(1e-3, 80.0, crop="garg")
    m.update(pred, gt)
    r = m.compute()
    n = (bottom - top) * (right - left)
    assert r["abs_rel"] == pytest.approx((20.0 / 20.0) / n)
    assert r["d1"] == pytest.approx((n - 1) / n)
    full = DepthMetric(1e-3, 80.0)
    full.update(pred, gt)
    assert full.compute()["abs_rel"] > 10 * r["abs_rel"]


def test_merge_and_shape_error():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 9, (4, 5, 5))
    pred = gt + rng.normal(0, 0.5, gt.shape)
    whole, a, b = DepthMetric(0.1, 10), DepthMetric(0.1, 10), DepthMetric(0.1, 10)
    whole.update(pred, gt)
    a.update(pred[:1], gt[:1])
    b.update(pred[1:], gt[1:])
    ra, rw = a.merge(b).compute(), whole.compute()
    for k in DEPTH_KEYS:
        assert ra[k] == pytest.approx(rw[k], rel=1e-12)
    with pytest.raises(ValueError, match="does not match"):
        a.update(pred[:, :4], gt)
    with pytest.raises(ValueError, match="min_depth"):
        DepthMetric(0.0, 10.0)
