"""Launched by tests/test_distributed.py through torchrun: trains, then saves this rank's state."""

import json
import sys
from pathlib import Path

import torch

from bidense.engine import distributed
from bidense.engine.config import load_config
from bidense.engine.trainer import Trainer

out = Path(sys.argv[1])
torch.set_num_threads(1)
trainer = Trainer(load_config(overrides=sys.argv[2:]), run_dir=out / "run", quiet=True)
result = trainer.fit()
torch.save(trainer.model.state_dict(), out / f"rank{trainer.rank}.pt")
if trainer.rank == 0:
    (out / "metrics.json").write_text(json.dumps(result["metrics"]))
    (out / "world.txt").write_text(str(trainer.world))
distributed.cleanup()
