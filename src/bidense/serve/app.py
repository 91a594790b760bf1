"""The web app of ``bidense serve``: one static page and a small JSON API (FastAPI + uvicorn).

=========================  ======  ===========================================================
route                      method  answer
=========================  ======  ===========================================================
``/``                      GET     the page (``static/index.html``; its script and style sheet
                                   under ``/static``: nothing comes from the internet)
``/api/info``              GET     model, task, input size, engines, sample names
``/api/samples/{name}``    GET     a built-in synthetic sample as PNG
``/api/predict``           POST    the image file as the request body -> picture (PNG data
                                   URL), legend and latencies
=========================  ======  ===========================================================

An upload that is not an image, larger than :data:`MAX_UPLOAD_BYTES` or wider or taller than
:data:`MAX_SIDE` pixels is refused with a 4xx status and ``{"error": message}``; any other
failure answers 500 with a one-line message, never a traceback.
"""

from __future__ import annotations

import base64
import io
import socket
import warnings
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .predictor import Predictor, png_bytes

__all__ = ["MAX_SIDE", "MAX_UPLOAD_BYTES", "UploadError", "build_app", "read_image", "serve"]

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096
#: how much of an oversized upload is read (and dropped) before the connection is closed
_DRAIN_BYTES = 16 * MAX_UPLOAD_BYTES


class UploadError(Exception):
    """An upload the page refuses: ``status`` (4xx) and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _too_large(nbytes: int) -> UploadError:
    more = "more than " if nbytes > _DRAIN_BYTES else ""
    return UploadError(413, f"file too large: {more}{nbytes / 2**20:.1f} MB; the limit is "
                            f"{MAX_UPLOAD_BYTES // 2**20} MB")


def read_image(data: bytes) -> np.ndarray:
    """An uploaded file -> (H, W, 3) uint8 RGB, or :class:`UploadError` saying why not.

    The size on disk and the pixel size (read from the header, before decoding) are checked
    first, so an oversized image is never decoded.
    """
    if not data:
        raise UploadError(400, "no file uploaded: choose an image (PNG, JPEG, ...)")
    if len(data) > MAX_UPLOAD_BYTES:
        raise _too_large(len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if max(w, h) > MAX_SIDE:
                raise UploadError(413, f"image too large: {w}x{h} px; the limit is {MAX_SIDE} "
                                       "px a side")
            return np.asarray(im.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"image too large; the limit is {MAX_SIDE} px a side") from None
    except (OSError, ValueError, SyntaxError, EOFError):  # what PIL raises for broken files
        raise UploadError(415, "not an image: the file could not be read as PNG, JPEG, BMP, "
                               "TIFF or WebP") from None


async def _read_body(request: Request) -> bytes:
    """The request body; over :data:`MAX_UPLOAD_BYTES` it is read to its end (up to
    :data:`_DRAIN_BYTES`) but not kept, then refused, so the browser receives the answer instead
    of a connection reset mid-upload."""
    body = bytearray()
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= MAX_UPLOAD_BYTES:
            body += chunk
        elif received > _DRAIN_BYTES:
            break
    if received > MAX_UPLOAD_BYTES:
        raise _too_large(received)
    return bytes(body)


def _data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def build_app(predictor: Predictor) -> FastAPI:
    """The FastAPI app serving ``predictor`` (routes in the module docstring)."""
    app = FastAPI(title="bidense serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return JSONResponse({"error": f"prediction failed: {type(exc).__name__}: {message}"},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    async def info() -> dict:
        limits = {"max_mb": MAX_UPLOAD_BYTES // 2**20, "max_side": MAX_SIDE}
        return {**predictor.info(), "limits": limits}

    @app.get("/api/samples/{name}")
    async def sample(name: str) -> Response:
        try:
            png = await run_in_threadpool(predictor.sample_png, name)
        except KeyError:
            return JSONResponse({"error": f"no sample {name!r}"}, status_code=404)
        return Response(png, media_type="image/png")

    @app.post("/api/predict")
    async def predict(request: Request) -> dict:
        image = read_image(await _read_body(request))
        result = await run_in_threadpool(predictor.predict, image)
        return {
            "picture": _data_url(result.picture),
            "image_size": list(image.shape[:2]),
            "legend": result.legend,
            "latency": {"runtime_ms": result.runtime_ms, "pytorch_ms": result.pytorch_ms,
                        "threads": predictor.runtime.threads, "repeats": predictor.repeats},
            "max_abs_diff": result.max_abs_diff,
        }

    return app


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 7860,
          threads: int | None = None, repeats: int = 5) -> None:
    """Load ``path`` (a checkpoint or ``.bdn``) and serve the page on ``host:port`` until
    interrupted."""
    predictor = Predictor.load(path, threads=threads, repeats=repeats)
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        predictor.close()
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    print(f"bidense serve: {Path(path).name} ({predictor.spec.title}) at "
          f"http://{host}:{sock.getsockname()[1]}/  (Ctrl+C stops)", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(build_app(predictor), log_level="warning")).run(
            sockets=[sock])
    finally:
        sock.close()
        predictor.close()
