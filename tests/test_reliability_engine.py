"""Engine and CLI reliability (issue 12): one-line errors, honest checkpoints, and the main job
and the training loop under test (demo, learning, accumulation, best.pt, NaN loss, benchmark)."""

from __future__ import annotations

import contextlib
import errno
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bidense.engine.distributed as dist_utils
from bidense.cli import main as cli_main
from bidense.data import OBJECT_CLASSES
from bidense.engine import checkpoint, trainer
from bidense.engine.builders import build_model
from bidense.engine.checkpoint import CheckpointError, load_checkpoint
from bidense.engine.config import load_config
from helpers import TINY_SEG


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("BIDENSE_CACHE", str(cache))
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache) -> Path:
    """A finished one-epoch run (last.pt, best.pt) shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIDENSE_CACHE", str(cache))
        trainer.train(load_config(overrides=TINY_SEG), run_dir=run_dir, quiet=True)
    return run_dir


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bidense: error: "), captured.err
    return lines[0]


# -- 1. config values of the wrong type -----------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=abc", "train.lr='abc': expected a number"),
        ("seed=x", "seed='x': expected an integer"),
        ("train.betas=1", "train.betas=1: expected a list of 2 numbers"),
        ("data.kwargs.size=[32]", "data.kwargs.size=[32]: the synthetic dataset expects a list"),
        ("data.crop_size=[8]", "data.crop_size=[8]: expected a list of 2 integers"),
    ],
)
def test_wrong_config_types_are_one_line_naming_key_value_and_type(
    override, expected, tmp_path, capsys
):
    code = cli_main(["train", "synthetic_seg_bidense", *TINY_SEG, override,
                     "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert expected in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_yaml_on_off_switches_stay_strings():
    cfg = load_config(overrides=["train.progress=off", "train.amp=off"])
    assert cfg["train"]["progress"] == "off" and cfg["train"]["amp"] == "off"


# -- 2. unwritable output --------------------------------------------------------------------------
@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(path)
    return path


def test_predict_into_an_unwritable_folder_is_one_line(tiny_run, image, tmp_path, capsys):
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    code = cli_main(["predict", str(tiny_run / "last.pt"), str(image), "-o",
                     str(blocker / "pred")])
    assert code == 2
    assert f"{blocker / 'pred'}: " in _one_error_line(capsys)


def test_predict_into_a_read_only_folder_is_one_line(tiny_run, image, tmp_path, capsys,
                                                     monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):  # what a non-root user gets (root may write anyway)
        if self.parent == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    code = cli_main(["predict", str(tiny_run / "last.pt"), str(image), "-o", str(ro / "pred")])
    ro.chmod(0o755)
    assert code == 2
    assert _one_error_line(capsys).endswith(f"{ro / 'pred'}: cannot write (Permission denied)")


def test_predict_on_a_full_disk_names_the_file(tiny_run, image, tmp_path, capsys, monkeypatch):
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    code = cli_main(["predict", str(tiny_run / "last.pt"), str(image), "-o", str(tmp_path / "p")])
    assert code == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "p" / "img_label.png") in line and "No space left" in line


# -- 3. disk full while writing a checkpoint; the free-space check --------------------------------
def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, capsys,
                                                                    monkeypatch):
    real_open = checkpoint.atomic_open
    writes = []

    @contextlib.contextmanager
    def filling_disk(path, mode="wb"):
        writes.append(Path(path).name)
        with real_open(path, mode) as fh:
            if len(writes) <= 2:  # epoch 1: last.pt and best.pt fit
                yield fh
                return

            class Full:
                def write(self, data):
                    if fh.tell() > 1000:
                        raise OSError(errno.ENOSPC, "No space left on device")
                    return fh.write(data)

                def flush(self):
                    fh.flush()

            yield Full()

    monkeypatch.setattr(checkpoint, "atomic_open", filling_disk)
    run = tmp_path / "run"
    overrides = [*TINY_SEG, "train.epochs=2", "train.scheduler=constant"]
    code = cli_main(["train", "synthetic_seg_bidense", *overrides, "--run-dir", str(run)])
    assert code == 2
    line = _one_error_line(capsys)
    assert f"{run / 'last.pt'}: cannot write checkpoint (No space left on device)" in line
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # the previous checkpoint is intact
    assert not list(run.glob(".*.tmp"))


def test_free_space_check_counts_the_temp_copy_of_an_atomic_write(tmp_path, monkeypatch):
    cfg = load_config(overrides=TINY_SEG)
    model = build_model(cfg, len(OBJECT_CLASSES))
    one_checkpoint = 3 * sum(p.numel() * p.element_size() for p in model.parameters())

    class Disk:  # room for last.pt and best.pt, not for the temp copy of the next last.pt
        f_frsize = 1
        f_bavail = int(2.5 * one_checkpoint)

    monkeypatch.setattr(checkpoint.os, "statvfs", lambda _: Disk)
    with pytest.raises(CheckpointError, match="checkpoints need about"):
        trainer.train(cfg, run_dir=tmp_path / "run", quiet=True)


# -- 4. the final line once under torchrun ---------------------------------------------------------
def test_only_rank_0_prints_the_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dist_utils, "rank", lambda: 1)
    monkeypatch.setattr(dist_utils, "world_size", lambda: 2)
    assert cli_main(["train", "synthetic_seg_bidense", *TINY_SEG, "--quiet",
                     "--run-dir", str(tmp_path / "run")]) == 0
    assert "run directory" not in capsys.readouterr().out


# -- 5. temp files of an interrupted write ---------------------------------------------------------
def test_resume_removes_orphaned_temp_files_only(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    orphans = [run / ".last.pt.ab3_x9z1.tmp", run / ".best.pt.00000000.tmp"]
    others = [run / "notes.tmp", run / ".last.pt.tmp", run / "last.pt.ab3_x9z1.tmp"]
    for path in orphans + others:
        path.write_bytes(b"half")
    trainer.train(load_config(overrides=TINY_SEG), resume=run, quiet=True)
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in others)


# -- 6. a packed model where a checkpoint belongs --------------------------------------------------
def test_eval_of_a_packed_model_says_what_it_is(tmp_path, capsys):
    bdn = tmp_path / "model.bdn"
    bdn.write_bytes(b"BIDENSE\x00" + bytes(64))
    assert cli_main(["eval", str(bdn)]) == 2
    line = _one_error_line(capsys)
    assert f"{bdn} is a packed model for the runtime (bidense.runtime.Runtime)" in line
    assert "training checkpoint (.pt)" in line and "corrupt" not in line


# -- 7. checksum of the saved tensors --------------------------------------------------------------
def _flip_a_tensor_byte(src: Path, dst: Path) -> None:
    """Flip a byte in the middle of the largest tensor storage record of a torch zip file."""
    with zipfile.ZipFile(src) as zf:
        record = max((i for i in zf.infolist() if "/data/" in i.filename),
                     key=lambda i: i.file_size)
    raw = bytearray(src.read_bytes())
    # local header: 30 bytes + name + extra; the record is stored uncompressed
    name_len = int.from_bytes(raw[record.header_offset + 26:record.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[record.header_offset + 28:record.header_offset + 30], "little")
    start = record.header_offset + 30 + name_len + extra_len
    raw[start + record.file_size // 2] ^= 0x40
    dst.write_bytes(bytes(raw))


def test_flipped_tensor_bytes_are_refused_and_old_checkpoints_still_load(tiny_run, tmp_path):
    flipped = tmp_path / "flipped.pt"
    _flip_a_tensor_byte(tiny_run / "last.pt", flipped)
    torch.load(flipped, weights_only=True)  # still unpickles: only the checksum can tell
    with pytest.raises(CheckpointError, match=r"flipped.pt: checksum mismatch"):
        load_checkpoint(flipped)
    assert cli_main(["eval", str(flipped)]) == 2

    legacy = torch.load(tiny_run / "last.pt", weights_only=True)
    del legacy["checksum"]  # written before checkpoints carried one
    checkpoint.atomic_save(legacy, tmp_path / "legacy.pt")
    assert load_checkpoint(tmp_path / "legacy.pt")["epoch"] == 1


# -- 9. the main job and the loop ------------------------------------------------------------------
def test_demo_quick_writes_its_report(tmp_path, capsys):
    assert cli_main(["demo", "--quick", "-o", str(tmp_path / "demo")]) == 0
    report = tmp_path / "demo" / "report.md"
    assert report.is_file() and "| bidense |" in report.read_text()
    assert (tmp_path / "demo" / "predictions.png").is_file()


def test_training_learns_beyond_the_majority_class(tmp_path):
    overrides = [*TINY_SEG, "model.method=fp32", "data.batch_size=8", "train.epochs=6",
                 "train.lr=0.005", "data.train_kwargs={num_images: 32}",
                 "data.val_kwargs={num_images: 8}", "train.scheduler=constant"]
    cfg = load_config(overrides=overrides)
    result = trainer.train(cfg, run_dir=tmp_path / "run", quiet=True)
    history = load_checkpoint(tmp_path / "run" / "last.pt")["history"]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    val = trainer.build_datasets(cfg)[1]
    labels = np.concatenate([np.asarray(val[i]["target"]).ravel() for i in range(len(val))])
    majority = np.bincount(labels[labels >= 0]).max() / (labels >= 0).sum()
    assert result["metrics"]["pixAcc"] > majority + 0.1


def test_gradient_accumulation_equals_the_large_batch(tmp_path, monkeypatch):
    grads = []

    def record(self):
        grads.append([p.grad.clone() for p in self.model.parameters() if p.grad is not None])
        raise StopIteration  # one update is enough

    monkeypatch.setattr(trainer.Trainer, "_update", record)
    # a model without batch statistics, so two half batches see what one full batch sees
    monkeypatch.setattr(trainer, "build_model",
                        lambda cfg, n: torch.nn.Conv2d(3, n, 3, padding=1))
    base = [*TINY_SEG, "train.scheduler=constant"]
    for extra in (["data.batch_size=8"], ["data.batch_size=4", "train.effective_batch_size=8"]):
        t = trainer.Trainer(load_config(overrides=base + extra), run_dir=tmp_path / extra[-1],
                            quiet=True)
        assert t.accumulate == (1 if len(extra) == 1 else 2)
        with pytest.raises(StopIteration):
            t.train_one_epoch(0)
    for big, accumulated in zip(*grads, strict=True):
        torch.testing.assert_close(accumulated, big, rtol=1e-5, atol=1e-7)


def test_best_checkpoint_follows_the_headline_metric(tmp_path, monkeypatch):
    scores = iter([0.2, 0.5, 0.3])
    monkeypatch.setattr(trainer.Trainer, "evaluate", lambda self: {"mIoU": next(scores)})
    run = tmp_path / "run"
    result = trainer.train(load_config(overrides=[*TINY_SEG, "train.epochs=3"]), run_dir=run,
                           quiet=True)
    assert result["best"] == 0.5
    assert load_checkpoint(run / "best.pt")["epoch"] == 2
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


def test_nan_loss_is_the_documented_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer, "build_loss_fn",
                        lambda cfg, n: lambda out, target: out.sum() * float("nan"))
    code = cli_main(["train", "synthetic_seg_bidense", *TINY_SEG, "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert "loss became nan at epoch 1 step 0" in _one_error_line(capsys)
    assert not (tmp_path / "r" / "last.pt").exists()


def test_benchmark_layers_from_the_cli(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["benchmark", "--what", "layers", "--repeats", "1", "--threads", "1",
                     "--json", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
