"""Dataset tools: the supported layouts (:func:`dataset_layouts`) and a full read of one split
(:func:`check_dataset`), behind ``bidense datasets list`` and ``bidense datasets check``.

``check_dataset`` builds the dataset as training does (same registry, same options, no
transform), then reads every sample once through the dataset's own validation
(:meth:`~bidense.data.base.DenseDataset.load_raw`): nothing is checked twice or differently
here. Listing problems (broken links, unpaired files, list lines naming missing files) are
collected with :func:`~bidense.data.io.collect_problems` instead of stopping at the first, so
one run names every bad file.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import yaml
from tqdm import tqdm

from .base import DenseDataset
from .errors import DatasetError
from .io import collect_problems
from .registry import DATASETS, build_dataset, canonical_name

__all__ = [
    "DatasetLayout",
    "DatasetReport",
    "check_dataset",
    "dataset_layouts",
    "parse_options",
]

#: Constructor arguments that are not dataset options: the builder or training sets them.
_NOT_OPTIONS = frozenset({"self", "root", "split", "task", "transform", "seed", "aug_seed"})


@dataclass(frozen=True)
class DatasetLayout:
    """One registered dataset as ``bidense datasets list`` shows it.

    Attributes:
        name: the registry name (``build_dataset(name, ...)``, ``data.dataset``).
        tasks: the tasks it serves, the default first.
        layout: the on-disk layout in one line (the class docstring's summary).
        options: constructor options (``data.kwargs``, ``--option``) -> their defaults.
        more_options_from: the base class whose further options pass through, if any.
    """

    name: str
    tasks: tuple[str, ...]
    layout: str
    options: dict[str, Any]
    more_options_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    def format(self, width: int = 100) -> str:
        """Name and tasks, the layout, then the options wrapped to ``width``."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "none"
        if self.more_options_from:
            opts += f"; and those of {self.more_options_from}"
        options = textwrap.fill(opts, width, initial_indent="    options: ",
                                subsequent_indent=" " * 6, break_on_hyphens=False)
        return f"{self.name} ({', '.join(self.tasks)})\n    {self.layout}\n{options}"


def _layout_of(cls: type[DenseDataset], name: str, served: tuple[str, ...]) -> DatasetLayout:
    summary = (inspect.getdoc(cls) or cls.__name__).splitlines()[0].replace("``", "")
    params = inspect.signature(cls).parameters.values()
    options = {p.name: None if p.default is inspect.Parameter.empty else p.default
               for p in params
               if p.name not in _NOT_OPTIONS and p.kind is not inspect.Parameter.VAR_KEYWORD}
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return DatasetLayout(name, served, summary, options,
                         cls.__mro__[1].__name__ if passes_on else None)


def dataset_layouts() -> list[DatasetLayout]:
    """Every dataset in :data:`~bidense.data.registry.DATASETS`, in registry order."""
    return [_layout_of(cls, name, served) for name, (cls, served) in DATASETS.items()]


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found in one split.

    Attributes:
        name, root, split, task: what was checked (``name`` is the registry key).
        num_samples: samples the dataset listed (after leaving out unpaired/broken files).
        num_read: samples read and validated without error.
        num_without_target: read samples that have no ground truth (e.g. KITTI test lines).
        image_sizes: ``"WxH"`` -> number of images of that size, most common first.
        class_histogram: class id -> pixels over the split, the ignore index included
            (``seg``, ``road``: 0 = not road, 1 = road).
        class_names: class id -> name, where the dataset names its classes.
        depth_range: ``(min, max)`` of the valid (> 0) depth in metres (``depth``).
        depth_valid_share: valid pixels / all pixels (``depth``).
        foreground_share: salient pixels / all pixels (``saliency``).
        problems: every bad file or entry, one line each.
    """

    name: str
    root: str
    split: str
    task: str
    num_samples: int = 0
    num_read: int = 0
    num_without_target: int = 0
    image_sizes: dict[str, int] = field(default_factory=dict)
    class_histogram: dict[int, int] | None = None
    class_names: dict[int, str] | None = None
    depth_range: tuple[float, float] | None = None
    depth_valid_share: float | None = None
    foreground_share: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (``bidense datasets check`` exits 0)."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``ok``."""
        return {**asdict(self), "ok": self.ok}

    def format(self) -> str:
        """The human-readable report: counts, sizes, target statistics, then every problem."""
        bad = self.num_samples - self.num_read
        lines = [f"{self.name} ({self.task}), split {self.split!r} at {self.root}: "
                 f"{self.num_samples} samples listed, {self.num_read} read, {bad} bad"]
        if self.num_without_target:
            lines.append(f"without ground truth: {self.num_without_target}")
        if self.image_sizes:
            sizes = ", ".join(f"{size} x{n}" for size, n in self.image_sizes.items())
            lines.append(f"image sizes (WxH): {sizes}")
        if self.class_histogram is not None:
            total = sum(self.class_histogram.values()) or 1
            names = self.class_names or {}
            lines.append("class pixels:")
            for k, n in self.class_histogram.items():
                label = f"{k} {names[k]}" if k in names else str(k)
                lines.append(f"  {label:<24} {n:>14,} {100 * n / total:6.2f}%")
        if self.depth_range is not None:
            lo, hi = self.depth_range
            lines.append(f"depth: {lo:.3f} .. {hi:.3f} m")
        if self.depth_valid_share is not None:
            lines.append(f"valid depth: {100 * self.depth_valid_share:.2f}% of pixels")
        if self.foreground_share is not None:
            lines.append(f"foreground: {100 * self.foreground_share:.2f}% of pixels")
        if self.ok:
            lines.append("no problems found")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


# -- target statistics, one accumulator per task ---------------------------------------------------
class _TargetStats(Protocol):
    def add(self, target: np.ndarray) -> None: ...

    def finish(self, report: DatasetReport) -> None: ...


class _ClassPixels:
    """Pixels per class id (``np.bincount``; the ignore index is a class id like the others)."""

    def __init__(self, names: Sequence[str] | None, ignore_index: int) -> None:
        self.names = {i: n for i, n in enumerate(names or ())}
        self.names[ignore_index] = "ignore"
        self.pixels: Counter[int] = Counter()

    def add(self, target: np.ndarray) -> None:
        flat = np.asarray(target).astype(np.int64).ravel()
        if flat.size and flat.min() < 0:  # a dataset without a class count may hold -1
            ids, counts = np.unique(flat, return_counts=True)
        else:
            counts = np.bincount(flat)
            ids = np.flatnonzero(counts)
            counts = counts[ids]
        self.pixels.update(dict(zip(ids.tolist(), counts.tolist(), strict=True)))

    def finish(self, report: DatasetReport) -> None:
        report.class_histogram = dict(sorted(self.pixels.items()))
        report.class_names = {k: self.names[k] for k in report.class_histogram if k in self.names}


class _DepthRange:
    """Range of the valid depth (> 0, metres) and the share of valid pixels."""

    def __init__(self) -> None:
        self.lo, self.hi = np.inf, -np.inf
        self.valid = self.pixels = 0

    def add(self, target: np.ndarray) -> None:
        valid = target[target > 0]
        if valid.size:
            self.lo, self.hi = min(self.lo, float(valid.min())), max(self.hi, float(valid.max()))
        self.valid += valid.size
        self.pixels += target.size

    def finish(self, report: DatasetReport) -> None:
        if self.valid:
            report.depth_range = (self.lo, self.hi)
        if self.pixels:
            report.depth_valid_share = self.valid / self.pixels


class _ForegroundShare:
    """Share of salient (mask = 1) pixels."""

    def __init__(self) -> None:
        self.foreground = 0.0
        self.pixels = 0

    def add(self, target: np.ndarray) -> None:
        self.foreground += float(target.sum())
        self.pixels += target.size

    def finish(self, report: DatasetReport) -> None:
        if self.pixels:
            report.foreground_share = self.foreground / self.pixels


#: task -> the statistics ``check`` gathers over its targets.
_TARGET_STATS: dict[str, Callable[[DenseDataset], _TargetStats]] = {
    "seg": lambda ds: _ClassPixels(ds.class_names, ds.ignore_index),
    "road": lambda ds: _ClassPixels(("not road", "road"), ds.ignore_index),
    "depth": lambda ds: _DepthRange(),
    "saliency": lambda ds: _ForegroundShare(),
}


def _one_line(exc: BaseException, where: object = None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, DatasetError) or where is None:
        return text  # the dataset's own message names the file
    return f"{where}: {type(exc).__name__}: {text}"


def check_dataset(name: str, root: str | os.PathLike | None, split: str = "train",
                  task: str | None = None, num_classes: int | None = None,
                  progress: bool = True, **options: Any) -> DatasetReport:
    """Read every sample of ``split`` once and report counts, sizes, statistics and problems.

    The dataset is built by :func:`~bidense.data.build_dataset` with ``options`` (its own
    constructor options, as in ``data.kwargs``) and ``num_classes`` where the dataset takes one;
    a dataset with a fixed class count must match ``num_classes`` if given. Every
    :class:`~bidense.data.DatasetError` the dataset raises (listing or reading) becomes one line
    in :attr:`DatasetReport.problems`; errors in the arguments (unknown name, task or option)
    raise. ``progress`` shows a tqdm bar on stderr.
    """
    key = canonical_name(name)
    cls, served = DATASETS[key]
    report = DatasetReport(key, str(root), split, task or served[0])
    if num_classes is not None and "num_classes" in inspect.signature(cls).parameters:
        options["num_classes"] = num_classes
    dataset: DenseDataset | None = None
    with collect_problems() as listing:
        try:
            dataset = build_dataset(key, root, split, task=report.task, **options)
        except DatasetError as exc:
            listing.append(exc)
        except TypeError as exc:  # an option the dataset does not take
            raise ValueError(f"dataset {key!r}: {exc}") from exc
    report.problems = [_one_line(e) for e in listing]
    if dataset is None:
        return report
    if num_classes is not None and dataset.num_classes != num_classes:
        raise ValueError(f"dataset {key!r} ({report.task}) has {dataset.num_classes} classes, "
                         f"not --num-classes {num_classes}")
    report.num_samples = len(dataset)
    stats = _TARGET_STATS[report.task](dataset)
    sizes: Counter[str] = Counter()
    for index in tqdm(range(len(dataset)), desc=f"checking {key} {split}", unit="sample",
                      disable=not progress, leave=False):
        try:
            image, target, has_target = dataset.load_raw(index)
        except (ValueError, OSError) as exc:  # DatasetError is a ValueError
            sample = dataset.samples[index]
            report.problems.append(_one_line(exc, sample.target or sample.image))
            continue
        report.num_read += 1
        sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
        if has_target:
            stats.add(target)
        else:
            report.num_without_target += 1
    report.image_sizes = dict(sizes.most_common())
    stats.finish(report)
    return report


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> options, each value read as YAML (``0.5``, ``true``, ``[a, b]``;
    anything else stays a string)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r} must look like key=value")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return options
