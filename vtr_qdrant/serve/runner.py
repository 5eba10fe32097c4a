"""Run the service for a target named on the command line (``vtr-qdrant serve``).

The target is an embedded Qdrant folder (``--qdrant-path``: qdrant-client local mode), a Qdrant
Edge folder (``--edge-path``) or a server (``--url``; API key from ``$QDRANT_API_KEY``). An
embedded folder is opened by one process only, so it is served by one uvicorn worker and must open
at start-up (a wrong collection name stops the service at once); a server may be served by
several workers (``--workers``), each opening its own client, and the service starts even while
the server is down (503 until it is back).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..aio import AsyncVideoCollection
from ..errors import ConfigError
from .config import ServeConfig
from .handle import CollectionHandle

__all__ = ["Target", "ServeOptions", "make_handle", "build_app", "app_from_env", "serve", "ENV_VAR"]

log = logging.getLogger(__name__)

#: how ``serve`` hands its options to worker processes (``--workers`` > 1)
ENV_VAR = "VTR_QDRANT_SERVE_OPTIONS"


@dataclass
class Target:
    """Where the collection lives: exactly one of the three."""

    qdrant_path: str | None = None
    edge_path: str | None = None
    url: str | None = None

    @property
    def embedded(self) -> bool:
        """A folder one process opens (local mode or Edge), not a server."""
        return self.url is None


@dataclass
class ServeOptions:
    """Everything ``vtr-qdrant serve`` was told (JSON-serialisable, for worker processes)."""

    collection: str
    target: Target
    bundle: str | None = None
    media_roots: list[str] = field(default_factory=list)
    api_key: str | None = None


def _client(target: Target) -> Any:
    if target.edge_path:
        from ..store.edge import EdgeBackend

        return EdgeBackend(target.edge_path)
    from qdrant_client import AsyncQdrantClient

    if target.url:
        # no version check: it is a blocking request made in the constructor, on the event loop
        return AsyncQdrantClient(url=target.url, api_key=os.environ.get("QDRANT_API_KEY"), timeout=10, check_compatibility=False)
    return AsyncQdrantClient(path=target.qdrant_path)


async def _open(client: Any, name: str, bundle: str | None) -> AsyncVideoCollection:
    vc = await AsyncVideoCollection.create(client, name, bundle, create=False)
    model = vc.collection.schema.model_name
    if bundle is None and vc.collection.bundle is None and model:  # the model the collection was built with
        await vc.close()
        vc = await AsyncVideoCollection.create(client, name, model, create=False)
    return vc


def make_handle(options: ServeOptions) -> CollectionHandle:
    """A handle that opens the target's client and collection on first use (and closes both at shutdown)."""
    opened: dict[str, Any] = {}

    async def opener() -> AsyncVideoCollection:
        if "client" not in opened:
            opened["client"] = _client(options.target)
        return await _open(opened["client"], options.collection, options.bundle)

    async def closer() -> None:
        client = opened.pop("client", None)
        result = client.close() if client is not None else None
        if result is not None and hasattr(result, "__await__"):
            await result

    handle = CollectionHandle(opener, closer)
    handle.required = options.target.embedded
    return handle


def build_app(options: ServeOptions) -> Any:
    """The FastAPI app for ``options``."""
    from .app import create_app

    config = ServeConfig.build(options.collection, options.media_roots, options.api_key)
    return create_app(make_handle(options), config)


def app_from_env() -> Any:
    """uvicorn's app factory in each worker process: the options come from :data:`ENV_VAR`."""
    raw = json.loads(os.environ[ENV_VAR])
    raw["target"] = Target(**raw["target"])
    return build_app(ServeOptions(**raw))


def _access_log_to_stderr() -> None:
    access = logging.getLogger("vtr_qdrant.serve.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def serve(options: ServeOptions, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, argv: Sequence[str] = ()) -> int:
    """Run uvicorn until interrupted; returns the exit code.

    Raises:
        ConfigError: ``workers`` > 1 on an embedded folder, or bad settings.
        MissingDependencyError: the ``serve`` extra is missing.
    """
    from .._optional import require

    uvicorn = require("uvicorn", "serve", purpose="vtr-qdrant serve")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers > 1 and options.target.embedded:
        raise ConfigError(
            "--workers > 1 needs a Qdrant server (--url): an embedded folder (--qdrant-path / --edge-path) "
            "is opened by one process only; serve it with one worker"
        )
    ServeConfig.build(options.collection, options.media_roots, options.api_key)  # fail before starting workers
    _access_log_to_stderr()
    common: dict[str, Any] = {"host": host, "port": port, "access_log": False, "timeout_keep_alive": 5,
                              "timeout_graceful_shutdown": 5, "log_level": "info"}
    if workers > 1:
        os.environ[ENV_VAR] = json.dumps({**asdict(options)})
        uvicorn.run("vtr_qdrant.serve.runner:app_from_env", factory=True, workers=workers, **common)
    else:
        uvicorn.run(build_app(options), **common)
    return 0
