"""Train and evaluate loops (plain PyTorch, DDP through torchrun).

Readable first, in the spirit of the torchvision segmentation references: one function builds the
pieces from the config, :class:`Trainer` runs epochs, checkpoints atomically and resumes exactly.
"""

from __future__ import annotations

import json
import math
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from .. import __version__
from .._atomic import remove_orphaned_temps
from .._system import reuse_heap_memory
from ..binarize import clip_latent_weights, set_training_progress
from ..losses import DistillationLoss
from . import distributed as dist_utils
from .builders import (
    build_datasets,
    build_loss_fn,
    build_metric,
    build_model,
    config_from_yaml,
    headline_metric,
)
from .checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    atomic_save,
    check_free_space,
    check_writable,
    load_checkpoint,
    rng_state,
    set_rng_state,
    tensor_checksum,
)
from .config import dump_config
from .evaluate import evaluate_model, resolve_device
from .loading import load_model
from .logging import CSVLogger, ProgressBar, TensorBoardLogger, log_line


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global RNG some user code still reads
    torch.manual_seed(seed)


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes items r, r+W, r+2W, ... with no padding, so the
    all-reduced metric equals the single-process one exactly."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_metadata(cfg: dict[str, Any]) -> dict[str, Any]:
    """What ``meta.json`` records about a run: versions, platform, git SHA, seed, command."""
    return {
        "bidense": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": _git_sha(),
        "seed": cfg["seed"],
        "world_size": dist_utils.world_size(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def new_run_dir(cfg: dict[str, Any]) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg["output_dir"]) / cfg["name"] / stamp


RESUME_KEYS = (
    ("model",),
    ("seed",),
    ("data", "dataset"),
    ("data", "batch_size"),
    ("train", "epochs"),
    ("train", "lr"),
    ("train", "scheduler"),
    ("train", "scheduler_step"),
    ("train", "effective_batch_size"),
)


def check_resume_compatible(cfg: dict[str, Any], ckpt: dict[str, Any], path: Path) -> None:
    """Refuse to resume with settings that change the model or the schedule."""
    saved = config_from_yaml(ckpt["config"])
    for keys in RESUME_KEYS:
        a, b = cfg, saved
        for k in keys:
            a, b = a[k], b[k]
        if a != b:
            raise CheckpointError(
                f"{path}: cannot resume with {'.'.join(keys)}={a!r}; the run was started with "
                f"{b!r} (start a new run instead)"
            )


class Trainer:
    """Owns one training run: model, optimiser, scheduler, data, metric, run directory."""

    def __init__(
        self,
        cfg: dict[str, Any],
        run_dir: str | Path | None = None,
        resume: str | Path | None = None,
        quiet: bool = False,
    ) -> None:
        self.cfg = cfg
        self.quiet = quiet
        self.device = resolve_device(cfg["device"])
        reuse_heap_memory()
        self.distributed = dist_utils.init_distributed(self.device)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.main = self.rank == 0

        resume_ckpt = None
        if resume is not None:
            resume = Path(resume)
            ckpt_path = resume / "last.pt" if resume.is_dir() else resume
            run_dir = run_dir or ckpt_path.parent
            # a run killed before its first checkpoint simply starts again in the same folder
            if ckpt_path.exists() or not resume.is_dir():
                resume_ckpt = load_checkpoint(ckpt_path)
                check_resume_compatible(cfg, resume_ckpt, ckpt_path)
        if run_dir is None:
            run_dir = dist_utils.broadcast_object(str(new_run_dir(cfg)) if self.main else None)
        self.run_dir = Path(run_dir)
        if self.main:
            check_writable(self.run_dir)
        dist_utils.barrier()

        seed_everything(cfg["seed"])
        self.train_set, self.val_set = build_datasets(cfg)
        task = cfg["model"]["task"]
        self.task = task
        num_classes = cfg["model"]["num_classes"] or getattr(self.train_set, "num_classes", None)
        self.num_classes = num_classes
        self.model = build_model(cfg, num_classes).to(self.device)
        if self.distributed and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.loss_fn = build_loss_fn(cfg, num_classes)
        self.metric = build_metric(cfg, num_classes)
        self.metric_name, self.metric_mode = headline_metric(cfg)
        self.teacher = self._build_teacher()
        if self.teacher is not None:
            self.kd_loss = DistillationLoss(temperature=cfg["train"]["distill"]["temperature"])

        data = cfg["data"]
        self.train_sampler = torch.utils.data.DistributedSampler(
            self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True,
            seed=cfg["seed"], drop_last=False,
        )
        self.train_loader = DataLoader(
            self.train_set, batch_size=data["batch_size"], sampler=self.train_sampler,
            num_workers=data["num_workers"], drop_last=len(self.train_set) > data["batch_size"],
            pin_memory=self.device.type == "cuda",
        )
        eval_bs = data["eval_batch_size"] or data["batch_size"]
        self.val_loader = DataLoader(
            self.val_set, batch_size=eval_bs, num_workers=data["num_workers"],
            sampler=ShardSampler(len(self.val_set), self.rank, self.world),
        )

        train = cfg["train"]
        per_update = data["batch_size"] * self.world
        eff = train["effective_batch_size"] or per_update
        self.accumulate = max(1, eff // per_update)
        self.ddp_model: nn.Module = self.model
        if self.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=train["lr"], betas=tuple(train["betas"]),
            weight_decay=train["weight_decay"],
        )
        if self.main:
            # a checkpoint holds the weights and AdamW's two moments; the disk must hold three:
            # last.pt, best.pt and the temp copy atomic_save writes next to them before it
            # replaces last.pt (the old last.pt stays until the new one is complete)
            state_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
            check_free_space(self.run_dir, 3 * 3 * state_bytes)
        self.updates_per_epoch = math.ceil(len(self.train_loader) / self.accumulate)
        self.scheduler = self._build_scheduler()
        self.use_amp = train["amp"] == "auto" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        self.restarted = resume is not None and resume_ckpt is None
        self.start_epoch, self.step = 0, 0
        self.best: float | None = None
        self.history: list[dict[str, Any]] = []
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        if resume is not None and self.main:
            # temp files of checkpoint writes a kill interrupted; nothing else writes here now
            for orphan in remove_orphaned_temps(self.run_dir):
                self._log(f"removed {orphan.name} left by an interrupted write")

    # -- construction helpers -----------------------------------------------------------------
    def _build_scheduler(self):
        train = self.cfg["train"]
        if train["scheduler"] == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        total = train["epochs"] if train["scheduler_step"] == "epoch" else (
            train["epochs"] * self.updates_per_epoch
        )
        return torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=train["lr"], total_steps=max(1, total),
            pct_start=train["pct_start"],
        )

    def _build_teacher(self) -> nn.Module | None:
        path = self.cfg["train"]["distill"]["teacher"]
        if not path:
            return None
        teacher, teacher_cfg, _ = load_model(path)
        if teacher_cfg["model"]["task"] != self.task:
            raise CheckpointError(
                f"{path}: teacher task {teacher_cfg['model']['task']!r} differs from {self.task!r}"
            )
        return teacher.to(self.device).requires_grad_(False)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint does not match model {self.cfg['model']['name']}/"
                f"{self.cfg['model']['method']}: {str(exc).splitlines()[0]}"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.best = ckpt.get("best")
        self.history = list(ckpt.get("history", []))
        set_rng_state(ckpt["rng"])

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, epoch: int) -> dict[str, Any]:
        ckpt = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "best": self.best,
            "history": self.history,
            "config": dump_config(self.cfg),
            "num_classes": self.num_classes,
            "rng": rng_state(),
        }
        ckpt["checksum"] = tensor_checksum(ckpt)
        return ckpt

    # -- loops ----------------------------------------------------------------------------------
    def _forward_loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=self.use_amp):
            out = self.ddp_model(images)
            loss = self.loss_fn(out, targets)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_out = self.teacher(images)
                kd_weight = self.cfg["train"]["distill"]["weight"]
                loss = loss + kd_weight * self.kd_loss(out, teacher_out)
        return loss

    def train_one_epoch(self, epoch: int) -> float:
        self.ddp_model.train()
        self.train_sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        epochs = self.cfg["train"]["epochs"]
        n = len(self.train_loader)
        total, count = 0.0, 0
        bar = ProgressBar(n, f"epoch {epoch + 1}/{epochs}", self._progress_enabled())
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(self.train_loader):
            images = batch["image"].to(self.device, non_blocking=True)
            targets = batch["target"].to(self.device, non_blocking=True)
            last_of_group = (i + 1) % self.accumulate == 0 or i + 1 == n
            sync = last_of_group or not self.distributed
            ctx = self.ddp_model.no_sync() if not sync else _nullcontext()
            with ctx:
                loss = self._forward_loss(images, targets)
                self.scaler.scale(loss / self.accumulate).backward()
            if last_of_group:
                self._update()
            set_training_progress(self.model, (epoch + (i + 1) / n) / epochs)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1} step {i} (try a lower "
                    "train.lr or set train.grad_clip)"
                )
            total += loss.item() * images.shape[0]
            count += images.shape[0]
            bar.update(loss=loss.item())
        bar.close()
        if self.cfg["train"]["scheduler_step"] == "epoch":
            self.scheduler.step()
        stats = torch.tensor([total, count], dtype=torch.float64, device=self.device)
        if self.distributed:
            torch.distributed.all_reduce(stats)
        return float(stats[0] / max(stats[1], 1))

    def _update(self) -> None:
        clip = self.cfg["train"]["grad_clip"]
        if clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        clip_latent_weights(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.cfg["train"]["scheduler_step"] == "step":
            self.scheduler.step()

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Give every rank rank 0's BN running statistics (plain BN keeps them per rank)."""
        if self.distributed:
            for buf in self.model.buffers():
                torch.distributed.broadcast(buf, 0)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        self.sync_buffers()
        return evaluate_model(
            self.model, self.val_loader, self.metric, self.task, self.device, self.use_amp
        )

    def _progress_enabled(self) -> bool:
        mode = self.cfg["train"]["progress"]
        if self.quiet or not self.main:
            return False
        return mode == "on" or (mode == "auto" and sys.stderr.isatty())

    def fit(self) -> dict[str, Any]:
        cfg, train = self.cfg, self.cfg["train"]
        csv_log = CSVLogger(self.run_dir / "metrics.csv") if self.main else None
        tb = TensorBoardLogger(self.run_dir / "tb", enabled=train["tensorboard"] and self.main)
        if self.main:
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
            meta_path = self.run_dir / "meta.json"
            if not meta_path.exists():
                meta_path.write_text(json.dumps(run_metadata(cfg), indent=2))
            self._log(
                f"run dir {self.run_dir} | model {cfg['model']['name']} method "
                f"{cfg['model']['method']} task {self.task} | {len(self.train_set)} train / "
                f"{len(self.val_set)} val | world {self.world} | accumulate {self.accumulate}"
            )
            if self.start_epoch:
                self._log(f"resumed after epoch {self.start_epoch} (step {self.step})")
            elif self.restarted:
                self._log(f"no checkpoint yet in {self.run_dir}: starting from scratch")
        last_metrics: dict[str, Any] = self.history[-1] if self.history else {}
        for epoch in range(self.start_epoch, train["epochs"]):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            loss = self.train_one_epoch(epoch)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss}
            is_last = epoch + 1 == train["epochs"]
            if (epoch + 1) % train["eval_every"] == 0 or is_last:
                metrics = self.evaluate()
                row.update({k: v for k, v in metrics.items() if _is_scalar(v)})
                last_metrics = metrics
            row["seconds"] = time.perf_counter() - t0
            self.history.append(row)
            improved = self._is_better(row.get(self.metric_name))
            if improved:
                self.best = float(row[self.metric_name])
            if self.main:
                ckpt = self.checkpoint(epoch + 1)
                atomic_save(ckpt, self.run_dir / "last.pt")
                if improved:
                    atomic_save(ckpt, self.run_dir / "best.pt")
                if train["save_every"] and (epoch + 1) % train["save_every"] == 0:
                    atomic_save(ckpt, self.run_dir / f"epoch_{epoch + 1}.pt")
                assert csv_log is not None
                csv_log.write(row)
                tb.write(row, epoch + 1)
                shown = {k: v for k, v in row.items() if k != "epoch"}
                self._log(f"epoch {epoch + 1}/{train['epochs']} " + _fmt(shown))
            dist_utils.barrier()
        tb.close()
        return {
            "run_dir": str(self.run_dir), "best": self.best, "metrics": last_metrics,
            "rank": self.rank,
        }

    def _is_better(self, value: Any) -> bool:
        if value is None or not _is_scalar(value) or math.isnan(float(value)):
            return False
        if self.best is None:
            return True
        return value > self.best if self.metric_mode == "max" else value < self.best

    def _log(self, message: str) -> None:
        if self.main:
            log_line(self.run_dir / "log.txt", message, echo=not self.quiet)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _is_scalar(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(row: dict[str, Any]) -> str:
    parts = []
    for k, v in row.items():
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return " | ".join(parts)


def train(
    cfg: dict[str, Any],
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train from a resolved config; returns ``{"run_dir", "best", "metrics", "rank"}`` (the
    process's rank under torchrun, else 0).

    Raises :class:`FloatingPointError` ("loss became nan at epoch E step S ...") when the loss
    stops being finite; the checkpoints of the epochs before stay as they were.
    """
    trainer = Trainer(cfg, run_dir=run_dir, resume=resume, quiet=quiet)
    try:
        return trainer.fit()
    finally:
        dist_utils.cleanup()
