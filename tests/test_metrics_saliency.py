"""SaliencyMetric: MAE, F-measures, S-measure and E-measure against hand work and direct loops."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from bidense.metrics import SaliencyMetric, e_measure, s_measure

EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------- independent implementations
def _f_beta(tp: int, fp: int, pos: int, beta2: float = 0.3) -> float:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / pos if pos else 0.0
    return (1 + beta2) * p * r / (beta2 * p + r) if (beta2 * p + r) else 0.0


def _f_curve_loop(s: np.ndarray, g: np.ndarray) -> np.ndarray:
    levels = np.floor(s * 255)
    out = []
    for t in range(256):
        b = levels >= t
        out.append(_f_beta(int((b & g).sum()), int((b & ~g).sum()), int(g.sum())))
    return np.array(out)


def _e_direct(fm: np.ndarray, gt: np.ndarray) -> float:
    """E-measure from the per-pixel alignment matrix (Fan et al. 2018, eqs. 3-6)."""
    fm = fm.astype(np.float64)
    g = gt.astype(np.float64)
    if g.sum() == 0:
        enhanced = 1 - fm
    elif g.sum() == g.size:
        enhanced = fm
    else:
        phi_fm = fm - fm.mean()
        phi_gt = g - g.mean()
        xi = 2 * phi_gt * phi_fm / (phi_gt**2 + phi_fm**2 + EPS)
        enhanced = (1 + xi) ** 2 / 4
    return float(enhanced.sum() / (g.size - 1 + EPS))


def _ssim_direct(x: list[float], y: list[float]) -> float:
    if len(x) == 0:
        return 0.0
    if len(x) == 1:
        return 1.0  # both variances and covariance are 0: alpha = beta = 0 -> 1
    mx, my = statistics.fmean(x), statistics.fmean(y)
    vx, vy = statistics.variance(x), statistics.variance(y)
    cxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / (len(x) - 1)
    a = 4 * mx * my * cxy
    b = (mx**2 + my**2) * (vx + vy)
    if a != 0:
        return a / (b + EPS)
    return 1.0 if b == 0 else 0.0


def _s_direct(s: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """S-measure (Fan et al. 2017) with plain-Python statistics and explicit quadrant loops."""
    h, w = gt.shape
    u = gt.mean()
    if u == 0:
        return 1 - s.mean()
    if u == 1:
        return s.mean()
    fg = [s[i, j] for i in range(h) for j in range(w) if gt[i, j]]
    bg = [1 - s[i, j] for i in range(h) for j in range(w) if not gt[i, j]]

    def obj(v: list[float]) -> float:
        x = statistics.fmean(v)
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return 2 * x / (x * x + 1 + sd + EPS)

    s_obj = u * obj(fg) + (1 - u) * obj(bg)
    rows = [i for i in range(h) for j in range(w) if gt[i, j]]
    cols = [j for i in range(h) for j in range(w) if gt[i, j]]
    cx = int(np.round(statistics.fmean(cols))) + 1
    cy = int(np.round(statistics.fmean(rows))) + 1
    region = 0.0
    for rs, cs in (((0, cy), (0, cx)), ((0, cy), (cx, w)), ((cy, h), (0, cx)), ((cy, h), (cx, w))):
        xs = [s[i, j] for i in range(*rs) for j in range(*cs)]
        ys = [float(gt[i, j]) for i in range(*rs) for j in range(*cs)]
        region += len(xs) / (h * w) * _ssim_direct(xs, ys)
    return max(0.0, alpha * s_obj + (1 - alpha) * region)


# ---------------------------------------------------------------- tests
def test_mae_and_adaptive_f_hand_worked():
    s = np.array([[0.2, 0.8, 0.6, 0.0]])
    g = np.array([[0, 1, 0, 0]], dtype=bool)
    m = SaliencyMetric(normalize=False)
    m.update(s, g)
    r = m.compute()
    assert r["mae"] == pytest.approx((0.2 + 0.2 + 0.6 + 0.0) / 4)
    # adaptive threshold 2 * mean = 0.8 -> only the GT pixel: P = R = 1 -> F = 1
    assert r["adp_f"] == pytest.approx(1.0)
    # levels floor(255 s): 0.2 -> 51, 0.8 -> 204, 0.6 -> 153, 0.0 -> 0. Recall is 1 up to
    # t = 204. t = 0: all 4 predicted (P 1/4); 1..51: 3 predicted (P 1/3); 52..153: P 1/2;
    # 154..204: P 1; 205..255: nothing predicted (F 0)
    f = lambda p: 1.3 * p / (0.3 * p + 1)  # noqa: E731  (R = 1)
    curve = [f(1 / 4)] + [f(1 / 3)] * 51 + [f(1 / 2)] * 102 + [f(1.0)] * 51 + [0.0] * 51
    assert len(curve) == 256
    assert r["max_f"] == pytest.approx(1.0)
    assert r["mean_f"] == pytest.approx(np.mean(curve))


def test_f_and_e_curves_match_loops_over_images():
    rng = np.random.default_rng(0)
    preds = rng.uniform(0, 1, (3, 9, 11))
    gts = rng.uniform(0, 1, (3, 9, 11)) < 0.35
    preds[gts] = np.clip(preds[gts] + 0.3, 0, 1)
    m = SaliencyMetric()
    m.update(torch.from_numpy(preds)[:, None], torch.from_numpy(gts)[:, None])
    r = m.compute()
    f_curves, e_curves, maes, adp_f, adp_e, sms = [], [], [], [], [], []
    for s, g in zip(preds, gts):
        s = (s - s.min()) / (s.max() - s.min())  # PySOD min-max normalisation
        f_curves.append(_f_curve_loop(s, g))
        levels = np.floor(s * 255)
        e_curves.append([_e_direct(levels >= t, g) for t in range(256)])
        maes.append(np.abs(s - g).mean())
        b = s >= min(2 * s.mean(), 1)
        adp_f.append(_f_beta(int((b & g).sum()), int((b & ~g).sum()), int(g.sum())))
        adp_e.append(_e_direct(b, g))
        sms.append(_s_direct(s, g))
    fc = np.mean(f_curves, 0)
    ec = np.mean(e_curves, 0)
    assert r["max_f"] == pytest.approx(fc.max(), rel=1e-12)
    assert r["mean_f"] == pytest.approx(fc.mean(), rel=1e-12)
    assert r["max_e"] == pytest.approx(ec.max(), rel=1e-12)
    assert r["mean_e"] == pytest.approx(ec.mean(), rel=1e-12)
    assert r["e_measure"] == r["mean_e"]
    assert r["mae"] == pytest.approx(np.mean(maes), rel=1e-12)
    assert r["adp_f"] == pytest.approx(np.mean(adp_f), rel=1e-12)
    assert r["adp_e"] == pytest.approx(np.mean(adp_e), rel=1e-12)
    assert r["s_measure"] == pytest.approx(np.mean(sms), rel=1e-9)
    assert r["count"] == 3


def test_s_measure_all_foreground_and_all_background():
    s = np.array([[0.1, 0.5], [0.9, 0.3]])
    assert s_measure(s, np.ones((2, 2), bool)) == pytest.approx(s.mean())
    assert s_measure(s, np.zeros((2, 2), bool)) == pytest.approx(1 - s.mean())


def test_s_measure_mixed_hand_worked():
    gt = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=bool)
    # Perfect prediction scores 1.
    assert s_measure(gt.astype(float), gt) == pytest.approx(1.0)
    # Constant 0.5 map, worked from the formula:
    # object: fg values 0.5 (x=0.5, sd 0) -> 2*0.5/(0.25+1) = 0.8; bg values 1-0.5 -> 0.8; u=0.5
    # centroid: cols mean 0.5, rows mean 0.5 -> np.round -> 0 -> 1-based (1, 1)
    # quadrants (weights): LT 1px (1/8), RT 3px (3/8), LB 1px (1/8), RB 3px (3/8)
    # 1-pixel quadrants: all variances 0 -> SSIM 1; 3-pixel: sigma_xy = 0 (constant pred),
    # beta > 0 -> SSIM 0. region = 1/8 + 1/8.
    s = np.full((2, 4), 0.5)
    assert s_measure(s, gt) == pytest.approx(0.5 * 0.8 + 0.5 * 0.25)
    rng = np.random.default_rng(3)
    for _ in range(3):
        g = rng.uniform(size=(7, 6)) < 0.4
        p = rng.uniform(size=(7, 6))
        assert s_measure(p, g) == pytest.approx(_s_direct(p, g), rel=1e-9)


def test_e_measure_special_and_mixed_cases():
    fm = np.array([[1, 0], [0, 0]], dtype=bool)
    # all-background GT: enhanced = 1 - FM -> sum 3, / (4 - 1)
    assert e_measure(fm, np.zeros((2, 2), bool)) == pytest.approx(3 / 3)
    # all-foreground GT: enhanced = FM -> sum 1, / 3
    assert e_measure(fm, np.ones((2, 2), bool)) == pytest.approx(1 / 3)
    # perfect binary prediction of a mixed mask: xi = 1 everywhere -> sum N, / (N - 1)
    gt = np.array([[1, 0], [0, 0]], dtype=bool)
    assert e_measure(gt, gt) == pytest.approx(4 / 3)
    # inverted prediction: xi = -1 everywhere -> 0
    assert e_measure(~gt, gt) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(4)
    g = rng.uniform(size=(6, 5)) < 0.5
    f = rng.uniform(size=(6, 5)) < 0.5
    assert e_measure(f, g) == pytest.approx(_e_direct(f, g), rel=1e-12)


def test_input_forms_and_merge():
    rng = np.random.default_rng(5)
    s = rng.uniform(size=(2, 8, 8))
    g = rng.uniform(size=(2, 8, 8)) < 0.5
    a = SaliencyMetric()
    a.update(s, g)
    u8 = SaliencyMetric()
    u8.update(np.round(s * 255).astype(np.uint8), (g * 255).astype(np.uint8))
    b = SaliencyMetric()
    b.update(s[0], g[0].astype(np.float32))
    b.merge(SaliencyMetric())  # merging an empty metric changes nothing
    c = SaliencyMetric()
    c.update(s[1], g[1].astype(np.int64))
    b.merge(c)
    ra, rb = a.compute(), b.compute()
    for k in ("mae", "max_f", "mean_f", "adp_f", "s_measure", "e_measure", "adp_e"):
        assert ra[k] == pytest.approx(rb[k], rel=1e-12), k
    assert u8.compute()["mae"] == pytest.approx(ra["mae"], abs=5e-3)
    a.reset()
    assert a.compute()["count"] == 0 and math.isnan(a.compute()["mae"])


def test_bad_inputs():
    m = SaliencyMetric()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(np.array([[1.5, 0.2]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="does not match"):
        m.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        m.update(np.array([[np.nan, 0.2]]), np.array([[1, 0]]))
