r"""Information entropy of binarized activations per channel (BiDense, arXiv 2411.10346, Fig. 3).

For every 1-bit activation binarizer of a model and every one of its input channels c, the share
of +1 outputs over real batches of the synthetic validation data,
:math:`p_c = P(\text{bit} = +1)`, gives the channel's binary entropy

.. math:: H_c = -p_c \log_2 p_c - (1 - p_c) \log_2 (1 - p_c) \le 1 \text{ bit}

(1 bit at :math:`p_c = 0.5`; bidense-method.md §3). A channel whose bits are nearly all +1 or
all -1 carries almost no information; DAB's per-sample threshold is meant to keep H_c near 1.

Binarizers compared, each in the model trained with it (``--runs``: the seed-1 checkpoints of
``benchmarks/reproduce.py``'s main suite; a fresh, untrained model where a run is missing, which
the table says):

* ``sign``: the ``bnn`` model's sign;
* ``rsign``: the ``reactnet`` model's RSign (sign(x - b_c), learned b);
* ``dab``: the ``bidense`` model's DAB (sign(x - (k_c mu_{n,c} + b_c)));
* ``sign on DAB inputs``: plain sign (threshold 0) on exactly the inputs DAB sees, so the
  threshold is the only difference from the ``dab`` row.

    python benchmarks/entropy_analysis.py --runs reports/reproduce --task seg

Prints a table, writes JSON and a PNG (histograms of the per-channel entropy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from reproduce import BUDGETS, MODEL, TASKS, Variant, bar_chart, run_config
from torch.utils.data import DataLoader

from bidense.benchmark.common import write_json
from bidense.binarize import ActivationBinarizer, bits_of
from bidense.engine.builders import build_dataset_split, build_model
from bidense.engine.loading import load_model

#: label -> (method whose model is analysed, what is counted: the binarizer's "output" or
#: plain sign of its "input")
BINARIZERS: dict[str, tuple[str, str]] = {
    "sign": ("bnn", "output"),
    "rsign": ("reactnet", "output"),
    "dab": ("bidense", "output"),
    "sign on DAB inputs": ("bidense", "input"),
}
BINS = 10  # histogram bins over [0, 1] bit


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """:math:`-p\\log_2 p - (1-p)\\log_2(1-p)`, 0 at p in {0, 1}."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def model_for(method: str, task: str, runs: Path | None) -> tuple[torch.nn.Module, dict, str]:
    """``(model, config, "trained" | "fresh")``: the seed-1 run of ``method`` if there is one."""
    variant = Variant(method, MODEL, method)
    ckpt = runs / "runs" / task / variant.slug / "seed1" / "last.pt" if runs else None
    if ckpt is not None and ckpt.is_file():
        model, cfg, _ = load_model(ckpt)
        return model, cfg, "trained"
    cfg = run_config(variant, task, 1, BUDGETS["small"], "cpu")
    val = build_dataset_split(cfg, cfg["data"]["val_split"], train=False)
    return build_model(cfg, getattr(val, "num_classes", None)).eval(), cfg, "fresh"


@torch.no_grad()
def channel_entropies(model: torch.nn.Module, cfg: dict, what: str, images: int,
                      batch_size: int = 8) -> dict[str, np.ndarray]:
    """Per 1-bit activation binarizer (by module name): the entropy of each channel's bits."""
    positive: dict[str, torch.Tensor] = {}
    total: dict[str, int] = {}
    hooks = []

    def hook(name: str, module: ActivationBinarizer):
        def count(_: Any, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            t = out if what == "output" else args[0]
            bits = (t > 0).movedim(module.channel_dim, 0).reshape(t.shape[module.channel_dim], -1)
            positive[name] = positive.get(name, 0) + bits.sum(1).double()
            total[name] = total.get(name, 0) + bits.shape[1]
        return count

    for name, module in model.named_modules():
        if isinstance(module, ActivationBinarizer) and bits_of(module) == 1:
            hooks.append(module.register_forward_hook(hook(name, module)))
    val = build_dataset_split(cfg, cfg["data"]["val_split"], train=False)
    subset = torch.utils.data.Subset(val, range(min(images, len(val))))
    try:
        for batch in DataLoader(subset, batch_size=batch_size):
            model(batch["image"])
    finally:
        for h in hooks:
            h.remove()
    return {name: binary_entropy((positive[name] / total[name]).numpy()) for name in positive}


def analyse(task: str, runs: Path | None, images: int) -> dict[str, Any]:
    """The entropy statistics of every binarizer of :data:`BINARIZERS` on ``task``."""
    report: dict[str, Any] = {"task": task, "images": images, "binarizers": {}}
    for label, (method, what) in BINARIZERS.items():
        model, cfg, source = model_for(method, task, runs)
        layers = channel_entropies(model, cfg, what, images)
        flat = np.concatenate(list(layers.values())) if layers else np.zeros(0)
        report["binarizers"][label] = {
            "method": method, "model": source, "layers": len(layers), "channels": int(flat.size),
            "mean_bits": float(flat.mean()) if flat.size else float("nan"),
            "median_bits": float(np.median(flat)) if flat.size else float("nan"),
            "share_below_half_bit": float((flat < 0.5).mean()) if flat.size else float("nan"),
            "histogram": np.histogram(flat, bins=BINS, range=(0.0, 1.0))[0].tolist(),
            "per_layer_mean_bits": {n: float(h.mean()) for n, h in layers.items()},
        }
    return report


def table(report: dict[str, Any]) -> str:
    head = f"{'binarizer':<20} {'model':<16} {'layers':>6} {'channels':>8} {'mean H':>7} " \
           f"{'median H':>8} {'H<0.5':>6}"
    lines = [f"per-channel entropy of the binarized activations, task {report['task']}, "
             f"{report['images']} validation images", head, "-" * len(head)]
    for label, r in report["binarizers"].items():
        lines.append(f"{label:<20} {r['method'] + ' (' + r['model'] + ')':<16} {r['layers']:>6} "
                     f"{r['channels']:>8} {r['mean_bits']:>7.3f} {r['median_bits']:>8.3f} "
                     f"{100 * r['share_below_half_bit']:>5.1f}%")
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> Image.Image:
    """One histogram of the channel entropies per binarizer, stacked."""
    labels = [f"{i / BINS:.1f}-{(i + 1) / BINS:.1f}" for i in range(BINS)]
    charts = []
    for name, r in report["binarizers"].items():
        share = np.asarray(r["histogram"], dtype=np.float64) / max(1, r["channels"])
        charts.append(bar_chart(f"{name} ({r['method']}, {r['model']}): share of channels per "
                                f"entropy bin (bits), mean {r['mean_bits']:.3f}",
                                labels, share.tolist(), [None] * BINS, "share"))
    canvas = Image.new("RGB", (charts[0].width, sum(c.height for c in charts)), "white")
    for i, chart in enumerate(charts):
        canvas.paste(chart, (0, i * chart.height))
    return canvas


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=None, help="benchmarks/reproduce.py --out folder")
    p.add_argument("--task", choices=TASKS, default="seg")
    p.add_argument("--images", type=int, default=64, help="validation images to run")
    p.add_argument("--out", type=Path, default=Path("reports/reproduce/entropy"))
    args = p.parse_args(argv)
    report = analyse(args.task, args.runs, args.images)
    print(table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(str(args.out / f"entropy_{args.task}.json"), report)
    plot(report).save(args.out / f"entropy_{args.task}.png")
    print(f"wrote {args.out / f'entropy_{args.task}.json'} and the PNG beside it")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
