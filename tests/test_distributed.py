"""Two CPU processes under torchrun (DDP, gloo): identical weights, metric == single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bidense.engine.evaluate import evaluate_checkpoint

HERE = Path(__file__).resolve().parent
OVERRIDES = [
    "name=ddp",
    "device=cpu",
    "model.name=upernet_convnext_micro",
    "model.method=bidense",
    "data.dataset=synthetic",
    "data.batch_size=4",
    "data.kwargs={size: [32, 32]}",
    "data.train_kwargs={num_images: 16}",
    "data.val_kwargs={num_images: 7}",  # odd: the evaluation shards differ in size
    "train.epochs=2",
    "train.progress=off",
]


def test_two_process_training_on_cpu(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE.parent / "src"),
        "OMP_NUM_THREADS": "1",
        "BIDENSE_CACHE": str(tmp_path / "cache"),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "ddp_worker.py"), str(tmp_path), *OVERRIDES]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "world.txt").read_text() == "2"

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ in {key}"

    # the all-reduced validation metric equals a single-process evaluation of the same weights
    distributed_metrics = json.loads((tmp_path / "metrics.json").read_text())
    os.environ["BIDENSE_CACHE"] = env["BIDENSE_CACHE"]
    single = evaluate_checkpoint(tmp_path / "run" / "last.pt")
    for key in ("mIoU", "pixAcc", "mAcc"):
        assert distributed_metrics[key] == pytest.approx(single[key], abs=1e-12), key
