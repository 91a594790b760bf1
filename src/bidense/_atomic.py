"""One atomic file write for every artifact bidense produces (checkpoints, .bdn files, caches,
benchmark JSON): a temp file in the target folder, fsync, then ``os.replace``. A reader never
sees a half-written file, and a crash leaves the previous version in place. Imports no torch."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open(p) as fh: fh.write(...)``: ``p`` appears complete or not at all.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes with 'wb' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
