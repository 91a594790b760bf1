"""Losses: values against float64 numpy formulas, gradient sanity, masking, build_loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bidense.losses import (
    DistillationLoss,
    RoadLoss,
    SaliencyLoss,
    SegmentationLoss,
    SILogLoss,
    build_loss,
)


def _log_softmax_np(z: np.ndarray, axis: int = 1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _v(t: torch.Tensor) -> float:
    return float(t.detach())


def _sigmoid_np(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------- segmentation
def test_segmentation_ce_matches_numpy_with_ignore_and_weights():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0] = 255
    w = np.array([0.5, 1.0, 2.0])
    lsm = _log_softmax_np(logits.detach().numpy())
    t = target.numpy()
    nll, wsum = 0.0, 0.0
    nll_u, count = 0.0, 0
    for b, i, j in np.ndindex(t.shape):
        if t[b, i, j] == 255:
            continue
        c = t[b, i, j]
        nll += -w[c] * lsm[b, c, i, j]
        wsum += w[c]
        nll_u += -lsm[b, c, i, j]
        count += 1
    assert _v(SegmentationLoss()(logits, target)) == pytest.approx(nll_u / count, rel=1e-12)
    loss = SegmentationLoss(weight=torch.tensor(w))(logits, target.unsqueeze(1))
    assert _v(loss) == pytest.approx(nll / wsum, rel=1e-12)
    loss.backward()
    assert torch.all(logits.grad[0, :, 0] == 0)  # ignored row gets no gradient
    assert logits.grad[1].abs().sum() > 0


def test_segmentation_all_ignored_is_zero_with_grad():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = SegmentationLoss()(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert _v(loss) == 0.0 and torch.all(logits.grad == 0)
    with pytest.raises(ValueError, match="label 5"):
        SegmentationLoss()(logits, torch.tensor([[[0, 5], [1, 255]]]))


# ---------------------------------------------------------------- SILog
def test_silog_matches_numpy_over_all_batch_pixels():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.0, 5.0, (2, 1, 3, 4))
    gt[0, 0, 0, 0] = 0.0
    gt[1, 0, 1, :2] = 0.05  # below min_depth
    pred = rng.uniform(0.5, 5.0, gt.shape)
    p = torch.tensor(pred, requires_grad=True)
    loss = SILogLoss(min_depth=0.1)(p, torch.tensor(gt))
    v = gt > 0.1
    d = np.log(pred[v] + 1e-7) - np.log(gt[v] + 1e-7)  # pooled over the batch, not per image
    want = 10 * np.sqrt(np.mean(d**2) - 0.85 * np.mean(d) ** 2)
    assert _v(loss) == pytest.approx(want, rel=1e-12)
    loss.backward()
    assert torch.all(p.grad[~torch.from_numpy(v)] == 0)
    assert torch.isfinite(p.grad).all()


def test_silog_gradient_and_scale_invariance():
    rng = np.random.default_rng(1)
    gt = torch.tensor(rng.uniform(1.0, 5.0, (1, 3, 3)))
    pred = torch.tensor(rng.uniform(1.0, 5.0, (1, 3, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: SILogLoss()(x, gt), (pred,))
    # lambd = 1: only the variance of the log error counts, so a global scale does not matter.
    full = SILogLoss(lambd=1.0, eps=0.0)
    assert _v(full(pred * 3.0, gt)) == pytest.approx(_v(full(pred, gt)), rel=1e-9)
    # Perfect prediction: zero loss and a finite gradient.
    perfect = gt.clone().requires_grad_(True)
    loss = SILogLoss()(perfect, gt)
    loss.backward()
    assert _v(loss) < 1e-4 and torch.isfinite(perfect.grad).all()
    none_valid = SILogLoss(min_depth=10.0)(pred, gt)
    assert _v(none_valid) == 0.0


# ---------------------------------------------------------------- saliency
def test_saliency_bce_plus_iou_matches_numpy():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2, 1, 4, 4))
    g = (rng.uniform(size=z.shape) < 0.4).astype(np.float64)
    s = _sigmoid_np(z)
    bce = np.mean(-g * np.log(s) - (1 - g) * np.log(1 - s))
    inter = (s * g).reshape(2, -1).sum(1)
    union = (s + g - s * g).reshape(2, -1).sum(1)
    iou = np.mean(1 - (inter + 1) / (union + 1))
    zt = torch.tensor(z, requires_grad=True)
    loss = SaliencyLoss()(zt, torch.tensor(g))
    assert _v(loss) == pytest.approx(bce + iou, rel=1e-12)
    probs = SaliencyLoss(from_logits=False, iou_weight=2.0, smooth=0.0)(
        torch.tensor(s), torch.tensor(g)
    )
    iou0 = np.mean(1 - inter / union)
    assert _v(probs) == pytest.approx(bce + 2 * iou0, rel=1e-9)
    assert torch.autograd.gradcheck(lambda x: SaliencyLoss()(x, torch.tensor(g)), (zt,))


# ---------------------------------------------------------------- road
def test_road_bce_ignores_dont_care_pixels():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 1, 3, 3))
    t = (rng.uniform(size=z.shape) < 0.5).astype(np.int64)
    t[0, 0, 0] = 255
    v = t != 255
    s = _sigmoid_np(z[v])
    y = t[v].astype(np.float64)
    want = np.mean(-2.0 * y * np.log(s) - (1 - y) * np.log(1 - s))
    zt = torch.tensor(z, requires_grad=True)
    loss = RoadLoss(pos_weight=2.0)(zt, torch.tensor(t))
    assert _v(loss) == pytest.approx(want, rel=1e-12)
    loss.backward()
    assert torch.all(zt.grad[0, 0, 0] == 0) and zt.grad.abs().sum() > 0
    all_ign = RoadLoss()(zt, torch.full_like(torch.tensor(t), 255))
    assert _v(all_ign) == 0.0
    with pytest.raises(ValueError, match="road labels"):
        RoadLoss()(zt, torch.full_like(torch.tensor(t), 3))


# ---------------------------------------------------------------- distillation
def test_distillation_kl_matches_numpy_and_gradients():
    rng = np.random.default_rng(4)
    zs = rng.normal(size=(2, 4, 3, 3))
    zt = rng.normal(size=(2, 4, 3, 3)) * 2
    for temp in (1.0, 2.5):
        ls, lt = _log_softmax_np(zs / temp), _log_softmax_np(zt / temp)
        kl = (np.exp(lt) * (lt - ls)).sum(1)  # (B, H, W)
        student = torch.tensor(zs, requires_grad=True)
        teacher = torch.tensor(zt, requires_grad=True)
        loss = DistillationLoss(temperature=temp)(student, teacher)
        assert _v(loss) == pytest.approx(temp**2 * kl.mean(), rel=1e-12)
        loss.backward()
        assert teacher.grad is None  # the teacher is detached
        assert student.grad.abs().sum() > 0
    mask = np.zeros((2, 3, 3), dtype=bool)
    mask[0, 1] = True
    masked = DistillationLoss()(torch.tensor(zs), torch.tensor(zt), torch.tensor(mask))
    ls, lt = _log_softmax_np(zs), _log_softmax_np(zt)
    assert _v(masked) == pytest.approx((np.exp(lt) * (lt - ls)).sum(1)[mask].mean())
    same = DistillationLoss()(torch.tensor(zs), torch.tensor(zs))
    assert _v(same) == pytest.approx(0.0, abs=1e-12)
    s2 = torch.tensor(zs[:, :, 0, 0], requires_grad=True)  # (B, K) classification logits
    assert torch.autograd.gradcheck(
        lambda x: DistillationLoss()(x, torch.tensor(zt[:, :, 0, 0])), (s2,)
    )


def test_distillation_single_channel_is_binary_kl():
    rng = np.random.default_rng(5)
    zs = rng.normal(size=(2, 1, 3, 3))
    zt = rng.normal(size=(2, 1, 3, 3))
    ps, pt = _sigmoid_np(zs / 2.0), _sigmoid_np(zt / 2.0)
    kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
    loss = DistillationLoss(temperature=2.0)(torch.tensor(zs), torch.tensor(zt))
    assert _v(loss) == pytest.approx(4.0 * kl.mean(), rel=1e-10)


def test_half_precision_inputs_are_upcast():
    rng = np.random.default_rng(6)
    gt = torch.tensor(rng.uniform(1.0, 5.0, (1, 1, 8, 8)), dtype=torch.float32)
    pred = torch.tensor(rng.uniform(1.0, 5.0, (1, 1, 8, 8)), dtype=torch.float32)
    half = SILogLoss()(pred.bfloat16(), gt)
    assert half.dtype == torch.float32
    assert _v(half) == pytest.approx(_v(SILogLoss()(pred.bfloat16().float(), gt)), rel=1e-6)


def test_build_loss():
    assert isinstance(build_loss("seg", ignore_index=21), SegmentationLoss)
    assert build_loss("segmentation").ignore_index == 255
    depth = build_loss("depth", min_depth=1.0)
    assert isinstance(depth, SILogLoss) and depth.min_depth == 1.0 and depth.lambd == 0.85
    assert isinstance(build_loss("saliency"), SaliencyLoss)
    assert isinstance(build_loss("road"), RoadLoss)
    assert isinstance(build_loss("distill", temperature=2.0), DistillationLoss)
    assert isinstance(build_loss("silog"), SILogLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("panoptic")
