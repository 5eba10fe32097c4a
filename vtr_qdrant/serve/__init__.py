"""``vtr-qdrant serve``: an HTTP search API and a web page on :class:`~vtr_qdrant.aio.AsyncVideoCollection`.

Needs the ``serve`` extra (``pip install 'vtr-qdrant[serve]'``: FastAPI, uvicorn). The modules:

- :mod:`.config` (:class:`ServeConfig`: media roots, API key, limits),
- :mod:`.handle` (the collection, opened lazily: 503 while Qdrant is unreachable),
- :mod:`.problems` (THE mapping from failures to JSON errors ``{"error": {"type", "message"}}``),
- :mod:`.observe` (request ids, API key, body limits, access log, Prometheus metrics: one ASGI middleware),
- :mod:`.media` (which stored file may be served, HTTP ranges), :mod:`.thumbs` (JPEG frames, cached),
- :mod:`.schemas` (request and response bodies), :mod:`.app` (the routes), ``page.html`` (``GET /``),
- :mod:`.runner` (open the target named on the command line and run uvicorn).

Nothing here is imported by ``import vtr_qdrant``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import ServeConfig

__all__ = ["create_app", "ServeConfig"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeConfig":
        from .config import ServeConfig

        return ServeConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
