"""SaliencyMetric: MAE, F-measures, weighted F, S-measure and E-measure against hand work and
direct loops."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from bidense.metrics import SaliencyMetric, e_measure, s_measure
from bidense.metrics.saliency import weighted_f_measure

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


def _gauss_7x7_sigma5() -> np.ndarray:
    """fspecial('gaussian', 7, 5) from its definition (no value is below eps * max here)."""
    k = np.array([[math.exp(-(x * x + y * y) / 50.0) for x in range(-3, 4)] for y in range(-3, 4)])
    return k / k.sum()


def _wfm_direct(s: np.ndarray, g: np.ndarray) -> float:
    """Weighted F (Margolin et al. 2014) step by step: scipy's distance transform for the nearest
    foreground pixel, an explicit zero-padded 7x7 correlation loop, then the weighted P and R."""
    from scipy.ndimage import distance_transform_edt

    if not g.any():
        return 0.0
    h, w = g.shape
    dist, (ri, ci) = distance_transform_edt(~g, return_indices=True)
    e = np.abs(s - g.astype(np.float64))
    et = np.array([[e[ri[i, j], ci[i, j]] for j in range(w)] for i in range(h)])
    k = _gauss_7x7_sigma5()
    ea = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for di in range(-3, 4):
                for dj in range(-3, 4):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        ea[i, j] += k[di + 3, dj + 3] * et[i + di, j + dj]
    tp_w = fp_w = fg_err = 0.0
    for i in range(h):
        for j in range(w):
            if g[i, j]:
                ew = min(e[i, j], ea[i, j])
                tp_w += 1 - ew
                fg_err += ew
            else:
                fp_w += e[i, j] * (2 - 0.5 ** (dist[i, j] / 5))
    r = 1 - fg_err / g.sum()
    p = tp_w / (tp_w + fp_w + EPS)
    return 2 * r * p / (r + p + EPS)


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


# ---------------------------------------------------------------- weighted F-measure
def test_weighted_f_hand_worked():
    # G = [1 0 0], S = [1 .5 0]: E = [0 .5 0]. The background takes the error of its nearest
    # foreground pixel (0), so Et = EA = 0 and E' = E. Distances to the foreground are 1 and 2,
    # so B = [1, 2 - 0.5^(1/5), 2 - 0.5^(2/5)] and Ew = [0, 0.5 B_1, 0].
    # TPw = 1, FPw = 0.5 B_1, R = 1, P = 1 / (1 + FPw), F = 2 R P / (R + P).
    fp_w = 0.5 * (2 - 0.5 ** 0.2)
    p = 1 / (1 + fp_w + EPS)
    want = 2 * p / (1 + p + EPS)
    m = SaliencyMetric()
    m.update(np.array([[1.0, 0.5, 0.0]]), np.array([[1, 0, 0]], dtype=bool))
    assert m.compute()["wfm"] == pytest.approx(want, rel=1e-12)
    # G = [1 1 0], S = [.5 1 0]: E = [.5 0 0], Et = E (the background's nearest foreground pixel
    # is pixel 1, error 0). On one row only the kernel's centre row K[3, :] reaches:
    # EA_0 = K33 * 0.5 < E_0 replaces it; EA_1 = K32 * 0.5 > E_1 = 0 does not.
    # Ew = [0.5 K33, 0, 0]: TPw = 2 - 0.5 K33, FPw = 0, R = 1 - 0.25 K33.
    k33 = _gauss_7x7_sigma5()[3, 3]
    tp_w = 2 - 0.5 * k33
    r, p = 1 - 0.25 * k33, tp_w / (tp_w + EPS)
    got = weighted_f_measure(np.array([[0.5, 1.0, 0.0]]), np.array([[1, 1, 0]], dtype=bool))
    assert got == pytest.approx(2 * r * p / (r + p + EPS), rel=1e-12)


def test_weighted_f_matches_direct_computation_on_random_maps():
    rng = np.random.default_rng(7)
    preds = rng.uniform(size=(3, 9, 12))
    gts = rng.uniform(size=(3, 9, 12)) < 0.3
    preds[gts] = np.clip(preds[gts] + 0.4, 0, 1)
    m = SaliencyMetric()
    m.update(preds, gts)
    want = []
    for s, g in zip(preds, gts):
        s = (s - s.min()) / (s.max() - s.min())  # PySOD min-max normalisation
        want.append(_wfm_direct(s, g))
        assert weighted_f_measure(s, g) == pytest.approx(want[-1], rel=1e-12)
    assert m.compute()["wfm"] == pytest.approx(np.mean(want), rel=1e-12)


def test_weighted_f_edge_cases():
    g = np.zeros((5, 6), dtype=bool)
    g[1:3, 2:5] = True
    rng = np.random.default_rng(8)
    # All-background GT scores 0 whatever the prediction (PySODMetrics).
    assert weighted_f_measure(rng.uniform(size=(5, 6)), np.zeros((5, 6), bool)) == 0.0
    # All-foreground GT, constant prediction c on one pixel: E = 1 - c, EA = K33 E < E,
    # so R = 1 - K33 (1 - c), FPw = 0, P = TPw / (TPw + eps) with TPw = R.
    k33 = _gauss_7x7_sigma5()[3, 3]
    r = 1 - k33 * 0.6
    p = r / (r + EPS)
    assert weighted_f_measure(np.array([[0.4]]), np.array([[True]])) == pytest.approx(
        2 * r * p / (r + p + EPS), rel=1e-12)
    assert weighted_f_measure(np.ones((5, 6)), np.ones((5, 6), bool)) == pytest.approx(1.0)
    # A perfect map scores 1; all-zero, constant and all-one predictions (never min-max
    # normalised) against the direct computation.
    assert weighted_f_measure(g.astype(float), g) == pytest.approx(1.0)
    for const in (0.0, 0.5, 1.0):
        s = np.full((5, 6), const)
        m = SaliencyMetric()
        m.update(s, g)
        assert m.compute()["wfm"] == pytest.approx(_wfm_direct(s, g), rel=1e-12, abs=1e-15)


def test_weighted_f_ties():
    # Pixel 1 of G = [1 0 1] is equally far (d = 1) from both foreground pixels; their errors are
    # equal (S = [.8 .3 .8]), so whichever one the distance transform picks, Et = [.2 .2 .2].
    # On one row EA_0 = EA_2 = 0.2 (K33 + K34 + K35) < 0.2 = E_0 replaces the foreground errors:
    # Ew = [EA_0, 0.3 B_1, EA_0], TPw = 2 - 2 EA_0, FPw = 0.3 B_1, R = 1 - EA_0.
    k = _gauss_7x7_sigma5()
    ea0 = 0.2 * (k[3, 3] + k[3, 4] + k[3, 5])
    tp_w, fp_w, r = 2 - 2 * ea0, 0.3 * (2 - 0.5 ** 0.2), 1 - ea0
    p = tp_w / (tp_w + fp_w + EPS)
    s = np.array([[0.8, 0.3, 0.8]])
    g = np.array([[1, 0, 1]], dtype=bool)
    assert weighted_f_measure(s, g) == pytest.approx(2 * r * p / (r + p + EPS), rel=1e-12)
    assert weighted_f_measure(s, g) == pytest.approx(_wfm_direct(s, g), rel=1e-12)
    # Tied prediction values (a two-level map) need no threshold: the continuous map is used.
    s2 = np.where(g, 0.7, 0.2)
    assert weighted_f_measure(s2, g) == pytest.approx(_wfm_direct(s2, g), rel=1e-12)


def test_weighted_f_merges_and_can_be_switched_off():
    rng = np.random.default_rng(9)
    s = rng.uniform(size=(4, 7, 8))
    g = rng.uniform(size=(4, 7, 8)) < 0.4
    whole = SaliencyMetric()
    whole.update(s, g)
    a, b = SaliencyMetric(), SaliencyMetric()
    a.update(s[:1], g[:1])
    b.update(s[1:], g[1:])
    assert a.merge(b).compute()["wfm"] == pytest.approx(whole.compute()["wfm"], rel=1e-12)
    off = SaliencyMetric(weighted_f=False)
    off.update(s, g)
    r_off, r_on = off.compute(), whole.compute()
    assert math.isnan(r_off["wfm"])
    assert all(r_off[k] == r_on[k] for k in r_on if k != "wfm")  # nothing else changes
    with pytest.raises(ValueError, match="different settings"):
        whole.merge(off)
    assert math.isnan(SaliencyMetric().compute()["wfm"])


def test_weighted_f_without_scipy(monkeypatch):
    import bidense.metrics.saliency as saliency

    monkeypatch.setattr(saliency, "ndimage", None)
    with pytest.warns(UserWarning, match="scipy is not installed"):
        m = SaliencyMetric()
    m.update(np.array([[0.9, 0.1]]), np.array([[1, 0]]))
    r = m.compute()
    assert math.isnan(r["wfm"]) and r["mae"] == 0.0  # min-max normalised: a perfect map
    with pytest.raises(ImportError, match="needs scipy"):
        SaliencyMetric(weighted_f=True)
    with pytest.raises(ImportError, match="needs scipy"):
        weighted_f_measure(np.array([[0.5]]), np.array([[True]]))
