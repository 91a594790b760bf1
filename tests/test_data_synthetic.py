"""Synthetic scene generator: determinism, exact depth, class/saliency consistency, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bidense.data import OBJECT_CLASSES, ROAD_CLASSES, SyntheticScenes, generate_scenes
from bidense.data.transforms import train_transforms

SIZE = (48, 64)


@pytest.fixture(scope="module")
def objects() -> dict[str, np.ndarray]:
    return generate_scenes(4, SIZE, seed=3, split="train", kind="objects")


@pytest.fixture(scope="module")
def road() -> dict[str, np.ndarray]:
    return generate_scenes(4, SIZE, seed=3, split="train", kind="road")


def _rays(K: np.ndarray, R: np.ndarray, h: int, w: int) -> np.ndarray:
    """World ray of every pixel centre, scaled so that its camera-frame z is 1 (float64)."""
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    cam = np.stack([x, y, np.ones_like(x)], axis=-1)
    return cam @ R.T


def test_deterministic_and_independent_of_count(objects) -> None:
    again = generate_scenes(4, SIZE, seed=3, split="train", kind="objects")
    for k in objects:
        np.testing.assert_array_equal(objects[k], again[k])
    first2 = generate_scenes(2, SIZE, seed=3, split="train", kind="objects")
    np.testing.assert_array_equal(first2["image"], objects["image"][:2])
    other = generate_scenes(2, SIZE, seed=4, split="train", kind="objects")
    assert not np.array_equal(other["image"], objects["image"][:2])
    val = generate_scenes(2, SIZE, seed=3, split="val", kind="objects")
    assert not np.array_equal(val["image"], objects["image"][:2])


@pytest.mark.parametrize("kind,ground_cls", [("objects", 1), ("road", 1)])
def test_ground_depth_equals_analytic_plane_depth(kind, ground_cls, objects, road) -> None:
    data = objects if kind == "objects" else road
    h, w = SIZE
    for i in range(4):
        K, R, C = data["K"][i], data["R"][i], data["C"][i]
        # Camera frame (y down) is right-handed, world frame (y up, z forward) left-handed.
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), -1.0)
        d = _rays(K, R, h, w)
        ground = data["classes"][i] == ground_cls
        assert ground.sum() > 50
        plane = -C[1] / d[..., 1]  # camera at height C_y above y = 0
        np.testing.assert_allclose(data["depth"][i][ground], plane[ground], rtol=2e-6)


@pytest.mark.parametrize("kind", ["objects", "road"])
def test_depth_is_planar_z_and_sky_is_zero(kind, objects, road) -> None:
    data = objects if kind == "objects" else road
    h, w = SIZE
    for i in range(4):
        K, R, C, depth = data["K"][i], data["R"][i], data["C"][i], data["depth"][i]
        d = _rays(K, R, h, w)
        P = C + depth[..., None].astype(np.float64) * d
        z_cam = (P - C) @ R  # world -> camera frame; column 2 is the optical axis
        hit = depth > 0
        np.testing.assert_allclose(z_cam[..., 2][hit], depth[hit], rtol=1e-6)
        assert (P[..., 1][hit] > -1e-3).all()  # nothing is rendered below the ground
        np.testing.assert_array_equal(depth == 0, data["classes"][i] == 0)
        assert np.isfinite(depth).all() and depth.dtype == np.float32


def test_classes_and_saliency_consistent(objects, road) -> None:
    assert objects["classes"].max() < len(OBJECT_CLASSES)
    assert road["classes"].max() < len(ROAD_CLASSES)
    for i in range(4):
        sal, inst, cls = objects["saliency"][i], objects["instance"][i], objects["classes"][i]
        assert set(np.unique(sal)) <= {0, 1}
        counts = np.bincount(inst.ravel().astype(np.int64))
        counts[0] = 0
        if counts.max() == 0:
            assert sal.sum() == 0
            continue
        ids = np.unique(inst[sal == 1])
        assert len(ids) == 1 and ids[0] > 0
        assert (inst == ids[0]).sum() == counts.max()  # the largest visible object
        np.testing.assert_array_equal(sal == 1, inst == ids[0])
        assert len(np.unique(cls[sal == 1])) == 1 and cls[sal == 1][0] >= 3
        # Stuff (sky/ground/wall) has no instance id.
        assert (inst[cls <= 2] == 0).all()
    np.testing.assert_array_equal(road["road"], (road["classes"] == 1).astype(np.uint8))
    assert road["road"].any()
    assert objects["image"].dtype == np.uint8 and objects["image"].shape == (4, *SIZE, 3)


def test_dataset_caches_and_reloads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BIDENSE_CACHE", str(tmp_path / "cache"))
    ds = SyntheticScenes(split="val", task="depth", size=SIZE, num_images=4, seed=3)
    assert ds.path.parent == tmp_path / "cache" / "synthetic" and ds.path.exists()
    assert ds.generation_seconds is not None
    assert not list(ds.path.parent.glob("*.tmp"))
    again = SyntheticScenes(split="val", task="depth", size=SIZE, num_images=4, seed=3)
    assert again.generation_seconds is None  # loaded from the cache
    fresh = generate_scenes(4, SIZE, seed=3, split="val", kind="objects")
    item = again[2]
    np.testing.assert_array_equal(item["target"][0].numpy(), fresh["depth"][2])
    np.testing.assert_allclose(item["image"].numpy().transpose(1, 2, 0),
                               fresh["image"][2] / 255.0, atol=1e-6)
    # A corrupt cache file is regenerated rather than crashing.
    ds.path.write_bytes(b"not a zip")
    third = SyntheticScenes(split="val", task="depth", size=SIZE, num_images=4, seed=3)
    assert third.generation_seconds is not None


@pytest.mark.parametrize("task", ["seg", "depth", "saliency", "road"])
def test_dataset_tasks(tmp_path, task) -> None:
    ds = SyntheticScenes(tmp_path, split="train", task=task, size=SIZE, num_images=2, seed=3)
    item = ds[1]
    assert item["image"].shape == (3, *SIZE) and item["image"].dtype == torch.float32
    if task == "seg":
        assert item["target"].dtype == torch.int64 and item["target"].shape == SIZE
        assert ds.num_classes == len(OBJECT_CLASSES) and ds.class_names == OBJECT_CLASSES
    else:
        assert item["target"].shape == (1, *SIZE) and item["target"].dtype == torch.float32
    if task in ("saliency", "road"):
        assert set(torch.unique(item["target"]).tolist()) <= {0.0, 1.0}
    assert ds.scene == ("road" if task == "road" else "objects")


def test_dataset_augmentation_seeded(tmp_path) -> None:
    ds = SyntheticScenes(tmp_path, task="seg", size=SIZE, num_images=2, seed=3,
                         transform=train_transforms("seg", (32, 32)), aug_seed=7)
    a, b = ds[0], ds[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    outs = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        outs.add(ds[0]["target"].numpy().tobytes())
    assert len(outs) > 1


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="scene"):
        SyntheticScenes(tmp_path, task="road", scene="objects", num_images=1, size=SIZE)
    with pytest.raises(ValueError, match="split"):
        SyntheticScenes(tmp_path, split="nope", num_images=1, size=SIZE)
