"""``create_app``: the FastAPI application of ``vtr-qdrant serve``.

Routes (all JSON unless said otherwise; errors are ``{"error": {"type", "message"}}``, see
:mod:`.problems`):

=====================================  =====================================================
``GET /``                              the search page (one HTML file, nothing from a CDN)
``GET /health``                        ``{"status": "ok", "collection", "videos"}``
``POST /search``, ``GET /search?q=``   ranked hits with their moments
``GET /fields``                        the indexed payload fields (the page's filters)
``GET /videos/{id}``                   the stored metadata
``GET|HEAD /videos/{id}/media``        the file, with ``Range`` support (only under a media root)
``GET /videos/{id}/thumbnail?t=``      a JPEG frame, cached
``GET /metrics``                       Prometheus text format
``POST /session``                      with the ``api-key`` header: a cookie for the page's media
=====================================  =====================================================
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from .._optional import require
from ..aio import AsyncVideoCollection
from ..errors import ConfigError
from .config import ServeConfig
from .handle import CollectionHandle
from .observe import SESSION_COOKIE, Metrics, ServeMiddleware, session_token
from .problems import STATUS_TYPES, ApiError, error_response
from .thumbs import Thumbnails

__all__ = ["create_app", "page_html"]

log = logging.getLogger(__name__)


def page_html() -> str:
    """The search page (``vtr_qdrant/serve/page.html``)."""
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def _validation_error(exc: Any) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "invalid_json", "the request body is not valid JSON")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    return ApiError(422, "validation_error", f"{where}: {first.get('msg', 'invalid value')}")


def _install_error_handlers(app: Any) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_api_error(request: Any, exc: Exception) -> Any:
        return error_response(exc if isinstance(exc, ApiError) else ApiError(500, "internal_error", "internal error"))

    async def on_validation(request: Any, exc: Exception) -> Any:
        return error_response(_validation_error(exc))

    async def on_http(request: Any, exc: Exception) -> Any:
        status = getattr(exc, "status_code", 500)
        message = "no such route" if status == 404 else str(getattr(exc, "detail", "")) or STATUS_TYPES.get(status, "error")
        return error_response(ApiError(status, STATUS_TYPES.get(status, "http_error"), message, headers=getattr(exc, "headers", None)))

    async def on_crash(request: Any, exc: Exception) -> Any:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(500, "internal_error", "the server failed to answer this request; see its log"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def create_app(collection: AsyncVideoCollection | CollectionHandle, config: ServeConfig) -> Any:
    """The FastAPI app serving one collection.

    Args:
        collection: an open :class:`~vtr_qdrant.aio.AsyncVideoCollection` (the caller closes it),
            or a :class:`~vtr_qdrant.serve.handle.CollectionHandle` that opens it (and closes it at
            shutdown).
        config: media roots, API key and limits.

    Returns:
        A ``fastapi.FastAPI`` application (run it with uvicorn, or test it with ``TestClient``).

    Raises:
        MissingDependencyError: FastAPI is not installed (``pip install 'vtr-qdrant[serve]'``).
    """
    fastapi = require("fastapi", "serve", purpose="vtr-qdrant serve")
    from fastapi.responses import HTMLResponse, PlainTextResponse, Response

    from .routes import ServeState, router

    handle = collection if isinstance(collection, CollectionHandle) else CollectionHandle.of(collection)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            await handle.get()  # open now when possible; a server that is down answers 503 meanwhile
        except ApiError as e:
            if handle.required:
                raise ConfigError(f"cannot serve collection {config.collection_name!r}: {e.message}") from None
            log.warning("starting without the collection: %s", e.message)
        yield
        await handle.close()

    app = fastapi.FastAPI(title="vtr-qdrant", summary="Text-to-video search", lifespan=lifespan, docs_url=None, redoc_url=None)
    state = ServeState(handle, config, Metrics(), Thumbnails(
        width=config.thumbnail_width, cache_bytes=config.thumbnail_cache_bytes, timeout_s=config.thumbnail_timeout_s))
    app.state.serve = state
    _install_error_handlers(app)
    app.add_middleware(ServeMiddleware, config=config, metrics=state.metrics)
    page = page_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                           "media-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/session", status_code=204, response_model=None)
    async def session() -> Response:
        response = Response(status_code=204)
        if config.api_key:
            response.set_cookie(SESSION_COOKIE, session_token(config.api_key), httponly=True, samesite="strict")
        return response

    app.include_router(router)
    return app

