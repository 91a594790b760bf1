"""One atomic file write for every artifact bidense produces (checkpoints, .bdn files, caches,
benchmark JSON): a temp file in the target folder, fsync, then ``os.replace``. A reader never
sees a half-written file, and a crash leaves the previous version in place. Imports no torch."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_TEMP_SUFFIX = ".tmp"
#: the names :func:`atomic_open` gives its temp files: ``.{name}.{8 mkstemp characters}.tmp``
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open(p) as fh: fh.write(...)``: ``p`` appears complete or not at all.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes with 'wb' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_orphaned_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed :func:`atomic_open` left in ``directory`` (only names
    matching :data:`TEMP_NAME`); returns what was removed. Call it only when no other write
    into ``directory`` can be under way."""
    removed = []
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and TEMP_NAME.match(path.name):
            path.unlink()
            removed.append(path)
    return removed
