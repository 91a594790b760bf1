"""``bidense datasets list|check`` and the split-first folder layout, on real on-disk trees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bidense import tasks
from bidense.cli import main
from bidense.data import (
    DATASETS,
    VOC2012,
    DatasetError,
    ImageLabelFolder,
    check_dataset,
    collect_problems,
    dataset_layouts,
)
from bidense.data.check import _TARGET_STATS, parse_options

NUM_CLASSES = 3


def _image(path: Path, size: tuple[int, int] = (8, 8), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _label(path: Path, size: tuple[int, int] = (8, 8), value: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lab = np.arange(size[0] * size[1]).reshape(size) % NUM_CLASSES
    if value is not None:
        lab[0, 0] = value
    Image.fromarray(lab.astype(np.uint8)).save(path)


def _seg_tree(root: Path, n: int = 4) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    for i in range(n):
        _image(images / f"s{i}.png", seed=i)
        _label(labels / f"s{i}.png")
    return images, labels


def _faulty_seg_tree(root: Path) -> dict[str, str]:
    """A clean tree plus one of each fault; returns fault -> a pattern its report line holds."""
    images, labels = _seg_tree(root)
    (images / "corrupt.png").write_bytes(b"not a png at all")
    _label(labels / "corrupt.png")
    _image(images / "mismatch.png")
    _label(labels / "mismatch.png", size=(6, 8))
    _image(images / "outofrange.png")
    _label(labels / "outofrange.png", value=7)
    (images / "broken.png").symlink_to(root / "gone" / "broken.png")
    _label(labels / "broken.png")
    _label(labels / "orphan.png")
    _image(images / "lonely.png")
    return {
        "corrupt image": r"corrupt\.png: unreadable image",
        "size mismatch": r"mismatch\.png: label size 8x6 .* does not match",
        "label out of range": r"outofrange\.png: label values 7 outside \[0, 2\]",
        "broken link": r"broken\.png: broken link",
        "label without image": r"orphan\.png: no image of the same stem in .*images",
        "image without label": r"lonely\.png: no label of the same stem in .*labels",
    }


def _depth_tree(root: Path, nan: bool) -> None:
    (root / "labels").mkdir(parents=True)
    for i in range(3):
        _image(root / "images" / f"d{i}.png", seed=i)
        depth = np.full((8, 8), 2.0 + i, dtype=np.float32)
        depth[:, :2] = 0.0  # invalid columns
        if nan and i == 1:
            depth[3, 4] = np.nan
        np.save(root / "labels" / f"d{i}.npy", depth)


def _check(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["datasets", "check", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


# -- check ----------------------------------------------------------------------------------------
def test_check_finds_every_planted_fault_in_one_run(tmp_path: Path, capsys) -> None:
    faults = _faulty_seg_tree(tmp_path)
    rc, out, _ = _check(capsys, "folder", str(tmp_path), "--num-classes", "3", "--json",
                        "--no-progress")
    assert rc == 1
    report = json.loads(out)
    assert not report["ok"]
    for fault, pattern in faults.items():
        hits = [line for line in report["problems"] if re.search(pattern, line)]
        assert len(hits) == 1, (fault, report["problems"])
    # 4 clean + corrupt + mismatch + outofrange listed; only the 4 clean ones read
    assert (report["num_samples"], report["num_read"]) == (7, 4)
    assert report["image_sizes"] == {"8x8": 4}
    assert sum(report["class_histogram"].values()) == 4 * 64
    assert all("\n" not in line for line in report["problems"])


def test_check_finds_nan_depth_and_reports_the_depth_range(tmp_path: Path, capsys) -> None:
    _depth_tree(tmp_path, nan=True)
    rc, out, _ = _check(capsys, "folder", str(tmp_path), "--task", "depth", "--no-progress")
    assert rc == 1
    assert "d1.npy: depth has 1 NaN/inf values" in out
    report = check_dataset("folder", tmp_path, task="depth", progress=False)
    assert report.num_read == 2
    assert report.depth_range == (2.0, 4.0)
    assert report.depth_valid_share == pytest.approx(6 / 8)


def test_clean_tree_exits_zero_with_sizes_histogram_and_progress(tmp_path: Path, capsys) -> None:
    _seg_tree(tmp_path)
    rc, out, err = _check(capsys, "folder", str(tmp_path), "--num-classes", "3")
    assert rc == 0, out
    assert "4 samples listed, 4 read, 0 bad" in out
    assert "image sizes (WxH): 8x8 x4" in out
    assert "class pixels:" in out and "no problems found" in out
    assert "checking folder train" in err  # the tqdm bar goes to stderr
    report = check_dataset("folder", tmp_path, num_classes=3, progress=False)
    assert report.ok and report.class_histogram == {0: 88, 1: 84, 2: 84}


def test_check_saliency_share_and_dataset_options(tmp_path: Path) -> None:
    for i in range(2):
        _image(tmp_path / "Imgs" / f"a{i}.jpg", seed=i)
        mask = np.zeros((8, 8), dtype=np.uint8)
        mask[:4] = 255
        (tmp_path / "GT").mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "GT" / f"a{i}_mask.png")
    options = parse_options(["image_dir=Imgs", "mask_dir=GT", "mask_suffix=_mask"])
    report = check_dataset("sod", tmp_path, split="test", progress=False, **options)
    assert report.ok and report.name == "saliency_folder" and report.num_read == 2
    assert report.foreground_share == pytest.approx(0.5)


def test_check_collects_every_missing_list_entry(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    _image(root / "JPEGImages" / "a.jpg")
    _label(root / "SegmentationClass" / "a.png")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nmissing1\nmissing2\n")
    with pytest.raises(DatasetError, match=r"train\.txt:2: .*missing1\.jpg not found"):
        VOC2012(tmp_path)  # training still stops at the first
    with collect_problems() as problems:
        assert len(VOC2012(tmp_path)) == 1
    assert len(problems) == 4  # image and label of both missing lines
    report = check_dataset("voc", tmp_path, progress=False)
    assert not report.ok and len(report.problems) == 4 and report.num_read == 1


def test_check_kitti_road_histogram_and_missing_gt(tmp_path: Path) -> None:
    training = tmp_path / "data_road" / "training"
    gt = np.zeros((4, 6, 3), dtype=np.uint8)
    gt[:2] = (255, 0, 255)  # road
    gt[2:, :3] = (255, 0, 0)  # not road; the rest black = don't care
    for i in range(3):
        _image(training / "image_2" / f"um_00000{i}.png", size=(4, 6), seed=i)
        if i != 1:
            (training / "gt_image_2").mkdir(exist_ok=True)
            Image.fromarray(gt).save(training / "gt_image_2" / f"um_road_00000{i}.png")
    report = check_dataset("kitti_road", tmp_path, split="trainval", categories=["um"],
                           progress=False)
    assert report.num_read == 2 and len(report.problems) == 1
    assert "um_road_000001.png: road GT for image" in report.problems[0]
    assert report.class_histogram == {0: 12, 1: 24, 255: 12}
    assert report.class_names == {0: "not road", 1: "road", 255: "ignore"}


def test_check_reports_an_unbuildable_dataset_as_a_problem(tmp_path: Path, capsys) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rc, out, _ = _check(capsys, "folder", str(tmp_path), "--num-classes", "3", "--no-progress")
    assert rc == 1 and "empty split 'train'" in out


def test_check_argument_mistakes_are_usage_errors(tmp_path: Path, capsys) -> None:
    _seg_tree(tmp_path)
    rc, _, err = _check(capsys, "folder", str(tmp_path), "--num-classes", "3",
                        "--option", "no_such_option=1")
    assert rc == 2 and "no_such_option" in err
    rc, _, err = _check(capsys, "nosuchset", str(tmp_path))
    assert rc == 2 and "unknown dataset" in err
    rc, _, err = _check(capsys, "folder", str(tmp_path), "--num-classes", "3", "--option", "x")
    assert rc == 2 and "key=value" in err


def test_every_task_has_target_statistics() -> None:
    assert set(_TARGET_STATS) == set(tasks.TASKS)


# -- list -----------------------------------------------------------------------------------------
def test_list_prints_every_registered_dataset(capsys) -> None:
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name, (_, served) in DATASETS.items():
        assert f"{name} ({', '.join(served)})" in out
    assert "root/<split>/images" in out and "num_classes=None" in out
    assert main(["datasets", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == list(DATASETS)
    assert [d.name for d in dataset_layouts()] == list(DATASETS)


# -- split-first folder layout ---------------------------------------------------------------------
def test_split_first_folder_layout_loads(tmp_path: Path) -> None:
    _seg_tree(tmp_path / "train", n=3)
    _seg_tree(tmp_path / "val", n=2)
    train = ImageLabelFolder(tmp_path, "train", num_classes=3)
    val = ImageLabelFolder(tmp_path, "val", num_classes=3)
    assert (len(train), len(val)) == (3, 2)
    assert train.samples[0].image == tmp_path / "train" / "images" / "s0.png"
    assert val[1]["target"].shape == (8, 8)


def test_split_folder_wins_over_flat_and_both_split_forms_are_an_error(tmp_path: Path) -> None:
    _seg_tree(tmp_path, n=4)  # flat root/images
    _seg_tree(tmp_path / "val", n=2)  # split-first root/val/images
    assert len(ImageLabelFolder(tmp_path, "val", num_classes=3)) == 2
    assert len(ImageLabelFolder(tmp_path, "train", num_classes=3)) == 4  # flat, as before
    _image(tmp_path / "images" / "val" / "v.png")  # images-first root/images/val as well
    _label(tmp_path / "labels" / "val" / "v.png")
    with pytest.raises(DatasetError, match="both .* exist; keep one layout for split 'val'"):
        ImageLabelFolder(tmp_path, "val", num_classes=3)


def test_datasets_help() -> None:
    for argv in (["datasets", "--help"], ["datasets", "list", "--help"],
                 ["datasets", "check", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
