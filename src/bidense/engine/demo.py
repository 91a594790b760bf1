"""``bidense demo``: the main job on a fresh machine, with no data to download.

It generates synthetic scenes, trains the same small architecture three times under one budget
(full precision, BiDense, and a baseline binarizer), evaluates them on the same validation split,
and writes a report: a table (metric, parameters in bits, theoretical OPs, measured training
time) and a picture grid (input, ground truth, each model's prediction).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import tasks
from ..profile import summarize
from . import visualize as V
from .builders import build_dataset_split
from .config import load_config
from .loading import load_model
from .trainer import train

DEMO_MODEL = "upernet_convnext_micro"
DEMO_METHODS = ("fp32", "bidense", "reactnet")
DEMO_TASK = "seg"
FULL = {"size": [64, 64], "train_images": 1200, "val_images": 200, "epochs": 10,
        "batch_size": 16, "lr": 2e-3}
QUICK = {"size": [32, 32], "train_images": 16, "val_images": 8, "epochs": 1,
         "batch_size": 8, "lr": 2e-3}


def demo_config(method: str, budget: dict[str, Any], seed: int = 1) -> dict[str, Any]:
    """The training config every demo model shares; only ``model.method`` differs."""
    overrides = [
        f"name=demo-{method}",
        f"seed={seed}",
        "device=cpu",
        f"model.name={DEMO_MODEL}",
        f"model.method={method}",
        f"model.task={DEMO_TASK}",
        "data.dataset=synthetic",
        f"data.batch_size={budget['batch_size']}",
        f"data.kwargs={{size: {budget['size']}}}",
        f"data.train_kwargs={{num_images: {budget['train_images']}}}",
        f"data.val_kwargs={{num_images: {budget['val_images']}}}",
        f"train.epochs={budget['epochs']}",
        f"train.lr={budget['lr']}",
        "train.scheduler_step=step",
        "train.eval_every=1000000",  # evaluate once, after the last epoch
    ]
    return load_config(overrides=overrides)


def _profile(model: torch.nn.Module, size: list[int]) -> dict[str, Any]:
    totals = summarize(model, (1, 3, *size)).totals
    return {k: totals[k] for k in ("total_params", "binary_params", "fp_params", "bits", "bops",
                                   "flops", "ops", "binary_mac_share")}


@torch.no_grad()
def _prediction_grid(models: dict[str, torch.nn.Module], cfg: dict[str, Any], count: int = 4):
    val = build_dataset_split(cfg, cfg["data"]["val_split"], train=False)
    num_classes = val.num_classes
    palette = V.palette_for(num_classes)
    rows = []
    for i in range(min(count, len(val))):
        item = val[i]
        image = V.denormalize(item["image"].numpy())
        row = [image, V.colorize_labels(item["target"].numpy(), palette)]
        for model in models.values():
            pred = tasks.postprocess(model.eval()(item["image"][None])[0], DEMO_TASK, 0).numpy()
            row.append(V.colorize_labels(pred, palette))
        rows.append([_upscale(img, 2) for img in row])
    return V.grid(rows, titles=["input", "truth", *models.keys()])


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    return img.repeat(k, axis=0).repeat(k, axis=1)


def _fmt_int(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} K"


def run_demo(output: str | os.PathLike = "reports/demo", quick: bool = False,
             epochs: int | None = None, methods: tuple[str, ...] = DEMO_METHODS) -> Path:
    """Run the demo and return the path of ``report.md``."""
    budget = dict(QUICK if quick else FULL)
    if epochs is not None:
        budget["epochs"] = int(epochs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"bidense demo: {DEMO_MODEL}, methods {', '.join(methods)}, budget {budget}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    models: dict[str, torch.nn.Module] = {}
    cfg = None
    for method in methods:
        cfg = demo_config(method, budget)
        t0 = time.perf_counter()
        run = train(cfg, run_dir=out / "runs" / method, quiet=False)
        seconds = time.perf_counter() - t0
        model, _, _ = load_model(Path(run["run_dir"]) / "last.pt")
        models[method] = model
        metrics = run["metrics"]
        results[method] = {
            "mIoU": metrics["mIoU"],
            "pixAcc": metrics["pixAcc"],
            "train_seconds": seconds,
            "theory": _profile(model, budget["size"]),
        }
    assert cfg is not None
    grid = _prediction_grid(models, cfg)
    Image.fromarray(grid).save(out / "predictions.png")

    fp = results.get("fp32", {}).get("theory")
    lines = [
        "# bidense demo report",
        "",
        f"Model `{DEMO_MODEL}` trained from scratch on synthetic scenes "
        f"({budget['train_images']} train / {budget['val_images']} val images at "
        f"{budget['size'][0]}x{budget['size'][1]}), {budget['epochs']} epochs, batch "
        f"{budget['batch_size']}, AdamW + OneCycle (max lr {budget['lr']}), seed 1, the same "
        "budget for every method. Metrics on the validation split (last checkpoint).",
        "",
        "| method | mIoU (%) | pixAcc (%) | params | 1-bit params | size in bits | OPs "
        f"(theory, 1x3x{budget['size'][0]}x{budget['size'][1]}) | binary MAC share | "
        "train time (measured) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in results.items():
        t = r["theory"]
        ratio = ""
        if fp and method != "fp32":
            ratio = (
                f" ({fp['bits'] / t['bits']:.1f}x fewer bits, "
                f"{fp['ops'] / t['ops']:.1f}x fewer OPs)"
            )
        lines.append(
            f"| {method} | {100 * r['mIoU']:.2f} | {100 * r['pixAcc']:.2f} | "
            f"{_fmt_int(t['total_params'])} | {_fmt_int(t['binary_params'])} | "
            f"{t['bits'] / 8 / 1024:.1f} KiB{ratio} | {t['ops'] / 1e6:.1f} M | "
            f"{100 * t['binary_mac_share']:.1f}% | {r['train_seconds']:.0f} s |"
        )
    lines += [
        "",
        "Theory (bits, OPs = BOPs/64 + FLOPs) comes from `bidense summary`; the training time is "
        "measured wall-clock on this machine. They are never mixed.",
        "",
        "![predictions](predictions.png)",
        "",
        "Columns of the picture: input, ground truth, then each model's prediction.",
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"budget": budget, "model": DEMO_MODEL,
                                                 "results": results}, indent=2))
    print("\n".join(lines[6:6 + len(results) + 1]))
    # the binary model users came for (fp32 only when it ran alone), by its headline metric
    binary = [m for m in results if m != "fp32"] or list(results)
    best = max(binary, key=lambda m: results[m]["mIoU"])
    print(f"see the best binary model ({best}) in a browser: "
          f"bidense serve {out / 'runs' / best / 'last.pt'}")
    return report
