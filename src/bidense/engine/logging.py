"""Run logging: a text log, CSV scalars, optional TensorBoard, and a progress bar that switches
itself off when stderr is not a terminal."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any


def log_line(path: Path, message: str, echo: bool = True) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    with open(path, "a") as fh:
        fh.write(line + "\n")
    if echo:
        print(line, flush=True)


class CSVLogger:
    """Appends one row per epoch; the header grows when new keys appear (file rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] = []
        if path.exists():
            with open(path, newline="") as fh:
                reader = csv.reader(fh)
                self.fields = next(reader, [])

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        if new:
            rows = []
            if self.path.exists():
                with open(self.path, newline="") as fh:
                    rows = list(csv.DictReader(fh))
            self.fields += new
            with open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(rows)
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.fields).writerow(row)


class TensorBoardLogger:
    """Scalars to TensorBoard when enabled and installed (``pip install bidense[log]``)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError(
                    "train.tensorboard=true needs the tensorboard package: pip install "
                    "'bidense[log]'"
                ) from exc
            self.writer = SummaryWriter(str(path))

    def write(self, row: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if isinstance(v, int | float) and k != "epoch":
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar:
    """tqdm bar with ETA and it/s, or nothing when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True
            )

    def update(self, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
