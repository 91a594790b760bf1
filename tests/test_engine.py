"""Engine: configs, checkpoints, a tiny run end to end, eval/predict, CLI errors, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bidense.cli import main as cli_main
from bidense.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from bidense.engine.config import ConfigError, load_config
from bidense.engine.trainer import train

SRC = str(Path(__file__).resolve().parents[1] / "src")

TINY = [
    "name=tiny",
    "device=cpu",
    "model.name=upernet_convnext_micro",
    "model.method=bidense",
    "data.dataset=synthetic",
    "data.batch_size=4",
    "data.kwargs={size: [32, 32]}",
    "data.train_kwargs={num_images: 12}",
    "data.val_kwargs={num_images: 6}",
    "train.epochs=2",
    "train.lr=0.002",
    "train.progress=off",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BIDENSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- config ------------------------------------------------------------------------------------
def test_config_layers_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "model: {name: upernet_resnet18}\ntrain: {lr: 0.5}\n")
    child = _write(tmp_path / "child.yaml", "_base_: base.yaml\ntrain: {epochs: 3}\n")
    cfg = load_config(child, ["train.lr=1e-3", "data.crop_size=[8, 16]", "model.num_classes=4"])
    assert cfg["model"]["name"] == "upernet_resnet18"
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["lr"] == pytest.approx(1e-3)
    assert cfg["data"]["crop_size"] == [8, 16] and cfg["model"]["num_classes"] == 4
    assert load_config(overrides=["train.lr=2e-4"])["train"]["lr"] == pytest.approx(2e-4)
    assert cfg["train"]["weight_decay"] == 0.01  # untouched default


def test_unknown_keys_are_errors_naming_the_key(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.epoch'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown config key 'model.nmae'"):
        load_config(overrides=["model.nmae=x"])
    with pytest.raises(ConfigError, match="model.task must be one of"):
        load_config(overrides=["model.task=flow"])
    with pytest.raises(ConfigError, match="must look like"):
        load_config(overrides=["train.lr"])
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path / "broken.yaml", "train: [1,\n"))


def test_every_shipped_config_loads():
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        load_config(path)


# -- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_errors(tmp_path):
    good = {"format": "bidense-checkpoint", "version": 1, "model": {}, "config": "{}"}
    atomic_save(good, tmp_path / "good.pt")
    assert load_checkpoint(tmp_path / "good.pt")["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["good.pt"]  # no temp file left behind

    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt: not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    raw = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: not a bidense checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    atomic_save({**good, "version": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer than this bidense"):
        load_checkpoint(tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


# -- a tiny run end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    os.environ["BIDENSE_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    run_dir = tmp_path_factory.mktemp("run")
    result = train(load_config(overrides=TINY), run_dir=run_dir, quiet=True)
    return run_dir, result


def test_run_directory_contents(tiny_run):
    run_dir, result = tiny_run
    for name in ("last.pt", "best.pt", "config.yaml", "meta.json", "metrics.csv", "log.txt"):
        assert (run_dir / name).is_file(), name
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["seed"] == 1 and "torch" in meta and "git_sha" in meta
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 3
    # the safe loader reads the checkpoint as it is
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng"}
    assert 0.0 <= result["metrics"]["mIoU"] <= 1.0


def test_eval_reproduces_the_training_metric(tiny_run, capsys):
    run_dir, result = tiny_run
    assert cli_main(["eval", str(run_dir / "last.pt"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["mIoU"] == pytest.approx(result["metrics"]["mIoU"], abs=1e-12)


def test_predict_writes_pictures_and_raw_output(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (tmp_path / "list.txt").write_text("imgs/0.png\n")
    out = tmp_path / "out"
    assert cli_main(["predict", str(run_dir / "last.pt"), str(images), "-o", str(out)]) == 0
    label = np.asarray(Image.open(out / "0_label.png"))
    assert label.shape == (40, 48) and label.max() < 7
    assert np.asarray(Image.open(out / "1_vis.png")).shape == (40, 48, 3)
    index = json.loads((out / "predictions.json").read_text())
    assert index["task"] == "seg" and len(index["items"]) == 2
    out2 = tmp_path / "out2"
    assert cli_main(["predict", str(run_dir / "last.pt"), str(tmp_path / "list.txt"), "-o",
                     str(out2)]) == 0
    assert (out2 / "0_vis.png").is_file() and not (out2 / "1_vis.png").exists()
    out3 = tmp_path / "out3"
    assert cli_main(["predict", str(run_dir / "last.pt"), str(images / "1*.png"), "-o",
                     str(out3)]) == 0
    assert (out3 / "1_vis.png").is_file() and not (out3 / "0_vis.png").exists()
    missing_out = tmp_path / "never"
    assert cli_main(["predict", str(run_dir / "last.pt"), str(images / "nothing*.png"), "-o",
                     str(missing_out)]) == 2
    assert not missing_out.exists()  # nothing written for a failed call


def test_depth_training_and_prediction(tmp_path):
    cfg = load_config(overrides=TINY + ["model.task=depth", "model.max_depth=20", "train.epochs=1",
                                        "eval.min_depth=0.1"])
    result = train(cfg, run_dir=tmp_path / "run", quiet=True)
    assert {"d1", "abs_rel", "rmse", "silog"} <= set(result["metrics"])
    img = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(img)
    assert cli_main(["predict", str(tmp_path / "run" / "last.pt"), str(img), "-o",
                     str(tmp_path / "p")]) == 0
    depth = np.load(tmp_path / "p" / "x_depth.npy")
    png = np.asarray(Image.open(tmp_path / "p" / "x_depth.png"))
    assert depth.shape == (32, 32) and (depth > 0).all() and (depth <= 20).all()
    np.testing.assert_allclose(png / 256.0, depth, atol=1 / 256)


# -- CLI errors ------------------------------------------------------------------------------------
def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path, capsys):
    bad = _write(tmp_path / "bad.yaml", "trian: {epochs: 1}\n")
    assert cli_main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"bidense: error: {bad.resolve()}: unknown config key 'trian'"
    assert cli_main(["eval", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    blocker = _write(tmp_path / "file", "x")
    cfg = _write(tmp_path / "ok.yaml", "train: {epochs: 1}\n")
    assert cli_main(["train", str(cfg), "--run-dir", str(blocker / "sub")] + TINY) == 2
    assert "run directory is not writable" in capsys.readouterr().err
    assert cli_main(["summary", "upernet_convnext_micro", "--input", "3x32"]) == 2
    assert "must be four positive sizes" in capsys.readouterr().err


def test_cli_help_for_every_command():
    for cmd in ("train", "eval", "predict", "summary", "demo", "export", "benchmark"):
        with pytest.raises(SystemExit) as exc:
            cli_main([cmd, "--help"])
        assert exc.value.code == 0


def test_resume_refuses_a_changed_schedule(tiny_run, capsys):
    run_dir, _ = tiny_run
    cfg = load_config(overrides=TINY + ["train.epochs=5"])
    with pytest.raises(CheckpointError, match="cannot resume with train.epochs=5"):
        train(cfg, resume=run_dir, quiet=True)


# -- kill -9 and resume ----------------------------------------------------------------------
def _cli(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bidense.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _epoch_of(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - the file may be mid-rename; try again
        return -1


@pytest.mark.parametrize("kill_after_epoch", [0, 1])
def test_kill_9_then_resume_ends_where_an_uninterrupted_run_does(tmp_path, kill_after_epoch):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    args = TINY + ["train.epochs=3", "data.train_kwargs={num_images: 48}"]
    cfg = _write(tmp_path / "c.yaml", "name: kill\n")

    ref = _cli(["train", str(cfg), *args, "--run-dir", str(tmp_path / "ref")], env)
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    victim = _cli(["train", str(cfg), *args, "--run-dir", str(tmp_path / "cut")], env)
    last = tmp_path / "cut" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline:
        if kill_after_epoch == 0 and (tmp_path / "cut" / "log.txt").exists():
            break
        if kill_after_epoch and last.exists() and _epoch_of(last) >= kill_after_epoch:
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = _epoch_of(last) if last.exists() else 0
    assert killed_at < 3, "the run finished before it could be killed; make epochs longer"

    resumed = _cli(["train", str(cfg), *args, "--resume", str(tmp_path / "cut")], env)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert b["epoch"] == 3
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["history"][-1]["mIoU"] == b["history"][-1]["mIoU"]


@pytest.mark.parametrize("task", ["seg", "road", "saliency"])
def test_ding_family_trains_from_the_cli_on_each_task(task, tmp_path):
    preset = f"synthetic_{task}_ding"
    args = ["train", preset, "train.epochs=1", "data.kwargs={size: [32, 32]}",
            "data.train_kwargs={num_images: 8}", "data.val_kwargs={num_images: 4}",
            "data.batch_size=4", "--run-dir", str(tmp_path / "run"), "--quiet"]
    if task == "road":
        args.append("data.kwargs={size: [32, 32], scene: road}")
    assert cli_main(args) == 0
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "method: ding" in ckpt["config"] and f"task: {task}" in ckpt["config"]
    headline = "mIoU" if task == "seg" else "max_f"
    assert 0.0 <= ckpt["history"][-1][headline] <= 1.0


def test_distillation_from_a_teacher_checkpoint_changes_the_loss(tiny_run, tmp_path):
    teacher_dir, _ = tiny_run
    base = TINY + ["train.epochs=1", "model.method=reactnet"]
    plain = train(load_config(overrides=base), run_dir=tmp_path / "plain", quiet=True)
    kd_cfg = load_config(overrides=base + [f"train.distill.teacher={teacher_dir / 'last.pt'}",
                                           "train.distill.weight=5.0"])
    distilled = train(kd_cfg, run_dir=tmp_path / "kd", quiet=True)
    loss = [torch.load(Path(r["run_dir"]) / "last.pt", weights_only=True)["history"][0]
            ["train_loss"] for r in (plain, distilled)]
    assert loss[1] > loss[0]  # the same seed and data: only the added KL term differs
    with pytest.raises(ConfigError, match="distillation is defined for"):
        load_config(overrides=base + ["model.task=depth", "train.distill.teacher=x.pt"])


def test_too_little_disk_space_is_reported_before_training(tmp_path, monkeypatch):
    from bidense.engine import checkpoint

    class Tiny:
        f_bavail, f_frsize = 10, 4096  # 40 KiB free

    monkeypatch.setattr(checkpoint.os, "statvfs", lambda _: Tiny)
    with pytest.raises(CheckpointError, match=r"only 0.0 MiB free, checkpoints need about"):
        train(load_config(overrides=TINY), run_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "last.pt").exists()
