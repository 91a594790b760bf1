"""Files written before the export/runtime split still load and give the same output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bidense.runtime import Runtime

FIXTURES = Path(__file__).parent / "fixtures" / "bdn_v1"
FILES = sorted(FIXTURES.glob("*.bdn"))


def test_fixtures_present():
    assert len(FILES) == 4


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_pre_split_file_gives_the_same_output(path: Path, threads: int):
    x = np.load(FIXTURES / "input.npy")
    expected = np.load(path.with_name(path.stem + "_out.npy"))
    got = Runtime(path, threads=threads)(x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
