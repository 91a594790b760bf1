"""What the deployment-friendly training options cost in accuracy.

Trains the same BiDense model under one budget with DAB's per-channel scale (the paper) or the
shared per-sample scale (ours), and zero or +1 padding, on synthetic segmentation, and prints the
validation metrics side by side (plus fp32 for reference). Writes JSON.

    python benchmarks/deploy_variants_accuracy.py --epochs 10 --device cpu --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bidense.engine.config import load_config
from bidense.engine.trainer import train

VARIANTS = [
    ("fp32", "fp32", None, None),
    ("bidense (paper: per-channel DAB scale, zero pad)", "bidense", "channel", "zero"),
    ("bidense, shared DAB scale", "bidense", "shared", "zero"),
    ("bidense, +1 padding", "bidense", "channel", "one"),
    ("bidense, shared scale + +1 padding", "bidense", "shared", "one"),
]


def run(args: argparse.Namespace) -> dict:
    out = Path(args.output)
    results = []
    for label, method, dab_scale, pad_mode in VARIANTS:
        kwargs = {}
        if dab_scale:
            kwargs = {"dab_scale": dab_scale, "pad_mode": pad_mode}
        overrides = [
            f"device={args.device}",
            f"model.name={args.model}",
            f"model.method={method}",
            f"model.kwargs={json.dumps(kwargs)}",
            f"data.kwargs={{size: [{args.size[0]}, {args.size[1]}]}}",
            f"data.train_kwargs={{num_images: {args.train_images}}}",
            f"data.val_kwargs={{num_images: {args.val_images}}}",
            f"data.batch_size={args.batch_size}",
            f"data.num_workers={args.num_workers}",
            f"train.epochs={args.epochs}",
            f"train.lr={args.lr}",
            "train.scheduler_step=step",
            "train.eval_every=1000000",
            "train.progress=off",
        ]
        cfg = load_config(overrides=overrides)
        t0 = time.perf_counter()
        res = train(cfg, run_dir=out / label.split(" ")[0] / f"{dab_scale}-{pad_mode}", quiet=True)
        m = res["metrics"]
        results.append({"variant": label, "mIoU": m["mIoU"], "pixAcc": m["pixAcc"],
                        "seconds": time.perf_counter() - t0})
        print(f"{label:<52} mIoU {100 * m['mIoU']:6.2f}  pixAcc {100 * m['pixAcc']:6.2f}",
              flush=True)
    report = {"model": args.model, "budget": vars(args), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="upernet_convnext_micro")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, nargs=2, default=[64, 64])
    p.add_argument("--train-images", type=int, default=1200)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--output", default="runs/deploy_variants")
    p.add_argument("--json", default="deploy_variants.json")
    run(p.parse_args())


if __name__ == "__main__":
    main()
