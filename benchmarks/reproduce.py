"""Reproduce the papers' comparisons at small scale: every method, every task, several seeds.

The claim under test (bidense-method.md §15): BiDense approaches full precision while the other
binary networks fall far behind (ADE20K mIoU 18.75 vs 20.39 fp32-from-scratch vs 7-10 for BNN,
ReActNet, AdaBin, BiSRNet; NYUv2 delta1 0.712 vs 0.695 vs 0.54-0.66), and Ding et al.'s claim that
their upsampling and attention recover most of the loss of binarization (ding2024.md).

Suites (``--suite``):

* ``main``: the nine methods (``fp32 bnn xnor bireal reactnet adabin bisrnet bidense ding``) on
  one architecture (``upernet_convnext_micro``; ``ding`` here means Ding's learned-scale
  binarizers in that skeleton) on the synthetic ``seg``, ``depth``, ``saliency`` and ``road``
  tasks, the same budget, one run per seed.
* ``ablations``: the BiDense parts (DAB + CFB, DAB alone, CFB alone), the DAB scale (per-channel as
  published, shared per sample, group-wise) and the Ding layers on ``ding_resnet_tiny``
  (upsampling sweep at binary attention, attention sweep at multi-branch upsampling, as
  ``benchmarks/ablation_ding.py``). A variant the library cannot build yet is listed as
  *pending* with the reason; it becomes selectable as soon as the library accepts it.

Every run goes through the trainer (``bidense.engine.trainer.train``) and its validation (the
standard metrics of each task), in its own folder ``OUT/runs/<task>/<variant>/seed<k>/``; a run
that finished holds ``result.json`` (written atomically) and is skipped, a killed run resumes from
its ``last.pt`` through the trainer's own resume. The same run reached from two suites (BiDense in
``main`` and the "DAB + CFB" ablation) is trained once.

    python benchmarks/reproduce.py --dry-run                 # the run list and the CPU estimate
    python benchmarks/reproduce.py --suite all               # train (resumable)
    python benchmarks/reproduce.py --suite all --summarize   # tables, plots, picture grids

``--summarize`` aggregates the JSONs (mean +- sample std over seeds per variant and task), adds the
parameters in bits and OPs (``bidense.profile.summarize``), the ``.bdn`` file size and the packed
runtime latency at one thread (``bidense.export.export``, ``bidense.runtime.Runtime``), and writes
``summary.json``, ``summary.md`` and PNG plots. ``--scale large`` is the setting for a lent GPU.
Run from the repository root with the package installed (or ``PYTHONPATH=src``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from bidense import tasks
from bidense.benchmark.common import write_json
from bidense.engine import visualize as V
from bidense.engine.builders import build_dataset_split, build_model
from bidense.engine.config import load_config, validate
from bidense.engine.loading import load_model
from bidense.engine.trainer import train
from bidense.export import export
from bidense.models import METHODS
from bidense.profile import summarize as profile_summary
from bidense.runtime import Runtime

REPO = Path(__file__).resolve().parents[1]
MODEL = "upernet_convnext_micro"
DING_MODEL = "ding_resnet_tiny"
TASKS: tuple[str, ...] = tuple(tasks.TASKS)
DING_TASKS = ("seg", "road", "saliency")  # the tasks of Ding et al. (Cityscapes, KITTI Road, ECSSD)
#: the columns of the tables, per task (the first is the task's headline metric)
TABLE_METRICS: dict[str, tuple[str, ...]] = {
    "seg": ("mIoU", "pixAcc", "mAcc"),
    "depth": ("abs_rel", "d1", "rmse"),
    "saliency": ("max_f", "mae", "s_measure"),
    "road": ("max_f", "ap"),
}
PERCENT_METRICS = frozenset({"mIoU", "pixAcc", "mAcc"})


@dataclass(frozen=True)
class Budget:
    """What every run of one scale shares: data, schedule, seeds, device."""

    train_images: int
    val_images: int
    epochs: int
    batch_size: int
    lr: float
    image_scale: float  # image sides x this (the presets: 64x64, road 64x96)
    seeds: tuple[int, ...]
    device: str

    def record(self) -> dict[str, Any]:
        """The fields a finished run must share with the requested budget to be skipped."""
        return {k: v for k, v in asdict(self).items() if k not in ("seeds", "device")}


#: ``small``: the CPU budget (the main suite in ~3-4 h on 2 cores, see :data:`SECONDS_PER_IMAGE`
#: and docs/results.md for how it was chosen); ``large``: the setting for a lent GPU.
BUDGETS: dict[str, Budget] = {
    "small": Budget(train_images=600, val_images=200, epochs=6, batch_size=16, lr=2e-3,
                    image_scale=1.0, seeds=(1, 2, 3), device="cpu"),
    "large": Budget(train_images=4000, val_images=500, epochs=30, batch_size=32, lr=2e-3,
                    image_scale=2.0, seeds=(1, 2, 3, 4, 5), device="cuda"),
}

#: Measured training cost, seconds per training image per epoch at 64x64, 2 threads (one epoch of
#: 64 train + 32 val images of ``upernet_convnext_micro``, the faster of two epochs, on the 2-core
#: development machine while other jobs shared it; an idle machine is faster). ``ding_resnet_tiny``
#: from one 1-epoch run of the test. The dry-run estimate scales these by pixels and images.
SECONDS_PER_IMAGE: dict[str, float] = {
    "fp32": 0.021, "bnn": 0.021, "xnor": 0.028, "bireal": 0.024, "reactnet": 0.027,
    "adabin": 0.030, "bisrnet": 0.032, "bidense": 0.026, "ding": 0.026,
    # the ablations: estimates equal to bidense's (not measured separately)
    "bidense_no_dab": 0.026, "bidense_no_cfb": 0.026,
    DING_MODEL: 0.030,
}
RUN_OVERHEAD_S = 5.0  # process-level: model build, data loading, checkpoint writes
EVAL_COST = 1 / 3  # a validation image costs about a third of a training image (no backward)


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a method on an architecture with its ``model.kwargs``.

    ``pending`` says why the library cannot build it yet (then it is listed, never run).
    """

    label: str
    model: str
    method: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = TASKS
    pending: str | None = None

    @property
    def slug(self) -> str:
        """The folder name: ``model-method[-key=value...]`` (identical runs share it)."""
        return "-".join([self.model, self.method, *(f"{k}={v}" for k, v in
                                                    sorted(self.kwargs.items()))])


#: suite -> {group: variants}; a group is one table of the summary
SUITES: dict[str, dict[str, list[Variant]]] = {
    "main": {"methods": [Variant(m, MODEL, m) for m in METHODS]},
    "ablations": {
        "bidense_parts": [
            Variant("DAB + CFB (BiDense)", MODEL, "bidense"),
            Variant("DAB alone (no CFB: the baseline layout)", MODEL, "bidense_no_cfb"),
            Variant("CFB alone (RSign instead of DAB)", MODEL, "bidense_no_dab"),
        ],
        "dab_scale": [
            Variant("per-channel (published)", MODEL, "bidense"),
            Variant("shared per sample (ours)", MODEL, "bidense", {"dab_scale": "shared"}),
            Variant("group-wise", MODEL, "bidense", {"dab_scale": "group"}),
        ],
        "ding_upsampling": [
            Variant(f"{up}, binary attention", DING_MODEL, "ding",
                    {"upsample": up, "attention": "binary"}, DING_TASKS)
            for up in ("bilinear", "transposed", "multibranch")
        ],
        "ding_attention": [
            Variant(f"multibranch, {att} attention", DING_MODEL, "ding",
                    {"upsample": "multibranch", "attention": att}, DING_TASKS)
            for att in ("none", "binary", "fp")
        ],
    },
}


@dataclass(frozen=True)
class RunSpec:
    """One run: a variant of a group on a task with a seed."""

    suite: str
    group: str
    variant: Variant
    task: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.task / self.variant.slug / f"seed{self.seed}"


# -- planning -------------------------------------------------------------------------------------
def preset_path(task: str) -> Path:
    """The CPU preset a run of ``task`` starts from (task options: depth range, road scene)."""
    return REPO / "configs" / f"synthetic_{task}_bidense.yaml"


def run_config(variant: Variant, task: str, seed: int, budget: Budget,
               device: str) -> dict[str, Any]:
    """The trainer config of one run: the task's preset, the variant, the budget, the seed."""
    overrides = [
        f"name=reproduce-{task}-{variant.slug}-seed{seed}",
        f"seed={seed}",
        f"device={device}",
        f"model.name={variant.model}",
        f"model.method={variant.method}",
        f"model.kwargs={json.dumps(dict(variant.kwargs))}",
        f"data.batch_size={budget.batch_size}",
        f"data.train_kwargs={{num_images: {budget.train_images}}}",
        f"data.val_kwargs={{num_images: {budget.val_images}}}",
        f"train.epochs={budget.epochs}",
        f"train.lr={budget.lr}",
        "train.scheduler_step=step",
        f"train.eval_every={budget.epochs}",  # validate once, after the last epoch
        "train.progress=off",
    ]
    cfg = load_config(preset_path(task), overrides)
    data_kwargs = dict(cfg["data"]["kwargs"])  # keep the preset's scene, scale its size
    data_kwargs["size"] = [round(s * budget.image_scale) for s in data_kwargs["size"]]
    cfg["data"]["kwargs"] = data_kwargs
    validate(cfg)
    return cfg


_BUILDABLE: dict[tuple[str, str], str | None] = {}


def why_pending(variant: Variant, task: str) -> str | None:
    """None if the library builds ``variant`` for ``task``, else why not (cached)."""
    if variant.pending:
        return variant.pending
    key = (variant.slug, task)
    if key not in _BUILDABLE:
        try:
            cfg = run_config(variant, task, 1, BUDGETS["small"], "cpu")
            build_model(cfg, 2 if tasks.get_task(task).multiclass else None)
            _BUILDABLE[key] = None
        except (TypeError, ValueError) as exc:  # an option the library does not accept (yet)
            _BUILDABLE[key] = f"pending: {str(exc).splitlines()[0]}"
    return _BUILDABLE[key]


def selected(suites: Iterable[str], task_filter: Sequence[str] | None,
             method_filter: Sequence[str] | None) -> Iterator[tuple[str, str, Variant, str]]:
    """``(suite, group, variant, task)`` of ``suites`` restricted to the tasks and methods asked
    for, in table order."""
    for suite in suites:
        for group, variants in SUITES[suite].items():
            for variant in variants:
                if method_filter and variant.method not in method_filter:
                    continue
                for task in variant.tasks:
                    if not task_filter or task in task_filter:
                        yield suite, group, variant, task


def plan(suites: Iterable[str], task_filter: Sequence[str] | None,
         method_filter: Sequence[str] | None, seeds: Sequence[int]) -> list[RunSpec]:
    """Every run of ``suites`` restricted to the tasks and methods asked for."""
    return [RunSpec(suite, group, variant, task, s)
            for suite, group, variant, task in selected(suites, task_filter, method_filter)
            for s in seeds]


def estimate_seconds(variant: Variant, task: str, budget: Budget) -> float:
    """CPU seconds of one run from :data:`SECONDS_PER_IMAGE`, scaled by pixels and images."""
    cost = SECONDS_PER_IMAGE.get(variant.model, SECONDS_PER_IMAGE[variant.method])
    h, w = load_config(preset_path(task))["data"]["kwargs"]["size"]
    pixels = h * w * budget.image_scale**2 / (64 * 64)
    images = budget.train_images * budget.epochs + EVAL_COST * budget.val_images
    return RUN_OVERHEAD_S + cost * pixels * images


def unique_runs(specs: Iterable[RunSpec], out: Path) -> dict[Any, RunSpec]:
    """The specs by run folder, first occurrence kept (identical runs of two suites train once);
    a pending variant has no folder and is keyed by its label."""
    runs: dict[Any, RunSpec] = {}
    for spec in specs:
        pending = why_pending(spec.variant, spec.task) is not None
        key = (spec.variant.label, spec.task, spec.seed) if pending else spec.run_dir(out)
        runs.setdefault(key, spec)
    return runs


def dry_run(specs: list[RunSpec], out: Path, budget: Budget) -> float:
    """Print the run list with each run's state and the estimated CPU time; return the total."""
    total, counts = 0.0, {"done": 0, "todo": 0, "pending": 0}
    print(f"{'suite/group':<28} {'task':<9} {'variant':<34} {'seed':>4}  state    est.")
    for spec in unique_runs(specs, out).values():
        reason = why_pending(spec.variant, spec.task)
        est = estimate_seconds(spec.variant, spec.task, budget)
        done = (spec.run_dir(out) / "result.json").exists()
        state = "pending" if reason else "done" if done else "todo"
        counts[state] += 1
        total += est if state == "todo" else 0.0
        note = f"  {reason}" if reason else ""
        print(f"{spec.suite + '/' + spec.group:<28} {spec.task:<9} {spec.variant.label:<34} "
              f"{spec.seed:>4}  {state:<7} {est / 60:5.1f} min{note}")
    print(f"\n{counts['todo']} to run, {counts['done']} done, {counts['pending']} pending; "
          f"estimated {total / 3600:.1f} h on 2 CPU cores (measured cost per image, "
          f"SECONDS_PER_IMAGE; an idle machine is faster, a busy one slower); budget "
          f"{budget.record()}")
    return total


# -- running --------------------------------------------------------------------------------------
def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def run_one(spec: RunSpec, out: Path, budget: Budget, device: str) -> dict[str, Any]:
    """Train and validate one run (or resume it, or return its finished result)."""
    run_dir = spec.run_dir(out)
    result_path = run_dir / "result.json"
    if result_path.exists():
        result = json.loads(result_path.read_text())
        if result["budget"] != budget.record():
            raise SystemExit(f"{result_path} was trained with budget {result['budget']}, not "
                             f"{budget.record()}: use another --out")
        return result
    cfg = run_config(spec.variant, spec.task, spec.seed, budget, device)
    run_dir.mkdir(parents=True, exist_ok=True)  # so the trainer resumes here (or starts here)
    t0 = time.perf_counter()
    res = train(cfg, run_dir=run_dir, resume=run_dir, quiet=True)
    result = {
        "task": spec.task,
        "variant": spec.variant.slug,
        "label": spec.variant.label,
        "model": spec.variant.model,
        "method": spec.variant.method,
        "kwargs": dict(spec.variant.kwargs),
        "seed": spec.seed,
        "budget": budget.record(),
        "size": cfg["data"]["kwargs"]["size"],
        "metrics": _scalars(res["metrics"]),
        "wall_seconds_this_call": round(time.perf_counter() - t0, 2),
        "device": cfg["device"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    write_json(str(result_path), result)
    return result


def run_all(specs: list[RunSpec], out: Path, budget: Budget, device: str) -> None:
    runs = unique_runs(specs, out)
    for i, spec in enumerate(runs.values(), 1):
        reason = why_pending(spec.variant, spec.task)
        head = f"[{i}/{len(runs)}] {spec.task} {spec.variant.label} seed {spec.seed}"
        if reason:
            print(f"{head}: {reason}", flush=True)
            continue
        done = (spec.run_dir(out) / "result.json").exists()
        result = run_one(spec, out, budget, device)
        headline = tasks.get_task(spec.task).headline
        state = "skipped (done)" if done else f"{result['wall_seconds_this_call']:.0f} s"
        print(f"{head}: {headline} {result['metrics'].get(headline, float('nan')):.4f} "
              f"[{state}]", flush=True)


# -- aggregation ----------------------------------------------------------------------------------
def aggregate(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per metric: mean and sample standard deviation (n - 1) over the runs (None if n < 2)."""
    keys = sorted({k for r in results for k in r["metrics"]})
    stats: dict[str, dict[str, float | None]] = {}
    for k in keys:
        values = [r["metrics"][k] for r in results if k in r["metrics"]]
        values = [v for v in values if not math.isnan(v)]
        if values:
            stats[k] = {"mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else None,
                        "n": len(values)}
    return stats


def finished_results(out: Path, task: str, variant: Variant) -> list[dict[str, Any]]:
    """Every finished seed of ``variant`` on ``task`` (``result.json`` files), by seed."""
    folder = out / "runs" / task / variant.slug
    paths = sorted(folder.glob("seed*/result.json"), key=lambda p: int(p.parent.name[4:]))
    return [json.loads(p.read_text()) for p in paths]


def deployment_cost(model: torch.nn.Module, size: Sequence[int], path: Path,
                    repeats: int = 5) -> dict[str, Any]:
    """Theory (bits, OPs) and the packed model: ``.bdn`` bytes, median latency at 1 thread."""
    shape = (1, 3, *size)
    totals = profile_summary(model, shape).totals
    cost: dict[str, Any] = {k: totals[k] for k in ("total_params", "binary_params", "bits",
                                                    "ops", "binary_mac_share")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        export(model, path, torch.zeros(shape))
        runtime = Runtime(path, threads=1)
        x = np.zeros(shape, dtype=np.float32)
        runtime(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runtime(x)
            times.append(time.perf_counter() - t0)
        cost["bdn_bytes"] = path.stat().st_size
        cost["latency_ms_1thread"] = 1000 * statistics.median(times)
    except Exception as exc:  # noqa: BLE001 - a model the exporter cannot pack keeps its row
        cost["export_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return cost


def summarize_runs(out: Path, suites: Sequence[str], task_filter: Sequence[str] | None,
                   method_filter: Sequence[str] | None) -> dict[str, Any]:
    """Aggregate every finished run of ``suites``; write summary.json, summary.md and the PNGs."""
    rows, costs, models = [], {}, {}
    for suite, group, variant, task in selected(suites, task_filter, method_filter):
        pending = why_pending(variant, task)
        results = [] if pending else finished_results(out, task, variant)
        row: dict[str, Any] = {
            "suite": suite, "group": group, "label": variant.label, "task": task,
            "variant": variant.slug, "seeds": [r["seed"] for r in results],
            "metrics": aggregate(results), "pending": pending,
        }
        key = (task, variant.slug)
        if results and key not in costs:
            ckpt = out / "runs" / task / variant.slug / f"seed{results[0]['seed']}"
            model, cfg, _ = load_model(ckpt / "last.pt")
            models[key] = (model, cfg)
            costs[key] = deployment_cost(model, results[0]["size"],
                                         out / "exports" / task / f"{variant.slug}.bdn")
        row["cost"] = costs.get(key)
        rows.append(row)
    budgets = {json.dumps(r["budget"], sort_keys=True)
               for p in (out / "runs").glob("*/*/seed*/result.json")
               for r in [json.loads(p.read_text())]}
    summary = {"budgets": [json.loads(b) for b in sorted(budgets)], "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json(str(out / "summary.json"), summary)
    pictures = write_plots(rows, models, out)
    (out / "summary.md").write_text(markdown(summary, pictures))
    return summary


# -- report ---------------------------------------------------------------------------------------
def _cell(stats: Mapping[str, Any] | None, metric: str) -> str:
    """``mean ± std`` of one metric (percent for :data:`PERCENT_METRICS`), ``-`` if absent."""
    if not stats or metric not in stats:
        return "-"
    scale, digits = (100.0, 2) if metric in PERCENT_METRICS else (1.0, 4)
    mean, std = stats[metric]["mean"], stats[metric]["std"]
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def markdown(summary: Mapping[str, Any], pictures: Sequence[str]) -> str:
    """The tables (one per group and task) and the pictures, as markdown."""
    lines = ["# Reproduction summary", "", f"Budgets of the runs: {summary['budgets']}", "",
             "Mean ± sample std over seeds (n = number of seeds); % for mIoU/pixAcc/mAcc. "
             "Bits and OPs (BOPs/64 + FLOPs) are theory (`bidense.profile.summarize`); .bdn size "
             "and latency (1 thread, packed runtime) are measured on this machine.", ""]
    by_table: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in summary["rows"]:
        by_table.setdefault((row["suite"], row["group"], row["task"]), []).append(row)
    for (suite, group, task), rows in by_table.items():
        cols = TABLE_METRICS[task]
        lines += [f"## {suite} / {group} / {task}", "",
                  "| variant | n | " + " | ".join(cols) + " | size (KiB, bits/8) | OPs (M) | "
                  ".bdn (KiB) | latency (ms) |",
                  "|---|---|" + "---|" * (len(cols) + 4)]
        for row in rows:
            if row["pending"]:
                lines.append(f"| {row['label']} | - | {row['pending']} |" + " |" * (len(cols) + 3))
                continue
            c = row["cost"] or {}
            size = f"{c['bits'] / 8 / 1024:.1f}" if "bits" in c else "-"
            ops = f"{c['ops'] / 1e6:.1f}" if "ops" in c else "-"
            bdn = f"{c['bdn_bytes'] / 1024:.1f}" if "bdn_bytes" in c else "-"
            lat = f"{c['latency_ms_1thread']:.1f}" if "latency_ms_1thread" in c else "-"
            cells = " | ".join(_cell(row["metrics"], m) for m in cols)
            lines.append(f"| {row['label']} | {len(row['seeds']) or 'not run'} | {cells} | "
                         f"{size} | {ops} | {bdn} | {lat} |")
        lines.append("")
    lines += [f"![{Path(p).stem}]({p})" for p in pictures]
    return "\n".join(lines) + "\n"


# -- plots (PIL only: matplotlib is not a dependency) ---------------------------------------------
PLOT_SIZE = (720, 420)
MARGIN = (70, 40, 20, 90)  # left, top, right, bottom
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _axes(title: str, ylabel: str, lo: float, hi: float) -> tuple[Image.Image, Any, Any]:
    """A white canvas with a title and a y axis from ``lo`` to ``hi``; returns (image, draw, y)."""
    img = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = MARGIN
    h = PLOT_SIZE[1] - top - bottom
    span = (hi - lo) or 1.0

    def y(v: float) -> float:
        return top + h * (1 - (v - lo) / span)

    draw.text((left, 10), title, fill="black")
    draw.line([(left, top), (left, top + h), (PLOT_SIZE[0] - right, top + h)], fill="black")
    for i in range(5):
        v = lo + span * i / 4
        draw.line([(left - 4, y(v)), (left, y(v))], fill="black")
        draw.text((4, y(v) - 6), f"{v:.3g}", fill="black")
    draw.text((4, top - 22), ylabel, fill="black")
    return img, draw, y


def _limits(values: Iterable[float]) -> tuple[float, float]:
    vals = list(values)
    lo, hi = min(vals), max(vals)
    pad = 0.1 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def bar_chart(title: str, labels: Sequence[str], means: Sequence[float],
              stds: Sequence[float | None], ylabel: str) -> Image.Image:
    """Bars with +-std error bars (a None std draws no bar)."""
    errs = [s or 0.0 for s in stds]
    bottoms = [m - e for m, e in zip(means, errs)]
    lo, hi = _limits([*bottoms, *(m + e for m, e in zip(means, errs)), 0.0])
    img, draw, y = _axes(title, ylabel, 0.0 if min(bottoms) >= 0 else lo, hi)
    left, _, right, bottom = MARGIN
    slot = (PLOT_SIZE[0] - left - right) / max(1, len(labels))
    for i, (label, m, e) in enumerate(zip(labels, means, errs)):
        x0 = left + i * slot + 0.15 * slot
        x1 = left + (i + 1) * slot - 0.15 * slot
        draw.rectangle([x0, y(m), x1, y(0.0)], fill=COLOURS[i % len(COLOURS)])
        xc = (x0 + x1) / 2
        if e:
            draw.line([(xc, y(m - e)), (xc, y(m + e))], fill="black", width=2)
            draw.line([(xc - 5, y(m + e)), (xc + 5, y(m + e))], fill="black", width=2)
            draw.line([(xc - 5, y(m - e)), (xc + 5, y(m - e))], fill="black", width=2)
        draw.text((x0, PLOT_SIZE[1] - bottom + 6 + 12 * (i % 2)), label[:14], fill="black")
    return img


def scatter_chart(title: str, points: Sequence[tuple[str, float, float, float | None]],
                  xlabel: str, ylabel: str) -> Image.Image:
    """(label, x, y, y-std) points; x on a log10 axis (OPs span orders of magnitude)."""
    ys = [p[2] for p in points]
    errs = [p[3] or 0.0 for p in points]
    img, draw, y = _axes(title, ylabel, *_limits([*(a - e for a, e in zip(ys, errs)),
                                                  *(a + e for a, e in zip(ys, errs))]))
    left, top, right, bottom = MARGIN
    xs = [math.log10(p[1]) for p in points]
    xlo, xhi = _limits(xs)
    width = PLOT_SIZE[0] - left - right

    def x(v: float) -> float:
        return left + width * (v - xlo) / ((xhi - xlo) or 1.0)

    for i in range(5):
        v = xlo + (xhi - xlo) * i / 4
        base = PLOT_SIZE[1] - bottom
        draw.line([(x(v), base), (x(v), base + 4)], fill="black")
        draw.text((x(v) - 15, base + 6), f"{10 ** v / 1e6:.3g}M", fill="black")
    draw.text((left + width // 2 - 40, PLOT_SIZE[1] - bottom + 24), xlabel, fill="black")
    for i, ((label, _, yv, _), xv, e) in enumerate(zip(points, xs, errs)):
        colour = COLOURS[i % len(COLOURS)]
        if e:
            draw.line([(x(xv), y(yv - e)), (x(xv), y(yv + e))], fill=colour, width=2)
        draw.ellipse([x(xv) - 4, y(yv) - 4, x(xv) + 4, y(yv) + 4], fill=colour)
        draw.text((x(xv) + 6, y(yv) - 6), label, fill=colour)
    return img


@torch.no_grad()
def prediction_grid(task: str, models: Mapping[str, tuple[torch.nn.Module, dict[str, Any]]],
                    count: int = 4) -> np.ndarray:
    """Input, truth and each model's prediction on the first ``count`` validation images."""
    cfg = next(iter(models.values()))[1]
    val = build_dataset_split(cfg, cfg["data"]["val_split"], train=False)
    style = tasks.get_task(task).picture
    palette = V.palette_for(getattr(val, "num_classes", None) or 2)

    def picture(image: np.ndarray, value: Any) -> np.ndarray:
        pic = V.prediction_picture(style, image, np.asarray(value).reshape(image.shape[:2]),
                                   palette)
        return pic[:, -image.shape[1]:]  # a picture wider than the input ends with the prediction

    rows = []
    for i in range(min(count, len(val))):
        item = val[i]
        image = V.denormalize(item["image"].numpy())
        row = [image, picture(image, item["target"].numpy())]
        for model, _ in models.values():
            out = model.eval()(item["image"][None])[0]
            row.append(picture(image, tasks.postprocess(out, task, 0).numpy()))
        rows.append([img.repeat(2, axis=0).repeat(2, axis=1) for img in row])
    return V.grid(rows, titles=["input", "truth", *models])


def write_plots(rows: list[dict[str, Any]], models: Mapping[tuple[str, str], Any],
                out: Path) -> list[str]:
    """Per main-suite task: headline vs OPs, bars with error bars, a prediction grid."""
    written = []
    for task in TASKS:
        main = [r for r in rows if r["suite"] == "main" and r["task"] == task and r["seeds"]]
        if not main:
            continue
        headline = tasks.get_task(task).headline
        stats = [r["metrics"].get(headline) for r in main]
        main = [r for r, s in zip(main, stats) if s]
        stats = [s for s in stats if s]
        labels = [r["label"] for r in main]
        charts = {
            f"{task}_bars.png": bar_chart(
                f"{task}: {headline} (mean +- std over seeds)", labels,
                [s["mean"] for s in stats], [s["std"] for s in stats], headline),
            f"{task}_vs_ops.png": scatter_chart(
                f"{task}: {headline} vs OPs (theory, log axis)",
                [(r["label"], r["cost"]["ops"], s["mean"], s["std"]) for r, s in zip(main, stats)],
                "OPs = BOPs/64 + FLOPs", headline),
        }
        grid_models = {r["label"]: models[(task, r["variant"])] for r in main}
        charts[f"{task}_predictions.png"] = Image.fromarray(prediction_grid(task, grid_models))
        for name, img in charts.items():
            img.save(out / name)
            written.append(name)
    return written


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("main", "ablations", "all"), default="main")
    p.add_argument("--scale", choices=tuple(BUDGETS), default="small",
                   help="small: the CPU budget; large: the setting for a lent GPU")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the scale's")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--val-images", type=int, default=None)
    p.add_argument("--image-scale", type=float, default=None,
                   help="image sides x this (multiples of 32 after scaling; 0.5 for a smoke run)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out", type=Path, default=Path("reports/reproduce"))
    p.add_argument("--dry-run", action="store_true", help="print the runs and the CPU estimate")
    p.add_argument("--summarize", action="store_true", help="aggregate the finished runs")
    return p.parse_args(argv)


def budget_from(args: argparse.Namespace) -> Budget:
    """The scale's budget with the command line's overrides."""
    b = asdict(BUDGETS[args.scale])
    for key in ("epochs", "train_images", "val_images", "image_scale", "device"):
        if getattr(args, key) is not None:
            b[key] = getattr(args, key)
    if args.seeds:
        b["seeds"] = tuple(args.seeds)
    return Budget(**b)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = budget_from(args)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    specs = plan(suites, args.tasks, args.methods, budget.seeds)
    if args.dry_run:
        dry_run(specs, args.out, budget)
        return 0
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    if args.summarize:
        summary = summarize_runs(args.out, suites, args.tasks, args.methods)
        print(markdown(summary, []))
        print(f"wrote {args.out / 'summary.json'} and {args.out / 'summary.md'}")
        return 0
    run_all(specs, args.out, budget, budget.device)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
