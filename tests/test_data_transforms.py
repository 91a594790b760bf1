"""Joint transforms: alignment of image and target, padding, determinism, formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bidense.data import transforms as T

PALETTE = np.array([[10 + 23 * k, 250 - 19 * k, (97 * k) % 256] for k in range(10)],
                   dtype=np.uint8)


def _block_pair(h: int = 40, w: int = 56, block: int = 8, seed: int = 0):
    """A random class map made of blocks and an image whose colour encodes the class."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 10, size=(h // block, w // block))
    label = np.kron(small, np.ones((block, block), dtype=np.int64))
    return PALETTE[label], label


def _interior(target: np.ndarray, r: int) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood has one target value (away from edges)."""
    h, w = target.shape
    ok = np.zeros_like(target, dtype=bool)
    pad = np.pad(target, r, mode="edge")
    same = np.ones_like(target, dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            same &= pad[r + dy:r + dy + h, r + dx:r + dx + w] == target
    ok[r:h - r, r:w - r] = same[r:h - r, r:w - r]
    return ok


def _assert_aligned(img: np.ndarray, tgt: np.ndarray, r: int, ignore: int = 255) -> int:
    inside = _interior(tgt, r) & (tgt != ignore)
    np.testing.assert_allclose(img[inside].astype(float), PALETTE[tgt[inside]].astype(float),
                               atol=2.0)
    return int(inside.sum())


@pytest.mark.parametrize("seed", range(12))
def test_scale_crop_flip_keep_image_and_label_aligned(seed: int) -> None:
    img, lab = _block_pair(seed=seed)
    comp = T.Compose([T.RandomScale((0.5, 2.0)), T.RandomCrop((36, 44), target_fill=255),
                      T.RandomHorizontalFlip(0.5)])
    out_img, out_lab = comp(img, lab, rng=seed)
    assert out_img.shape == (36, 44, 3) and out_lab.shape == (36, 44)
    assert _assert_aligned(out_img, out_lab, r=2) > 50
    # Padding: ignore in the label exactly where the image got the 0 fill.
    pad = out_lab == 255
    assert (out_img[pad] == 0).all()


def test_flip_applied_to_one_only_would_be_caught() -> None:
    img, lab = _block_pair(seed=3)
    with pytest.raises(AssertionError):
        _assert_aligned(img[:, ::-1], lab, r=1)
    out_img, out_lab = T.RandomHorizontalFlip(p=1.0)(img, lab, rng=0)
    np.testing.assert_array_equal(out_img, img[:, ::-1])
    np.testing.assert_array_equal(out_lab, lab[:, ::-1])
    out_img, out_lab = T.RandomHorizontalFlip(p=0.0)(img, lab, rng=0)
    np.testing.assert_array_equal(out_img, img)


@pytest.mark.parametrize("seed", range(6))
def test_rotation_aligned_and_nearest_for_target(seed: int) -> None:
    img, lab = _block_pair(seed=seed)
    out_img, out_lab = T.RandomRotation(10.0, target_fill=255)(img, lab, rng=seed)
    assert set(np.unique(out_lab)) <= set(np.unique(lab)) | {255}
    assert _assert_aligned(out_img, out_lab, r=1) > 100
    depth = np.random.default_rng(seed).uniform(1, 10, size=(20, 30)).astype(np.float32)
    _, d2 = T.RandomRotation(2.5, target_fill=0.0)(np.zeros((20, 30, 3), np.uint8), depth,
                                                   rng=seed)
    # Nearest resampling never blends depths: every output value is an input value or 0.
    assert np.isin(d2, np.r_[depth.ravel(), 0.0]).all()


def test_random_crop_pads_right_bottom_with_fills() -> None:
    img = np.full((5, 6, 3), 7, np.uint8)
    depth = np.full((5, 6), 3.5, np.float32)
    out_img, out_d = T.RandomCrop((8, 9), image_fill=0, target_fill=0.0)(img, depth, rng=0)
    assert out_img.shape == (8, 9, 3)
    np.testing.assert_array_equal(out_d[:5, :6], 3.5)
    assert (out_d[5:, :] == 0).all() and (out_d[:, 6:] == 0).all()
    assert (out_img[:5, :6] == 7).all() and (out_img[5:] == 0).all()
    seg = np.ones((5, 6), np.int64)
    _, out_s = T.RandomCrop(8, target_fill=255)(img, seg, rng=0)
    assert (out_s[5:] == 255).all() and (out_s[:5, :6] == 1).all()


def test_determinism_under_seed() -> None:
    img, lab = _block_pair(seed=1)
    def make() -> T.Compose:
        return T.train_transforms("seg", (24, 24), seed=5)
    a1, b1 = make()(img, lab)
    a2, b2 = make()(img, lab)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    c1, d1 = make()(img, lab, rng=11)
    c2, d2 = make()(img, lab, rng=np.random.default_rng(11))
    assert torch.equal(c1, c2) and torch.equal(d1, d2)
    outs = {make()(img, lab, rng=s)[1].numpy().tobytes() for s in range(6)}
    assert len(outs) > 1  # different seeds give different crops


def test_photometric_jitter_formula() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    t = T.PhotometricJitter(p=1.0, gamma=(1.2, 1.2), brightness=(0.8, 0.8), colour=(0.9, 0.9))
    out, tgt = t(img, np.zeros((4, 5)), rng=3)
    expected = np.clip((img / 255.0) ** 1.2 * 0.8 * 0.9, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32 and (tgt == 0).all()
    out2, _ = T.PhotometricJitter(p=0.0)(img, None, rng=3)
    np.testing.assert_allclose(out2, img / 255.0, atol=1e-7)


def test_normalize_and_to_tensor() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    x, _ = T.Normalize()(img, None)
    mean, std = np.array(T.IMAGENET_MEAN), np.array(T.IMAGENET_STD)
    np.testing.assert_allclose(x, (img.astype(np.float64) / 255 - mean) / std, rtol=1e-5)
    ti, tt = T.ToTensor("seg")(x, np.array([[1, 2, 255], [0, 0, 3]]))
    assert ti.shape == (3, 2, 3) and ti.dtype == torch.float32 and tt.dtype == torch.int64
    assert tt.shape == (2, 3)
    _, td = T.ToTensor("depth")(x, np.ones((2, 3), np.float32))
    assert td.shape == (1, 2, 3) and td.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown task"):
        T.ToTensor("nope")
    # Without a task the target layout follows its dtype (integer -> seg, float -> (1, H, W)).
    _, auto_seg = T.ToTensor()(x, np.array([[1, 2, 255], [0, 0, 3]]))
    _, auto_depth = T.ToTensor()(x, np.full((2, 3), 2.5, np.float32))
    assert auto_seg.dtype == torch.int64 and auto_seg.shape == (2, 3)
    assert auto_depth.dtype == torch.float32 and auto_depth.shape == (1, 2, 3)
    assert float(auto_depth[0, 1, 2]) == 2.5


def test_resize_sizes_and_nearest_target() -> None:
    img, lab = _block_pair(h=16, w=24, block=8)
    out_img, out_lab = T.Resize((32, 48))(img, lab)
    assert out_img.shape == (32, 48, 3)
    # Exact 2x nearest: each label pixel becomes a 2x2 block.
    np.testing.assert_array_equal(out_lab, np.kron(lab, np.ones((2, 2), np.int64)))
    _assert_aligned(out_img, out_lab, r=1)
    si, sl = T.Resize(8)(img, lab)  # short side 16 -> 8
    assert si.shape[:2] == (8, 12) and sl.shape == (8, 12)
    fi, _ = T.Resize((8, 12))(img.astype(np.float32) / 255, None)
    assert fi.dtype == np.float32 and fi.shape == (8, 12, 3)


@pytest.mark.parametrize("task", T.TASKS)
def test_presets_shapes(task: str) -> None:
    img, lab = _block_pair(h=32, w=40)
    target = {"seg": lab, "depth": lab.astype(np.float32) + 1,
              "saliency": (lab > 4).astype(np.float32), "road": (lab > 4).astype(np.float32)}[task]
    x, y = T.train_transforms(task, (24, 32), seed=0)(img, target)
    assert x.shape == (3, 24, 32) and x.dtype == torch.float32
    assert tuple(y.shape[-2:]) == (24, 32)
    xe, ye = T.eval_transforms(task)(img, target)
    assert xe.shape == (3, 32, 40)
    if task == "depth":
        # Depth targets keep their metric values (no scaling, nearest sampling).
        assert np.isin(y.numpy(), np.r_[np.unique(target), 0.0]).all()


def test_crop_and_center_crop() -> None:
    img, lab = _block_pair(h=16, w=24)
    ci, cl = T.Crop(2, 3, 10, 12)(img, lab)
    np.testing.assert_array_equal(cl, lab[2:12, 3:15])
    np.testing.assert_array_equal(ci, img[2:12, 3:15])
    with pytest.raises(ValueError, match="exceeds"):
        T.Crop(10, 0, 10, 5)(img, lab)
    _, cc = T.CenterCrop((8, 8))(img, lab)
    np.testing.assert_array_equal(cc, lab[4:12, 8:16])
