"""What users report beside the headline metric: the per-class table and confusion picture of
``bidense eval``, and the NYUv2-40 segmentation labels."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from bidense.cli import main as cli_main
from bidense.data.depth import NYUv2Seg40
from bidense.data.errors import DatasetError
from bidense.data.segmentation import NYU40_CLASSES, NYU894_TO_40, nyu40_labels
from bidense.data.synthetic import OBJECT_CLASSES
from bidense.engine.config import load_config
from bidense.engine.trainer import train
from bidense.engine.visualize import confusion_picture
from helpers import TINY_SEG


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory):
    os.environ["BIDENSE_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    train(load_config(overrides=TINY_SEG), run_dir=run_dir, quiet=True)
    return run_dir / "last.pt"


# -------------------------------------------------------------------------- bidense eval
def test_eval_json_keeps_its_keys_and_adds_per_class(seg_checkpoint, capsys):
    assert cli_main(["eval", str(seg_checkpoint), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"mIoU", "pixAcc", "mAcc", "IoU", "Acc", "per_class"} <= set(metrics)
    rows = metrics["per_class"]
    assert [r["id"] for r in rows] == list(range(len(OBJECT_CLASSES)))
    assert [r["name"] for r in rows] == list(OBJECT_CLASSES)  # from the dataset
    for r in rows:
        assert set(r) == {"id", "name", "IoU", "Acc", "pixels"}
        for key in ("IoU", "Acc"):
            want = metrics[key][r["id"]]
            assert r[key] == want or (np.isnan(r[key]) and np.isnan(want))


def test_eval_prints_the_class_table_and_writes_the_confusion_picture(seg_checkpoint, tmp_path,
                                                                       capsys):
    png = tmp_path / "pics" / "confusion.png"
    assert cli_main(["eval", str(seg_checkpoint), "--confusion", str(png)]) == 0
    out = capsys.readouterr().out
    assert "mIoU:" in out.replace(" ", "")
    header = next(line for line in out.splitlines() if line.split()[:2] == ["id", "class"])
    assert header.split() == ["id", "class", "IoU", "Acc", "pixels"]
    table = out.split(header)[1].strip().splitlines()[: len(OBJECT_CLASSES)]
    assert [line.split()[1] for line in table] == list(OBJECT_CLASSES)
    assert f"confusion matrix: {png}" in out
    picture = np.asarray(Image.open(png))
    assert picture.ndim == 3 and picture.shape[2] == 3 and min(picture.shape[:2]) > 100


# -------------------------------------------------------------------------- confusion picture
def test_confusion_picture_is_row_normalised():
    cm = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 2]])
    picture = confusion_picture(cm, ["a", "b", "c"])
    # Find the matrix by its grey row (class 1, no GT pixel) and read cell colours back.
    grey = np.all(picture == (225, 225, 225), axis=-1)
    rows = np.nonzero(grey.sum(1) >= 60)[0]  # label text never has that many grey pixels
    top, cell = rows.min(), len(rows)
    run = np.flatnonzero(np.diff(np.r_[0, grey[top + cell // 2].astype(int), 0]))
    starts, ends = run[::2], run[1::2]
    longest = np.argmax(ends - starts)
    left = starts[longest]
    assert ends[longest] - left == 3 * cell  # a whole row of 3 cells
    y0 = top - cell + 2  # row 0, away from the printed percentage
    white_to_blue = 255 - picture[y0, left + 2, 0]
    assert white_to_blue == pytest.approx(0.8 * (255 - 8), abs=1)  # 8 / 10
    assert tuple(picture[y0, left + 2 * cell + 2]) == (255, 255, 255)  # 0 / 10
    y2 = top + cell + 2  # row 2: 1/4, 1/4, 2/4 - rows sum to 1 whatever the counts
    assert 255 - picture[y2, left + 2 * cell + 2, 0] == pytest.approx(0.5 * 247, abs=1)
    big = confusion_picture(np.eye(150, dtype=np.int64))  # ids only, every n-th
    assert big.shape[0] > 150 and big.shape[1] > 150
    with pytest.raises(ValueError, match="square"):
        confusion_picture(np.zeros((2, 3)))


# -------------------------------------------------------------------------- NYUv2-40
def test_nyu40_table_shape_and_known_entries():
    assert len(NYU894_TO_40) == 894 and len(NYU40_CLASSES) == 40
    counts = np.bincount(NYU894_TO_40, minlength=41)
    # Classes 1..37 take exactly one raw label each; other structure/furniture/prop the rest.
    assert counts[0] == 0 and (counts[1:38] == 1).all() and counts[38:].sum() == 894 - 37
    # Raw NYUv2 names (1-based): 1 book, 3 cabinet, 4 ceiling, 5 chair, 11 floor, 19 table,
    # 21 wall -> NYU40 otherprop, cabinet, ceiling, chair, floor, table, wall.
    raw = np.array([[0, 1, 3, 4], [5, 11, 19, 21]])
    want = [[255, 39, 2, 21], [4, 1, 6, 0]]
    np.testing.assert_array_equal(nyu40_labels(raw), want)
    assert [NYU40_CLASSES[c] for c in (0, 1, 2, 21, 39)] == [
        "wall", "floor", "cabinet", "ceiling", "otherprop"]
    with pytest.raises(DatasetError, match="895 outside"):
        nyu40_labels(np.array([895]))


def _nyu_fixture(tmp_path, labels: np.ndarray) -> None:
    import h5py
    import scipy.io

    n, h, w = labels.shape
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = rng.integers(0, 256, (n, 3, w, h), dtype=np.uint8)  # N x 3 x W x H
        f["depths"] = rng.uniform(0.5, 9.0, (n, w, h)).astype(np.float32)
        f["labels"] = labels.transpose(0, 2, 1).astype(np.uint16)
        f["names"] = np.zeros((1, 894), dtype=np.uint8)  # 894 names, as in the real file
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1]]),
                                               "testNdxs": np.array([[2]])})


def test_nyuv2_seg40_dataset_on_a_fixture(tmp_path):
    pytest.importorskip("h5py")
    labels = np.zeros((2, 3, 4), dtype=np.int64)
    labels[1] = [[0, 21, 21, 11], [5, 19, 894, 3], [157, 0, 2, 4]]
    _nyu_fixture(tmp_path, labels)
    ds = NYUv2Seg40(tmp_path, "test")
    assert ds.num_classes == 40 and ds.class_names == NYU40_CLASSES
    target = ds[0]["target"].numpy()
    want = [[255, 0, 0, 1], [4, 6, NYU894_TO_40[893] - 1, 2], [NYU894_TO_40[156] - 1, 255, 39, 21]]
    np.testing.assert_array_equal(target, want)
    labels[0, 0, 0] = 900
    bad = tmp_path / "bad"
    bad.mkdir()
    _nyu_fixture(bad, labels)
    with pytest.raises(DatasetError, match="nyu_0000.*900 outside"):
        NYUv2Seg40(bad, "train")[0]
    with pytest.raises(ValueError, match="segmentation dataset"):
        NYUv2Seg40(bad, "train", task="depth")
