"""A collection's connection settings as a JSON dict, and the collection rebuilt from them.

Framework components that serialise themselves (Haystack's ``to_dict`` / ``from_dict``) store
these settings, never the collection object: the client kind and its constructor options (local
mode ``path`` / ``location``, a server's ``url``, ``host``, ``port``...), or Qdrant Edge's folder;
the collection name; the model bundle (a registry name when the bundle sits in the shipped models
or the cache, else ``local-dir:<path>``); the façade's search settings. An API key is never
written: the dict says which environment variable holds it (``QDRANT_API_KEY``).
"""

from __future__ import annotations

import os
from typing import Any

from qdrant_client import AsyncQdrantClient, QdrantClient

from ..aio.bridge import ExecutorBackend, LoopBoundClient
from ..aio.collection import AsyncVideoCollection
from ..collection import VideoCollection
from ..errors import ConfigError
from ..model.bundle import BUILTIN_MODELS_DIR, LOCAL_PREFIX, ModelBundle, cache_dir
from ..store.qdrant import QdrantClientBackend

__all__ = ["API_KEY_ENV", "collection_settings", "open_collection", "aopen_collection"]

#: environment variable read for a server's API key when a collection is rebuilt from settings
API_KEY_ENV = "QDRANT_API_KEY"
_CLIENT_KEYS = ("location", "url", "port", "grpc_port", "prefer_grpc", "https", "prefix", "timeout", "host", "path")
_FACADE_KEYS = ("device", "hnsw_ef", "frames_hnsw_ef", "exact", "xpool_cache_size", "frames_cache_size")


def _bundle_spec(bundle: ModelBundle | None) -> str | None:
    if bundle is None:
        return None
    if bundle.path.parent in (BUILTIN_MODELS_DIR, cache_dir()):
        return bundle.manifest.name
    return LOCAL_PREFIX + str(bundle.path.absolute())


def _client_settings(backend: Any) -> dict[str, Any]:
    if isinstance(backend, ExecutorBackend):
        backend = backend.inner
    if isinstance(backend, QdrantClientBackend):
        client = backend.client
        if isinstance(client, LoopBoundClient):
            client = client.async_client
        opts = dict(client.init_options)
        out: dict[str, Any] = {"kind": "qdrant", **{k: opts[k] for k in _CLIENT_KEYS if opts.get(k) is not None}}
        if opts.get("api_key"):
            out["api_key_env"] = API_KEY_ENV
        return out
    path = getattr(backend, "path", None)
    if type(backend).__name__ == "EdgeBackend" and path is not None:
        return {"kind": "edge", "path": str(path)}
    raise ConfigError(f"cannot describe a {type(backend).__name__} back end as settings (QdrantClient, AsyncQdrantClient and EdgeBackend can be)")


def collection_settings(collection: VideoCollection | AsyncVideoCollection) -> dict[str, Any]:
    """The JSON-serialisable settings :func:`open_collection` / :func:`aopen_collection` rebuild ``collection`` from."""
    is_async = isinstance(collection, AsyncVideoCollection)
    vc = collection.collection if isinstance(collection, AsyncVideoCollection) else collection
    return {
        "client": _client_settings(vc.backend),
        "async": is_async,
        "collection_name": vc.collection_name,
        "bundle": _bundle_spec(vc.bundle),
        "options": {k: getattr(vc, k) for k in _FACADE_KEYS},
    }


def _client_kwargs(client: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in client.items() if k in _CLIENT_KEYS}
    if client.get("api_key_env"):
        key = os.environ.get(str(client["api_key_env"]))
        if not key:
            raise ConfigError(f"the collection's server needs an API key: set ${client['api_key_env']}")
        kwargs["api_key"] = key
    return kwargs


def _backend(client: dict[str, Any], *, is_async: bool) -> Any:
    kind = client.get("kind")
    if kind == "edge":
        from ..store.edge import EdgeBackend

        return EdgeBackend(client["path"])
    if kind == "qdrant":
        return (AsyncQdrantClient if is_async else QdrantClient)(**_client_kwargs(client))
    raise ConfigError(f"unknown client kind {kind!r} in collection settings (expected 'qdrant' or 'edge')")


def _check(settings: Any) -> dict[str, Any]:
    if not isinstance(settings, dict) or not {"client", "collection_name"} <= set(settings):
        raise ConfigError(f"collection settings need 'client' and 'collection_name', got {settings!r:.80}")
    return settings


def open_collection(settings: dict[str, Any]) -> VideoCollection:
    """A :class:`VideoCollection` on the stored connection settings (the collection must exist)."""
    s = _check(settings)
    return VideoCollection(
        _backend(s["client"], is_async=False), s["collection_name"], s.get("bundle"), create=False, **s.get("options", {})
    )


async def aopen_collection(settings: dict[str, Any]) -> AsyncVideoCollection:
    """An :class:`AsyncVideoCollection` on the stored connection settings (the collection must exist)."""
    s = _check(settings)
    return await AsyncVideoCollection.create(
        _backend(s["client"], is_async=True), s["collection_name"], s.get("bundle"), create=False, **s.get("options", {})
    )
