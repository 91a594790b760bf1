"""``bidense serve``: upload checks and answers of the API for a checkpoint and a ``.bdn``, the
legends, and the page driven in headless Chromium (``BIDENSE_SCREENSHOT=docs/img/serve.png``
saves its screenshot for the docs)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image

from bidense.cli import main as cli_main
from bidense.data import OBJECT_CLASSES, ROAD_CLASSES, render_scene
from bidense.engine.config import load_config
from bidense.engine.trainer import train
from bidense.serve import MAX_SIDE, MAX_UPLOAD_BYTES, Predictor, build_app, class_names
from bidense.serve.predictor import LEGENDS

REPO = Path(__file__).resolve().parents[1]
SRC = str(REPO / "src")
STATIC = REPO / "src" / "bidense" / "serve" / "static"
CHROMIUM = "/usr/bin/chromium"
#: what Chromium needs on a closed, screenless machine run as root (no sandbox, no GPU, none
#: of its background connections)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

TINY = [
    "name=tiny", "device=cpu", "model.name=upernet_convnext_micro", "model.method=bidense",
    "data.dataset=synthetic", "data.batch_size=4", "data.kwargs={size: [32, 32]}",
    "data.train_kwargs={num_images: 8}", "data.val_kwargs={num_images: 4}", "train.epochs=1",
    "train.lr=0.002", "train.progress=off",
]


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """Synthetic scenes in a temporary cache; one torch thread (the cores are shared)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIDENSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        torch.set_num_threads(1)
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("serve_run")
    train(load_config(overrides=TINY), run_dir=run_dir, quiet=True)
    return run_dir / "last.pt"


@pytest.fixture(scope="module")
def ckpt_url(checkpoint):
    """The app for the checkpoint, served by uvicorn in a thread on a free localhost port."""
    predictor = Predictor.load(checkpoint, threads=1, repeats=1)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(predictor), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()
    predictor.close()


@pytest.fixture(scope="module")
def bdn_url(checkpoint, tmp_path_factory):
    """``bidense export`` then ``bidense serve model.bdn --port 0`` in a subprocess."""
    bdn = tmp_path_factory.mktemp("serve_bdn") / "model.bdn"
    assert cli_main(["export", str(checkpoint), "-o", str(bdn)]) == 0
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bidense.cli", "serve", str(bdn), "--port", "0", "--threads", "1",
         "--repeats", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        proc.kill()
        pytest.fail(f"bidense serve did not start: {line}{proc.stdout.read()}")
    yield match.group(0)
    proc.terminate()
    proc.wait(timeout=30)


# -- the API ---------------------------------------------------------------------------------------
def test_page_and_its_files_are_local(ckpt_url):
    status, html = _get(ckpt_url + "/")
    assert status == 200 and b'src="/static/app.js"' in html
    for name in ("app.js", "style.css"):
        assert _get(f"{ckpt_url}/static/{name}")[0] == 200
    for path in STATIC.iterdir():  # no CDN: nothing on the page comes from the internet
        assert "//" not in re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M), path.name
    info = json.loads(_get(ckpt_url + "/api/info")[1])
    assert info["task"] == "seg" and info["pytorch"] is True and info["input_size"] == [32, 32]
    assert info["limits"] == {"max_mb": MAX_UPLOAD_BYTES // 2**20, "max_side": MAX_SIDE}


def test_samples_are_synthetic_scenes_at_the_input_size(ckpt_url):
    info = json.loads(_get(ckpt_url + "/api/info")[1])
    status, png = _get(f"{ckpt_url}/api/samples/{info['samples'][0]}")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (32, 32)
    assert _get(ckpt_url + "/api/samples/nothing-9")[0] == 404


def test_upload_png_gives_picture_legend_and_both_latencies(ckpt_url):
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    status, answer = _post(ckpt_url + "/api/predict", _png(image))
    assert status == 200, answer
    assert answer["picture"].startswith("data:image/png;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(answer["picture"][22:])))
    assert picture.size == (48, 40)  # back at the upload's size
    assert answer["image_size"] == [40, 48]
    entries = answer["legend"]["entries"]
    assert entries and {e["name"] for e in entries} <= set(OBJECT_CLASSES)
    assert sum(e["share"] for e in entries) == pytest.approx(1.0)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", e["color"]) for e in entries)
    assert answer["latency"]["runtime_ms"] > 0 and answer["latency"]["pytorch_ms"] > 0
    assert np.isfinite(answer["max_abs_diff"])


def _too_wide() -> bytes:
    return _png(np.zeros((2, MAX_SIDE + 1, 3), np.uint8))


@pytest.mark.parametrize("body, status, message", [
    (b"", 400, "no file uploaded"),
    (b"def not_an_image():\n    pass\n", 415, "not an image"),
    (b"GIF89a" + b"\0" * 64, 415, "not an image"),  # an image signature, truncated
    (b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "file too large"),
    (_too_wide(), 413, f"the limit is {MAX_SIDE} px a side"),
], ids=["empty", "text", "truncated", "over-10MB", "over-4096px"])
def test_bad_uploads_are_4xx_with_a_message(ckpt_url, body, status, message):
    got, answer = _post(ckpt_url + "/api/predict", body)
    assert got == status and message in answer["error"]
    assert "Traceback" not in answer["error"]


def test_bdn_server_from_the_cli_says_pytorch_is_unavailable(bdn_url):
    info = json.loads(_get(bdn_url + "/api/info")[1])
    # the size bidense export chose: the one the test's model was trained at
    assert info["pytorch"] is False and info["input_size"] == [32, 32]
    status, answer = _post(bdn_url + "/api/predict", _png(np.full((20, 30, 3), 99, np.uint8)))
    assert status == 200 and answer["latency"]["pytorch_ms"] is None
    assert answer["latency"]["runtime_ms"] > 0 and answer["max_abs_diff"] is None
    assert all(e["name"].startswith("class ") for e in answer["legend"]["entries"])


def test_serve_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path / "missing.bdn")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bidense: error:") and len(err.strip().splitlines()) == 1


def test_depth_checkpoint_is_drawn_beside_the_image_with_a_scale_in_metres(tmp_path):
    cfg = load_config(overrides=TINY + ["model.task=depth", "model.max_depth=20"])
    train(cfg, run_dir=tmp_path / "depth", quiet=True)
    predictor = Predictor.load(tmp_path / "depth" / "last.pt", threads=1, repeats=1)
    try:
        result = predictor.predict(np.full((40, 50, 3), 90, np.uint8))
    finally:
        predictor.close()
    assert result.picture.shape == (40, 100, 3)  # the input, then its coloured depth
    ticks = [t["value"] for t in result.legend["ticks"]]
    assert result.legend["unit"] == "m" and 0 < ticks[0] <= ticks[-1] <= 20


# -- legends and class names -----------------------------------------------------------------------
def test_depth_legend_is_a_scale_bar_in_metres():
    depth = np.array([[2.0, 4.0], [8.0, 0.0]], np.float32)  # 0 = invalid
    legend = LEGENDS["depth"](depth, [], np.zeros((1, 3), np.uint8))
    assert legend["unit"] == "m" and len(legend["stops"]) > 2
    values = [t["value"] for t in legend["ticks"]]
    assert values[0] == 2.0 and values[-1] == 8.0
    assert [t["position"] for t in legend["ticks"]] == pytest.approx(np.linspace(0, 1, 5))
    # inverse depth: the near end of the bar is turbo(1) (dark red), the far end turbo(0)
    assert legend["stops"][0] != legend["stops"][-1]


def test_probability_and_label_legends():
    prob = LEGENDS["probability"](np.zeros((2, 2), np.float32), [], np.zeros((1, 3), np.uint8))
    assert [t["value"] for t in prob["ticks"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    labels = LEGENDS["labels"](np.array([[2, 2, 2, 0]]), ["a", "b", "c"], palette)
    assert [(e["name"], e["color"], e["share"]) for e in labels["entries"]] == [
        ("c", "#0000ff", 0.75), ("a", "#ff0000", 0.25)]


def test_class_names_come_from_the_dataset():
    cfg = load_config(overrides=TINY)
    assert class_names(cfg, 7) == list(OBJECT_CLASSES)
    road = load_config(overrides=TINY + ["data.kwargs={size: [32, 32], scene: road}"])
    assert class_names(road, 7) == list(ROAD_CLASSES)
    assert class_names(cfg, 3) == ["class 0", "class 1", "class 2"]  # names that do not fit


# -- the page in headless Chromium -----------------------------------------------------------------
def _browser_or_reason() -> str | None:
    if not Path(CHROMIUM).is_file():
        return (f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package; "
                "never `playwright install`)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is missing: pip install playwright (its browser is not needed)"
    return None


def test_page_in_headless_chromium_uploads_and_shows_result_and_latency(ckpt_url, tmp_path):
    reason = _browser_or_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs Chromium and Playwright in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    upload = tmp_path / "scene.png"
    upload.write_bytes(_png(render_scene(np.random.default_rng(3), (96, 128))["image"]))
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    too_large = tmp_path / "huge.png"
    too_large.write_bytes(b"\0" * (MAX_UPLOAD_BYTES + 1))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 660})
            page.goto(ckpt_url + "/")
            page.wait_for_selector("#samples button img")
            page.set_input_files("#file", str(upload))
            page.wait_for_selector("#latency:not([hidden])", timeout=60_000)
            assert page.get_attribute("#result", "src").startswith("data:image/png;base64,")
            assert page.evaluate("document.getElementById('result').naturalWidth") == 128
            assert re.fullmatch(r"[\d.]+ ms \(1 thread\)", page.inner_text("#runtime-ms"))
            assert re.fullmatch(r"[\d.]+ ms", page.inner_text("#pytorch-ms"))
            legend = page.inner_text("#legend")
            assert any(name in legend for name in OBJECT_CLASSES)
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
            if os.environ.get("BIDENSE_SCREENSHOT"):
                shutil.copyfile(tmp_path / "serve.png", os.environ["BIDENSE_SCREENSHOT"])

            page.set_input_files("#file", str(not_image))
            page.wait_for_selector("#error:not([hidden])", timeout=60_000)
            assert "not an image" in page.inner_text("#error")
            page.set_input_files("#file", str(too_large))
            page.wait_for_function(
                "document.getElementById('error').textContent.includes('file too large')",
                timeout=60_000)
        finally:
            browser.close()
