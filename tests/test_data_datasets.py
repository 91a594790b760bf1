"""Real-dataset loaders on tiny fixture trees built in each published on-disk layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from bidense.data import (
    ADE20K,
    DUTS,
    ECSSD,
    VOC2012,
    Cityscapes,
    DatasetError,
    ImageLabelFolder,
    KITTIDepth,
    KITTIRoad,
    NYUv2,
    NYUv2BTS,
    SaliencyFolder,
    build_dataset,
    list_datasets,
    voc_palette,
)
from bidense.data.transforms import train_transforms

H, W = 6, 8


def _rgb(path: Path, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _gray(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)


def _u16(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint16)).save(path)


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


# ---------------------------------------------------------------------------------------- ADE20K
def _ade(tmp_path: Path) -> Path:
    root = tmp_path / "ADEChallengeData2016"
    lab = np.array([[0, 1, 2, 150, 75, 0, 3, 149]] * H, dtype=np.uint8)
    for split in ("training", "validation"):
        for i in range(2):
            _rgb(root / "images" / split / f"ADE_{split}_{i}.jpg", seed=i)
            _gray(root / "annotations" / split / f"ADE_{split}_{i}.png", lab)
    return root


def test_ade20k_reduce_zero_label(tmp_path) -> None:
    _ade(tmp_path)
    ds = ADE20K(tmp_path, "train")  # parent folder is resolved to ADEChallengeData2016
    assert len(ds) == 2 and ds.num_classes == 150 and len(ds.class_names) == 150
    item = ds[0]
    assert item["image"].shape == (3, H, W) and item["name"] == "ADE_training_0"
    expected = [255, 0, 1, 149, 74, 255, 2, 148]  # 0 -> 255, k -> k - 1
    assert item["target"][0].tolist() == expected and item["target"].dtype == torch.int64
    raw = ADE20K(tmp_path / "ADEChallengeData2016", "val", reduce_zero_label=False)
    assert raw[1]["target"][0].tolist() == [0, 1, 2, 150, 75, 0, 3, 149]
    assert raw.num_classes == 151


def test_ade20k_bad_inputs(tmp_path) -> None:
    root = _ade(tmp_path)
    _gray(root / "annotations" / "training" / "ADE_training_1.png", np.full((H, W), 151))
    ds = ADE20K(root, "train")
    with pytest.raises(DatasetError) as e:
        ds[1]
    _one_line(e, "ADE_training_1.png", "151")
    (root / "annotations" / "validation" / "ADE_validation_0.png").unlink()
    with pytest.raises(DatasetError) as e:
        ADE20K(root, "val")
    _one_line(e, "ADE_validation_0.jpg", "no label")


# ------------------------------------------------------------------------------------ Cityscapes
CITY_TABLE = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_cityscapes_label_ids_to_train_ids(tmp_path) -> None:
    root = tmp_path / "cityscapes"
    ids = np.r_[np.arange(34), 255, 0].reshape(6, 6)  # every labelId 0..33 plus 255
    _rgb(root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png", 6, 6)
    _gray(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png", ids)
    _rgb(root / "leftImg8bit/train/bremen/bremen_000001_000019_leftImg8bit.png", 6, 6)
    trn = np.full((6, 6), 255)
    trn[0, :3] = [0, 18, 5]
    _gray(root / "gtFine/train/bremen/bremen_000001_000019_gtFine_labelIds.png", ids)
    _gray(root / "gtFine/train/bremen/bremen_000001_000019_gtFine_labelTrainIds.png", trn)
    ds = Cityscapes(tmp_path, "train")
    assert [s.name for s in ds.samples] == ["aachen/aachen_000000_000019",
                                            "bremen/bremen_000001_000019"]
    got = ds[0]["target"].numpy()
    for v, t in zip(ids.ravel(), got.ravel(), strict=True):
        assert t == CITY_TABLE.get(int(v), 255), (v, t)
    np.testing.assert_array_equal(ds[1]["target"].numpy(), trn)  # auto: trainIds file wins
    forced = Cityscapes(root, "train", label_type="labelIds")
    np.testing.assert_array_equal(forced[1]["target"].numpy(), got)
    assert ds.num_classes == 19 and ds.class_names[13] == "car"
    _gray(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png",
          np.full((6, 6), 40))
    with pytest.raises(DatasetError) as e:
        ds[0]
    _one_line(e, "aachen_000000_000019_gtFine_labelIds.png", "40")


# ------------------------------------------------------------------------------------------- VOC
def _voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    lab = np.r_[np.arange(21), 255, 0, 5, 7, 9, 11, 13, 15, 17, 19, 20, 1, 2, 3, 4,
                5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16].reshape(H, W).astype(np.uint8)
    for name in ("2007_000032", "2007_000039"):
        _rgb(root / "JPEGImages" / f"{name}.jpg")
        im = Image.fromarray(lab, mode="P")
        im.putpalette(voc_palette().ravel().tolist())
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        im.save(root / "SegmentationClass" / f"{name}.png")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n2007_000039\n")
    (sets / "val.txt").write_text("2007_000039\n")
    (sets / "empty.txt").write_text("\n")
    (sets / "broken.txt").write_text("2007_000032\n2007_999999\n")
    return root


def test_voc_palette_indices_and_lists(tmp_path) -> None:
    root = _voc(tmp_path)
    ds = VOC2012(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names[15] == "person"
    lab = np.asarray(Image.open(root / "SegmentationClass/2007_000032.png"))
    np.testing.assert_array_equal(ds[0]["target"].numpy(), lab)
    assert [s.name for s in VOC2012(root, "val").samples] == ["2007_000039"]
    # An RGB colour-coded label maps back to the same indices through the VOC palette.
    rgb = voc_palette()[lab]
    Image.fromarray(rgb).save(root / "SegmentationClass/2007_000039.png")
    np.testing.assert_array_equal(ds[1]["target"].numpy(), lab)


def test_voc_bad_inputs(tmp_path) -> None:
    root = _voc(tmp_path)
    with pytest.raises(DatasetError) as e:
        VOC2012(root, "empty")
    _one_line(e, "empty.txt", "empty split")
    with pytest.raises(DatasetError) as e:
        VOC2012(root, "broken")
    _one_line(e, "broken.txt:2", "2007_999999", "not found")
    with pytest.raises(FileNotFoundError) as e:
        VOC2012(root, "nosuchsplit")
    _one_line(e, "nosuchsplit.txt", "not found")
    im = Image.fromarray(np.full((H, W), 21, np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(root / "SegmentationClass/2007_000039.png")
    with pytest.raises(DatasetError) as e:
        VOC2012(root, "val")[0]
    _one_line(e, "2007_000039.png", "21", "outside [0, 20]")


# ----------------------------------------------------------------------------------------- NYUv2
def _nyu(tmp_path: Path, n: int = 4, h: int = 5, w: int = 7):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, size=(n, h, w)).astype(np.float32)
    labels = rng.integers(0, 895, size=(n, h, w)).astype(np.uint16)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)  # N x 3 x W x H as MATLAB v7.3 stores it
        f["depths"] = depths.transpose(0, 2, 1)
        f["rawDepths"] = depths.transpose(0, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [3]]),
                                               "testNdxs": np.array([[2], [4]])})
    return images, depths, labels


def test_nyuv2_labeled_mat_and_one_based_splits(tmp_path) -> None:
    images, depths, labels = _nyu(tmp_path)
    tr = NYUv2(tmp_path, "train")
    assert [s.name for s in tr.samples] == ["nyu_0000", "nyu_0002"]  # 1-based -> 0-based
    item = tr[1]
    np.testing.assert_allclose(item["image"].numpy().transpose(1, 2, 0), images[2] / 255.0,
                               atol=1e-6)
    np.testing.assert_array_equal(item["target"][0].numpy(), depths[2])
    te = NYUv2(tmp_path, "test", task="seg")
    lab = labels[3].astype(np.int64)
    np.testing.assert_array_equal(te[1]["target"].numpy(), np.where(lab == 0, 255, lab - 1))
    # Pickling (DataLoader workers) drops the open HDF5 handle and reopens it.
    import pickle
    clone = pickle.loads(pickle.dumps(tr))
    np.testing.assert_array_equal(clone[0]["target"][0].numpy(), depths[0])


def test_nyuv2_bad_inputs(tmp_path) -> None:
    _nyu(tmp_path)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "a") as f:
        d = f["depths"][...]
        d[2, 1, 1] = np.nan
        f["depths"][...] = d
    ds = NYUv2(tmp_path, "train")
    with pytest.raises(DatasetError) as e:
        ds[1]
    _one_line(e, "nyu_depth_v2_labeled.mat", "NaN")
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[0]]),
                                               "testNdxs": np.array([[5]])})
    with pytest.raises(DatasetError) as e:
        NYUv2(tmp_path, "train")
    _one_line(e, "splits.mat", "1-based")
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 junk")
    with pytest.raises(DatasetError) as e:
        NYUv2(tmp_path, mat_file=tmp_path / "bad.mat")
    _one_line(e, "bad.mat")


def test_nyuv2_bts_file_list(tmp_path) -> None:
    mm = np.array([[0, 1000, 2500, 9999, 65535, 1, 10, 100]] * H, dtype=np.uint16)
    _rgb(tmp_path / "sync/kitchen_0028b/rgb_00045.jpg")
    _u16(tmp_path / "sync/kitchen_0028b/sync_depth_00045.png", mm)
    (tmp_path / "nyudepthv2_train_files_with_gt.txt").write_text(
        "/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n")
    ds = NYUv2BTS(tmp_path, "train")
    item = ds[0]
    np.testing.assert_allclose(item["target"][0].numpy(), mm / 1000.0, rtol=1e-6)
    assert item["focal"] == pytest.approx(518.8579) and item["name"] == "kitchen_0028b/rgb_00045"
    (tmp_path / "nyudepthv2_test_files_with_gt.txt").write_text(
        "bathroom/rgb_00001.jpg bathroom/sync_depth_00001.png 518.8579\n")
    with pytest.raises(DatasetError) as e:
        NYUv2BTS(tmp_path, "test")
    _one_line(e, "nyudepthv2_test_files_with_gt.txt:1", "rgb_00001.jpg", "not found")


# ----------------------------------------------------------------------------------------- KITTI
def _kitti(tmp_path: Path, h: int = 10, w: int = 20) -> np.ndarray:
    drive = "2011_09_26_drive_0001_sync"
    gt = np.arange(h * w, dtype=np.uint16).reshape(h, w) * 100
    for f in ("0000000005", "0000000006"):
        _rgb(tmp_path / f"raw/2011_09_26/{drive}/image_02/data/{f}.png", h, w)
        _u16(tmp_path / f"data_depth_annotated/{drive}/proj_depth/groundtruth/image_02/{f}.png",
             gt)
    _rgb(tmp_path / f"raw/2011_09_26/{drive}/image_02/data/0000000007.png", h, w)
    lines = [f"2011_09_26/{drive}/image_02/data/0000000005.png "
             f"{drive}/proj_depth/groundtruth/image_02/0000000005.png 721.5377",
             f"2011_09_26/{drive}/image_02/data/0000000007.png None 721.5377",
             f"2011_09_26/{drive}/image_02/data/0000000006.png "
             f"{drive}/proj_depth/groundtruth/image_02/0000000006.png 721.5377"]
    for split in ("train", "test"):
        (tmp_path / f"eigen_{split}_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return gt


def test_kitti_eigen_kb_crop_and_missing_gt(tmp_path) -> None:
    gt = _kitti(tmp_path)
    tr = KITTIDepth(tmp_path, "train", kb_crop_size=(6, 12))
    assert len(tr) == 2 and tr.num_missing_gt == 1  # the "None" line is skipped for train
    t = tr[0]["target"][0].numpy()
    # KB crop: bottom 6 rows, centred 12 columns -> rows 4:10, cols 4:16.
    np.testing.assert_allclose(t, gt[4:10, 4:16] / 256.0, rtol=1e-6)
    assert tr[0]["image"].shape == (3, 6, 12)
    te = KITTIDepth(tmp_path, "test", kb_crop_size=(6, 12))
    assert len(te) == 3 and te.num_missing_gt == 1
    missing = te[1]
    assert missing["has_target"] is False and float(missing["target"].abs().sum()) == 0.0
    assert te[0]["has_target"] is True
    nocrop = KITTIDepth(tmp_path, "train", kb_crop=False)
    np.testing.assert_allclose(nocrop[1]["target"][0].numpy(), gt / 256.0, rtol=1e-6)
    with pytest.raises(DatasetError) as e:
        KITTIDepth(tmp_path, "train")[0]  # 10x20 images are smaller than 352x1216
    _one_line(e, "eigen_train_files_with_gt.txt", "KB crop")


def test_kitti_default_kb_crop_full_size(tmp_path) -> None:
    drive = "2011_09_26_drive_0002_sync"
    gt = np.zeros((375, 1242), np.uint16)
    gt[23, 13] = 256 * 7  # the first pixel inside the KB crop
    gt[22, 13] = 256 * 9  # just above it
    _rgb(tmp_path / f"{drive}/img.png", 375, 1242)
    _u16(tmp_path / f"gt/{drive}/d.png", gt)
    (tmp_path / "list.txt").write_text(f"{drive}/img.png {drive}/d.png 721.5\n")
    ds = KITTIDepth(tmp_path, "train", list_file=tmp_path / "list.txt", data_path=tmp_path,
                    gt_path=tmp_path / "gt")
    t = ds[0]["target"][0]
    assert t.shape == (352, 1216) and float(t[0, 0]) == 7.0 and float(t.sum()) == 7.0


# ------------------------------------------------------------------------------------------- SOD
def test_ecssd_duts_and_custom_folders(tmp_path) -> None:
    mask = np.array([[0, 128, 129, 255, 0, 200, 50, 255]] * H, dtype=np.uint8)
    expected = (mask > 128).astype(np.float32)
    for i in range(2):
        _rgb(tmp_path / f"ECSSD/images/{i:04d}.jpg")
        _gray(tmp_path / f"ECSSD/ground_truth_mask/{i:04d}.png", mask)
        _rgb(tmp_path / f"DUTS/DUTS-TR/DUTS-TR-Image/ILSVRC_{i}.jpg")
        _gray(tmp_path / f"DUTS/DUTS-TR/DUTS-TR-Mask/ILSVRC_{i}.png", mask)
        _rgb(tmp_path / f"mine/Imgs/x{i}.png")
        _gray(tmp_path / f"mine/GT/x{i}_mask.bmp", mask)
    e = ECSSD(tmp_path)
    assert len(e) == 2 and e.task == "saliency"
    np.testing.assert_array_equal(e[0]["target"][0].numpy(), expected)
    d = DUTS(tmp_path, "train")
    np.testing.assert_array_equal(d[1]["target"][0].numpy(), expected)
    m = SaliencyFolder(tmp_path / "mine", "Imgs", "GT", mask_exts=(".bmp",), mask_suffix="_mask")
    assert [s.name for s in m.samples] == ["x0", "x1"]
    np.testing.assert_array_equal(m[0]["target"][0].numpy(), expected)
    _rgb(tmp_path / "ECSSD/images/0002.jpg")
    with pytest.raises(DatasetError) as err:
        ECSSD(tmp_path)
    _one_line(err, "0002.jpg", "no mask")
    assert len(ECSSD(tmp_path, strict=False)) == 2


# ------------------------------------------------------------------------------------ KITTI Road
def test_kitti_road_colours_and_val_carve(tmp_path) -> None:
    root = tmp_path / "data_road"
    gt = np.zeros((H, W, 3), np.uint8)
    gt[:, :3] = (255, 0, 255)  # road (magenta)
    gt[:, 3:6] = (255, 0, 0)  # non-road (red)
    # the last two columns stay black: don't care
    names = []
    for cat in ("um", "umm", "uu"):
        for i in range(5):
            n = f"{cat}_{i:06d}"
            names.append(n)
            _rgb(root / f"training/image_2/{n}.png")
            (root / "training/gt_image_2").mkdir(parents=True, exist_ok=True)
            Image.fromarray(gt).save(root / f"training/gt_image_2/{cat}_road_{i:06d}.png")
    _rgb(root / "training/gt_image_2/um_lane_000000.png")  # lane GT must not be picked up
    _rgb(root / "testing/image_2/um_000000.png")
    full = KITTIRoad(tmp_path, "trainval")
    assert sorted(s.name for s in full.samples) == sorted(names)
    row = full[0]["target"][0, 0].tolist()
    assert row == [1, 1, 1, 0, 0, 0, 255, 255]
    tr, va = KITTIRoad(root, "train", val_fraction=0.4), KITTIRoad(root, "val", val_fraction=0.4)
    trn, van = {s.name for s in tr.samples}, {s.name for s in va.samples}
    assert not trn & van and trn | van == set(names) and len(van) == 6
    assert {n.rsplit("_", 1)[0] for n in van} == {"um", "umm", "uu"}  # per-category carve
    assert van == {s.name for s in KITTIRoad(root, "val", val_fraction=0.4).samples}
    others = [{s.name for s in KITTIRoad(root, "val", val_fraction=0.4, split_seed=k).samples}
              for k in range(1, 5)]
    assert any(o != van for o in others)
    test = KITTIRoad(root, "test")
    assert len(test) == 1 and test[0]["has_target"] is False
    assert (test[0]["target"] == 255).all()
    (root / "training/gt_image_2/uu_road_000004.png").unlink()
    with pytest.raises(DatasetError) as e:
        KITTIRoad(root, "trainval")
    _one_line(e, "uu_road_000004.png", "not found")


# --------------------------------------------------------------------------- generic + bad input
def test_folder_dataset_and_bad_inputs(tmp_path) -> None:
    lab = np.array([[0, 1, 2, 255, 2, 1, 0, 0]] * H, np.uint8)
    for i in range(2):
        _rgb(tmp_path / f"images/train/{i}.png", seed=i)
        _gray(tmp_path / f"labels/train/{i}.png", lab)
    ds = ImageLabelFolder(tmp_path, "train", num_classes=3)
    np.testing.assert_array_equal(ds[0]["target"].numpy(), lab)
    # Label outside the class range.
    _gray(tmp_path / "labels/train/1.png", np.full((H, W), 3))
    with pytest.raises(DatasetError) as e:
        ds[1]
    _one_line(e, "1.png", "3", "outside [0, 2]")
    # Image/label size mismatch.
    _gray(tmp_path / "labels/train/1.png", np.zeros((H + 1, W)))
    with pytest.raises(DatasetError) as e:
        ds[1]
    _one_line(e, "1.png", "does not match")
    # Unreadable image.
    (tmp_path / "images/train/0.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError) as e:
        ds[0]
    _one_line(e, "0.png", "unreadable")
    # Missing image after indexing.
    (tmp_path / "images/train/0.png").unlink()
    with pytest.raises(FileNotFoundError) as e:
        ds[0]
    _one_line(e, "0.png", "not found")
    # Empty split.
    (tmp_path / "images/val").mkdir(parents=True)
    (tmp_path / "labels/val").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        ImageLabelFolder(tmp_path, "val", num_classes=3)
    _one_line(e, "val", "empty split")


def test_folder_depth_rejects_nonfinite(tmp_path) -> None:
    _rgb(tmp_path / "images/a.png")
    depth = np.ones((H, W), np.float32)
    depth[0, 0] = np.inf
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "labels/a.npy", depth)
    ds = ImageLabelFolder(tmp_path, "train", task="depth")
    with pytest.raises(DatasetError) as e:
        ds[0]
    _one_line(e, "a.npy", "NaN/inf")


def test_build_dataset_and_transforms_integration(tmp_path) -> None:
    _ade(tmp_path)
    names = list_datasets()
    assert {"ade20k", "cityscapes", "voc2012", "nyuv2", "nyuv2_bts", "kitti_depth", "ecssd",
            "duts", "kitti_road", "folder", "synthetic"} <= set(names)
    ds = build_dataset("ade20k", tmp_path, "train",
                       transform=train_transforms("seg", (4, 4)), seed=3)
    assert isinstance(ds, ADE20K) and ds.task == "seg"
    a, b = ds[0], ds[0]
    assert a["image"].shape == (3, 4, 4) and torch.equal(a["target"], b["target"])
    assert torch.equal(a["image"], b["image"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 4, 4) and batch["target"].shape == (2, 4, 4)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match="serves tasks"):
        build_dataset("ade20k", tmp_path, task="depth")
    syn = build_dataset("synthetic", tmp_path / "syn", "val", task="depth", size=(16, 24),
                        num_images=2, seed=None)
    assert syn[0]["target"].shape == (1, 16, 24)
    # build_dataset's seed is the augmentation seed; the scene seed is data_seed.
    syn2 = build_dataset("synthetic", tmp_path / "syn", "val", task="depth", size=(16, 24),
                         num_images=2, seed=5, data_seed=0)
    assert syn2.seed == 5 and syn2.data_seed == 0 and syn2.path == syn.path
    assert torch.equal(syn2[1]["target"], syn[1]["target"])
