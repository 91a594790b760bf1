"""The one atomic write every artifact goes through."""

import os

import pytest

from bidense._atomic import atomic_open


def test_atomic_open_replaces_whole_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with atomic_open(target) as fh:
        fh.write(b"first")
    assert target.read_bytes() == b"first"
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"first"  # the old version survives
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temp left
    with atomic_open(tmp_path / "t.json", "w") as fh:
        fh.write("{}")
    assert (tmp_path / "t.json").read_text() == "{}"
    with pytest.raises(ValueError, match="atomic_open writes with"):
        with atomic_open(tmp_path / "x", "a"):
            pass
