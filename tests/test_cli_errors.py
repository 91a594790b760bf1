"""One error style (issue 12): every sub-command maps bad input to one ``bidense: error:`` line
on stderr and a non-zero exit code; ``bidense export`` uses the trained size and ``--verify``
can fail (items 5 and 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bidense.export
from bidense.cli import main
from bidense.engine.builders import build_model
from bidense.engine.checkpoint import FORMAT, VERSION, tensor_checksum
from bidense.engine.config import dump_config, load_config
from bidense.runtime import Runtime

TINY = ["name=tiny", "device=cpu", "model.name=upernet_resnet18", "model.method=bidense",
        "data.dataset=synthetic", "data.kwargs={size: [32, 32]}",
        "data.train_kwargs={num_images: 4}", "data.val_kwargs={num_images: 2}",
        "train.epochs=1", "train.progress=off"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of an untrained tiny model (trained size 32x32), an image, a text file and a
    regular file to put "folders" under (an unwritable output)."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    cfg = load_config(overrides=TINY)
    model = build_model(cfg, 7)
    ckpt = {"format": FORMAT, "version": VERSION, "model": model.state_dict(),
            "config": dump_config(cfg), "num_classes": 7}
    ckpt["checksum"] = tensor_checksum(ckpt)
    torch.save(ckpt, root / "tiny.pt")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "img.png")
    (root / "notes.txt").write_text("not a model\n")
    (root / "blocker").write_text("a file, not a folder\n")
    return {"ckpt": root / "tiny.pt", "image": root / "img.png", "text": root / "notes.txt",
            "under_file": root / "blocker" / "sub", "root": root}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIDENSE_CACHE", str(tmp_path / "cache"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bidense: error: "), err
    return lines[0]


def _cases(f: dict[str, Path]) -> dict[str, list[str]]:
    ck, img, txt, under = (str(f[k]) for k in ("ckpt", "image", "text", "under_file"))
    missing = str(f["root"] / "missing.pt")
    return {
        "train-missing-config": ["train", str(f["root"] / "missing.yaml")],
        "train-bad-value": ["train", "synthetic_seg_bidense", "train.lr=abc"],
        "train-unwritable": ["train", "synthetic_seg_bidense", *TINY[1:], "--run-dir", under],
        "eval-missing": ["eval", missing],
        "eval-wrong-type": ["eval", txt],
        "eval-bad-value": ["eval", ck, "data.batch_size=many"],
        "predict-missing": ["predict", missing, img],
        "predict-wrong-type": ["predict", img, img],
        "predict-missing-image": ["predict", ck, str(f["root"] / "nope.png")],
        "predict-not-an-image": ["predict", ck, txt, "-o", str(f["root"] / "p1")],
        "predict-bad-size": ["predict", ck, img, "--size", "big", "-o", str(f["root"] / "p2")],
        "predict-unwritable": ["predict", ck, img, "-o", under],
        "summary-unknown-model": ["summary", "no_such_model"],
        "summary-bad-input": ["summary", "upernet_resnet18", "--input", "1x3xbig"],
        "export-missing": ["export", missing, "-o", str(f["root"] / "m.bdn")],
        "export-wrong-type": ["export", txt, "-o", str(f["root"] / "m.bdn")],
        "export-bad-shape": ["export", ck, "-o", str(f["root"] / "m.bdn"), "--input-shape", "3x"],
        "export-unwritable": ["export", ck, "-o", str(Path(under) / "m.bdn")],
        "benchmark-bad-threads": ["benchmark", "--threads", "two", "--repeats", "1"],
        "benchmark-unwritable": ["benchmark", "--repeats", "1", "--json",
                                 str(Path(under) / "b.json")],
        "datasets-unknown": ["datasets", "check", "no_such_dataset", str(f["root"])],
        "datasets-missing-root": ["datasets", "check", "folder", str(f["root"] / "nope")],
        "demo-unwritable": ["demo", "--quick", "-o", under],
        "serve-missing": ["serve", missing],
        "serve-wrong-type": ["serve", txt],
    }


CASES = list(_cases({k: Path("/x") for k in ("ckpt", "image", "text", "under_file", "root")}))


@pytest.mark.parametrize("case", CASES)
def test_each_command_fails_in_one_line(files, case, capsys):
    code = main(_cases(files)[case])
    assert code != 0
    _one_error_line(capsys)


def test_predict_refuses_non_finite_float_images(files, tmp_path, capsys):
    values = np.full((32, 32), 100.0, np.float32)
    values[0, :3] = [np.nan, np.inf, -np.inf]
    tif = tmp_path / "nan.tif"
    Image.fromarray(values, mode="F").save(tif)
    assert main(["predict", str(files["ckpt"]), str(tif), "-o", str(tmp_path / "p")]) == 2
    line = _one_error_line(capsys)
    assert "3 non-finite values" in line and str(tif) in line
    out = tmp_path / "masked"
    assert main(["predict", str(files["ckpt"]), str(tif), "-o", str(out), "--nonfinite",
                 "mask"]) == 0
    assert (out / "nan_vis.png").is_file()


# -- export: the trained size, --input-shape, --verify that can fail -------------------------------
def test_export_uses_the_trained_size_and_prints_it(files, tmp_path, capsys):
    out = tmp_path / "m.bdn"
    assert main(["export", str(files["ckpt"]), "-o", str(out)]) == 0
    assert "input shape: 1x3x32x32 (from data.kwargs.size)" in capsys.readouterr().out
    assert Runtime(out).input_shape == (1, 3, 32, 32)


@pytest.mark.parametrize(("text", "shape"), [("48x40", (1, 3, 48, 40)),
                                             ("2x3x32x32", (2, 3, 32, 32))])
def test_export_input_shape_option(files, tmp_path, capsys, text, shape):
    out = tmp_path / "m.bdn"
    assert main(["export", str(files["ckpt"]), "-o", str(out), "--input-shape", text]) == 0
    assert f"input shape: {'x'.join(map(str, shape))} (from --input-shape)" in \
        capsys.readouterr().out
    assert Runtime(out).input_shape == shape


def test_export_verify_fails_when_the_report_is_not_ok(files, tmp_path, capsys, monkeypatch):
    real = bidense.export.verify

    def strict(model, path, x):  # tolerances no runtime meets: the report cannot be ok
        return real(model, path, x, tolerance=-1.0, max_flips=-1, min_agreement=2.0)

    monkeypatch.setattr(bidense.export, "verify", strict)
    out = tmp_path / "m.bdn"
    assert main(["export", str(files["ckpt"]), "-o", str(out), "--verify"]) == 2
    line = _one_error_line(capsys)
    assert "verify FAILED" in line and "max relative error" in line and str(out) in line


def test_export_verify_passes_on_an_exact_export(files, tmp_path, capsys):
    out = tmp_path / "m.bdn"
    assert main(["export", str(files["ckpt"]), "-o", str(out), "--verify"]) == 0
    assert "verify ok" in capsys.readouterr().out


# -- export --format onnx ----------------------------------------------------------------------
def test_export_onnx_runs_in_onnxruntime_and_verifies(files, tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    assert main(["export", str(files["ckpt"]), "--format", "onnx", "-o", str(out),
                 "--verify"]) == 0
    text = capsys.readouterr().out
    assert "input shape: 1x3x32x32 (from data.kwargs.size)" in text
    assert "verify (onnxruntime vs PyTorch): " in text
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert y.shape == (1, 7, 32, 32) and np.isfinite(y).all()


def test_export_onnx_verify_fails_above_the_tolerance(files, tmp_path, capsys, monkeypatch):
    import bidense.cli

    monkeypatch.setattr(bidense.cli, "ONNX_VERIFY_TOLERANCE", -1.0)  # no export meets it
    out = tmp_path / "m.onnx"
    assert main(["export", str(files["ckpt"]), "--format", "onnx", "-o", str(out),
                 "--verify"]) == 2
    line = _one_error_line(capsys)
    assert "onnxruntime differs from PyTorch" in line and "max_rel_error" in line
