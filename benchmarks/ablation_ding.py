"""Ablation of the Ding et al. 2024 layers (our design, ding2024.md D1/D2/D4) on synthetic data.

Two ablations on the ``ding_resnet_tiny`` model (binary, method ``ding``), each on synthetic
segmentation, road and saliency data (:class:`bidense.data.SyntheticScenes`):

* upsampling: ``bilinear`` vs ``transposed`` (single-branch baselines) vs ``multibranch``,
  attention binary;
* attention: ``none`` vs ``binary`` vs ``fp`` (full N x N DANet PAM + CAM in FP32), upsampling
  multi-branch.

Every run uses the same data, the same number of optimiser steps, batch size, learning rate and
seed (model init and batch order), so only the switch differs. Metrics: mIoU / pixel accuracy
(seg), MaxF / AP (road, perspective view), MAE / max F / S-measure (saliency), each on the
synthetic validation split. Also printed: the parameter count and the attention's SA-OPs ratio
(D2 rule) at the model's 1/8 map. Results are printed as tables and written as JSON.

    python benchmarks/ablation_ding.py --quick          # seconds-long smoke run
    python benchmarks/ablation_ding.py                  # default budget, ~10 min on 2 cores

Run from the repository root with ``PYTHONPATH=src`` (or the package installed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from bidense.data import SyntheticScenes
from bidense.losses import build_loss
from bidense.metrics import RoadMetric, SaliencyMetric, SegmentationMetric
from bidense.models.ding import ding_resnet_tiny
from bidense.profile import attention_cost_comparison

TASKS = ("seg", "road", "saliency")
ABLATIONS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "upsampling": [
        ("bilinear", {"upsample": "bilinear", "attention": "binary"}),
        ("transposed", {"upsample": "transposed", "attention": "binary"}),
        ("multibranch", {"upsample": "multibranch", "attention": "binary"}),
    ],
    "attention": [
        ("none", {"upsample": "multibranch", "attention": "none"}),
        ("binary", {"upsample": "multibranch", "attention": "binary"}),
        ("fp", {"upsample": "multibranch", "attention": "fp"}),
    ],
}
METRIC_KEYS = {
    "seg": ("mIoU", "pixAcc"),
    "road": ("max_f", "ap"),
    "saliency": ("mae", "max_f", "s_measure"),
}
MEAN, STD = 0.5, 0.25  # fixed input normalisation (synthetic images are in [0, 1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: a few steps on a few images")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--val-images", type=int, default=None)
    p.add_argument("--size", type=int, nargs=2, default=(64, 96), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data-root", default=None, help="synthetic cache dir (default: package's)")
    p.add_argument("--out", default="benchmarks/results/ablation_ding.json")
    a = p.parse_args(argv)
    quick = a.quick
    a.steps = a.steps if a.steps is not None else (3 if quick else 120)
    a.train_images = a.train_images if a.train_images is not None else (8 if quick else 256)
    a.val_images = a.val_images if a.val_images is not None else (4 if quick else 64)
    if a.size[0] % 32 or a.size[1] % 32:
        p.error(f"--size must be multiples of 32, got {a.size}")
    return a


def _batch(sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    return (sample["image"] - MEAN) / STD, sample["target"]


def _metric(task: str, num_classes: int) -> Any:
    if task == "seg":
        return SegmentationMetric(num_classes)
    if task == "road":
        return RoadMetric()
    return SaliencyMetric()


def run_one(task: str, kw: dict[str, str], args: argparse.Namespace,
            train: SyntheticScenes, val: SyntheticScenes) -> dict[str, Any]:
    """Train one variant for ``args.steps`` steps and evaluate it on ``val``."""
    torch.manual_seed(args.seed)
    k = train.num_classes if task == "seg" else None
    model = ding_resnet_tiny(task=task, num_classes=k, method="ding", **kw)
    loss_fn = build_loss(task)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, generator=gen,
                        drop_last=len(train) >= args.batch_size)
    model.train()
    step, t0, last_loss = 0, time.perf_counter(), float("nan")
    while step < args.steps:
        for sample in loader:
            x, y = _batch(sample)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            last_loss = float(loss.detach())
            step += 1
            if step >= args.steps:
                break
    train_s = time.perf_counter() - t0
    model.eval()
    metric = _metric(task, train.num_classes)
    with torch.no_grad():
        for sample in DataLoader(val, batch_size=args.batch_size):
            x, y = _batch(sample)
            out = model(x)
            metric.update(out if task == "seg" else torch.sigmoid(out), y)
    res = metric.compute()
    row: dict[str, Any] = {k2: float(res[k2]) for k2 in METRIC_KEYS[task]}
    row["final_train_loss"] = last_loss
    row["train_seconds"] = round(train_s, 2)
    row["params"] = sum(p.numel() for p in model.parameters())
    return row


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(task: str, ablation: str, rows: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of one ablation on one task."""
    cols = [*METRIC_KEYS[task], "final_train_loss", "params", "train_seconds"]
    head = [f"{ablation} ({task})", *cols]
    body = [[name, *(_fmt(r[c]) for c in cols)] for name, r in rows.items()]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the ablations; print tables; write JSON to ``--out``; return the results."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.size)
    h8, w8 = size[0] // 8, size[1] // 8
    probe = ding_resnet_tiny(task="road")
    cost = attention_cost_comparison(probe.attention.channels, h8, w8, probe.attention.grid)
    results: dict[str, Any] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "model": "ding_resnet_tiny",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "attention_cost_at_1_8": {"channels": probe.attention.channels, "map": [h8, w8],
                                  "grid": list(probe.attention.grid), **cost},
        "tasks": {},
    }
    print(f"ding ablation: steps={args.steps} batch={args.batch_size} lr={args.lr} "
          f"train/val images={args.train_images}/{args.val_images} size={size} seed={args.seed}")
    print(f"binary attention at 1/8 ({h8}x{w8}, C={probe.attention.channels}): "
          f"SA-OPs {cost['ours_sa_ops']:,.0f} vs FP DANet {cost['reference_sa_ops']:,.0f} "
          f"({cost['ratio']:.1f}x)")
    t_all = time.perf_counter()
    for task in args.tasks:
        common = dict(root=args.data_root, task=task, size=size, seed=args.seed)
        train = SyntheticScenes(split="train", num_images=args.train_images, **common)
        val = SyntheticScenes(split="val", num_images=args.val_images, **common)
        cache: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        results["tasks"][task] = {}
        for ablation, variants in ABLATIONS.items():
            rows: dict[str, dict[str, Any]] = {}
            for name, kw in variants:
                key = tuple(sorted(kw.items()))
                if key not in cache:  # multibranch + binary attention is shared
                    cache[key] = run_one(task, kw, args, train, val)
                rows[name] = cache[key]
            results["tasks"][task][ablation] = rows
            print()
            print(table(task, ablation, rows), flush=True)
        _atomic_json(Path(args.out), results)  # partial results survive an interrupted run
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)
    out = Path(args.out)
    _atomic_json(out, results)
    print(f"\ntotal {results['total_seconds']} s; wrote {out}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
