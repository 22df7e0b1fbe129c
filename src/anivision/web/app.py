"""The FastAPI application of ``anivision serve``: one HTML page and a JSON endpoint.

Routes:
    ``GET /``: the page (:mod:`anivision.web.page`).
    ``GET /api/info``: the loaded models and the upload limits.
    ``POST /api/analyse``: ``multipart/form-data`` with one or more image files (any field
    name; the page uses ``files``); answers :meth:`Analyzer.analyse`'s JSON, or a 4xx with
    ``{"error": "..."}``, which the page shows.

FastAPI's own ``/docs``, ``/redoc`` and ``/openapi.json`` are off: the docs pages load their
scripts from a CDN, and the app must work with no network.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from anivision.errors import AnivisionError
from anivision.extras import require
from anivision.version import __version__
from anivision.web.page import CSP, PAGE
from anivision.web.service import Analyzer, Models, load_models
from anivision.web.uploads import MAX_FILES, MAX_PIXELS, MAX_UPLOAD_BYTES, UploadError, image_files, open_image, parse_multipart

log = logging.getLogger(__name__)

NO_MODEL = (
    "no model loaded: start the app with a classification run, a gallery or a retrieval run, e.g. "
    "'anivision serve --run RUN' (see 'anivision serve --help')"
)
#: Images decoded at once (each may take up to ``max_pixels`` x 4 bytes of memory).
DECODE_SLOTS = 4


def _error(status: int, message: str) -> Any:
    from fastapi.responses import JSONResponse  # the [web] extra, checked by create_app

    return JSONResponse({"error": message}, status_code=status)


async def _read_capped(request: Any, cap: int) -> bytes:
    """The request body, or UploadError(413) past ``cap`` bytes (read on, unkept, so the client
    gets the answer rather than a reset connection, up to 4 x ``cap``)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > 4 * cap:
        raise UploadError(413, f"upload of {int(declared) / 1e6:.1f} MB: at most {cap / 1e6:g} MB per request")
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= cap:
            body += chunk
        elif size > 4 * cap:
            break
    if size > cap:
        raise UploadError(413, f"upload of {size / 1e6:.1f} MB or more: at most {cap / 1e6:g} MB per request")
    return bytes(body)


def create_app(
    runs: list[str | Path] | tuple[str | Path, ...] = (),
    gallery: str | Path | None = None,
    retrieval: str | Path | None = None,
    top_k: int = 5,
    *,
    retrieval_gallery: str | Path | None = None,
    device: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_files: int = MAX_FILES,
    models: Models | None = None,
    analyzer: Analyzer | None = None,
) -> Any:
    """The web app, with its models loaded once (through :func:`anivision.api.load`).

    Args:
        runs: classification run folders; each face gets every run's top-k labels and Grad-CAM++.
        gallery: an enrolled gallery folder: who each face is, or ``unknown``.
        retrieval: a style-retrieval run: the most similar images of ``retrieval_gallery``.
        top_k: labels, characters and similar images per face.
        retrieval_gallery: images to search; default the retrieval run's own data.
        device: torch device for every model.
        max_upload_bytes: cap on one request's body.
        max_pixels: cap on one image's width x height, checked before decoding.
        max_files: cap on images per request.
        models: already loaded models (instead of ``runs``/``gallery``/``retrieval``).
        analyzer: a ready :class:`Analyzer` (tests inject one with a stub detector).

    Returns:
        A FastAPI application (``uvicorn.run(app)``; ``fastapi.testclient.TestClient(app)``).
        Its temporary folder (the retrieval gallery index) is removed when it shuts down.

    Raises:
        AnivisionError: FastAPI missing (the ``[web]`` extra), a bad folder, ``top_k < 1``.
    """
    fastapi = require("fastapi", "web", "anivision serve")
    require("python_multipart", "web", "anivision serve")
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    workdir = Path(tempfile.mkdtemp(prefix="anivision-serve-"))
    atexit.register(shutil.rmtree, workdir, True)
    try:
        if analyzer is None:
            if models is None:
                models = load_models(runs, gallery, retrieval, retrieval_gallery, workdir, device)
            analyzer = Analyzer(models, top_k)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202 - FastAPI's lifespan protocol
        yield
        shutil.rmtree(workdir, ignore_errors=True)

    app = fastapi.FastAPI(title="anivision", version=__version__, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.analyzer = analyzer
    app.state.workdir = workdir

    @app.middleware("http")
    async def security_headers(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/", response_class=HTMLResponse)
    async def page() -> Any:
        return HTMLResponse(PAGE)

    @app.get("/api/info")
    async def info() -> Any:
        return {
            "version": __version__, "models": analyzer.models.describe(), "top_k": analyzer.top_k,
            "limits": {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_files": max_files},
            "no_model_message": NO_MODEL if analyzer.models.empty else None,
        }

    def decode(files: list[Any]) -> list[tuple[str, Image.Image]]:
        with decode_slots:
            return [(f.filename or f"image {i + 1}", open_image(f.data, f.filename or f"image {i + 1}", max_pixels)) for i, f in enumerate(files)]

    async def analyse(request: Any) -> Any:
        """POST /api/analyse (a plain Starlette route: the request as is, no FastAPI parameter parsing)."""
        try:
            if analyzer.models.empty:
                await _read_capped(request, max_upload_bytes)
                raise UploadError(409, NO_MODEL)
            body = await _read_capped(request, max_upload_bytes)
            files = image_files(parse_multipart(body, request.headers.get("content-type", ""), max_files + 8), max_files)
            images = await run_in_threadpool(decode, files)
            return JSONResponse(await run_in_threadpool(analyzer.analyse, images))
        except UploadError as exc:
            return _error(exc.status, exc.message)
        except AnivisionError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - keep serving; the page shows one line
            log.exception("analyse failed")
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    app.add_route("/api/analyse", analyse, methods=["POST"])

    @app.exception_handler(404)
    async def not_found(request: Any, exc: Any) -> Any:
        return JSONResponse({"error": f"no such page: {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def bad_method(request: Any, exc: Any) -> Any:
        return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)

    return app
