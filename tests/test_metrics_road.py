"""RoadMetric: a hand-ranked case, a direct per-threshold loop, ignore pixels, merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bidense.metrics import RoadMetric


def _devkit_loop(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Per-threshold counts by a plain loop, then the KITTI devkit's MaxF and 11-point AP."""
    thr = np.arange(256) / 255.0
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    tp = np.array([np.sum((probs >= t) & (labels == 1)) for t in thr], dtype=np.float64)
    fp = np.array([np.sum((probs >= t) & (labels == 0)) for t in thr], dtype=np.float64)
    rec = tp / pos
    prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    f = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    k = int(np.argmax(f))
    keep = ~((prec == 0) & (rec == 0))
    ap = np.mean([prec[keep][rec[keep] >= lv].max() for lv in np.arange(0, 1.1, 0.1)])
    return {"max_f": f[k], "ap": ap, "precision": prec[k], "recall": rec[k],
            "fpr": fp[k] / neg, "fnr": (pos - tp[k]) / pos, "threshold": thr[k]}


def test_known_ranking_hand_worked():
    probs = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    labels = np.array([[1, 0, 1, 1, 0, 0]])
    m = RoadMetric()
    m.update(probs, labels)
    r = m.compute()
    # Cut after each ranked pixel: (P, R) = (1, 1/3) (1/2, 1/3) (2/3, 2/3) (3/4, 1) (3/5, 1)
    # (1/2, 1); F1 peaks at the fourth cut: 2 * 3/4 / (3/4 + 1) = 6/7.
    assert r["max_f"] == pytest.approx(6 / 7)
    assert r["precision"] == pytest.approx(3 / 4)
    assert r["recall"] == pytest.approx(1.0)
    assert r["fpr"] == pytest.approx(1 / 3)
    assert r["fnr"] == pytest.approx(0.0)
    # Every threshold in (0.5, 0.6] makes that cut; the lowest is 128/255.
    assert r["threshold"] == pytest.approx(128 / 255)
    # 11-point AP: r = 0, .1, .2, .3 -> max P = 1; r = .4, .5, .6 -> 3/4; r = .7 .. 1 -> 3/4.
    assert r["ap"] == pytest.approx((4 * 1.0 + 3 * 0.75 + 4 * 0.75) / 11)
    assert r["pos"] == 3 and r["neg"] == 3


def test_random_maps_match_loop_and_ignore():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(3, 10, 12)) < 0.4).astype(np.int64)
    probs = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    labels_ign = labels.copy()
    labels_ign[:, :2] = 255  # "don't care" rows
    probs_ign = probs.copy()
    probs_ign[:, :2] = 1.0 - labels[:, :2]  # maximally wrong there: must not matter
    m = RoadMetric()
    m.update(torch.from_numpy(probs_ign)[:, None], torch.from_numpy(labels_ign)[:, None])
    r = m.compute()
    want = _devkit_loop(probs[:, 2:], labels[:, 2:])
    for k, v in want.items():
        assert r[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k


def test_bool_and_uint8_inputs_and_merge():
    rng = np.random.default_rng(1)
    labels = rng.uniform(size=(2, 6, 6)) < 0.5
    probs_u8 = rng.integers(0, 256, size=(2, 6, 6)).astype(np.uint8)
    a = RoadMetric()
    a.update(probs_u8, labels)
    b = RoadMetric()
    b.update(probs_u8[0].astype(np.float64) / 255.0, labels[0].astype(np.int64))
    c = RoadMetric()
    c.update(probs_u8[1].astype(np.float64) / 255.0, labels[1].astype(np.int64))
    b.merge(c)
    ra, rb = a.compute(), b.compute()
    assert ra == pytest.approx(rb)
    want = _devkit_loop(probs_u8 / 255.0, labels.astype(np.int64))
    assert ra["max_f"] == pytest.approx(want["max_f"])


def test_empty_and_bad_inputs():
    m = RoadMetric()
    assert math.isnan(m.compute()["max_f"])
    with pytest.raises(ValueError, match="road label 2"):
        m.update(np.zeros((2, 2)), np.array([[0, 2], [1, 255]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(np.array([[-0.5, 0.2]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="does not match"):
        m.update(np.zeros((2, 2)), np.zeros((3, 2), np.int64))
