"""No sample is dropped without a word: broken links and unpaired labels are errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bidense.data import DatasetError, ImageLabelFolder


def _tree(root: Path, n: int = 8) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            root / "images" / f"s{i}.png")
        Image.fromarray(rng.integers(0, 3, (8, 8), dtype=np.uint8)).save(
            root / "labels" / f"s{i}.png")


def test_complete_folder_reads_every_sample(tmp_path: Path):
    _tree(tmp_path)
    assert len(ImageLabelFolder(tmp_path, task="seg", num_classes=3)) == 8


def test_image_that_is_a_broken_link_is_an_error(tmp_path: Path):
    _tree(tmp_path)
    img = tmp_path / "images" / "s3.png"
    img.unlink()
    img.symlink_to(tmp_path / "elsewhere" / "s3.png")
    with pytest.raises(DatasetError, match=r"s3\.png: broken link"):
        ImageLabelFolder(tmp_path, task="seg", num_classes=3)


def test_label_without_image_is_an_error(tmp_path: Path):
    _tree(tmp_path)
    (tmp_path / "images" / "s5.png").unlink()
    with pytest.raises(DatasetError, match=r"no image for label .*s5\.png \(1 label"):
        ImageLabelFolder(tmp_path, task="seg", num_classes=3)
