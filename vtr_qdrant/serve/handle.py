"""The served collection, opened lazily: the service starts and answers 503 while Qdrant is unreachable.

A server named by ``--url`` may be down when the service starts or go away later. The handle opens
the collection on first use and, after a failure, again at most every ``retry_s`` seconds; every
route asks it for the collection, so a request made while the store is unreachable gets 503 with a
clear message instead of a stack trace, and the service recovers by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..aio import AsyncVideoCollection
from ..aio.bridge import run_in_worker
from .problems import ApiError, is_unavailable

__all__ = ["CollectionHandle", "payload_indexes"]

log = logging.getLogger(__name__)

Opener = Callable[[], Awaitable[AsyncVideoCollection]]
Closer = Callable[[], Awaitable[None]]


def _type_name(info: Any) -> str:
    kind = getattr(info, "data_type", info)  # qdrant-client: an enum with .value; Edge: PayloadSchemaType.Integer
    return str(getattr(kind, "value", None) or str(kind).rsplit(".", 1)[-1]).lower()


def _engine_indexes(backend: Any, name: str) -> dict[str, str]:
    inner = getattr(backend, "inner", backend)  # aio's ExecutorBackend wraps a synchronous engine
    if hasattr(inner, "client"):  # qdrant-client: a server reports its indexes (local mode keeps none)
        schema = inner.client.get_collection(name).payload_schema or {}
    elif hasattr(inner, "_shard"):  # Qdrant Edge: the shard's own schema (no public call for it)
        schema = inner._shard(name).info().payload_schema
    else:
        return {}
    return {k: _type_name(v) for k, v in schema.items()}


async def payload_indexes(vc: AsyncVideoCollection) -> dict[str, str]:
    """The indexed payload fields of the collection, ``{"n_scenes": "integer"}`` (the page's filters).

    vtr-qdrant's own fields (``video_id``...) are left out. qdrant-client's local mode keeps no
    indexes, so it reports none.
    """
    from ..store.points import user_fields

    backend = vc.collection.backend
    found = await run_in_worker(vc.executor, vc.slots, _engine_indexes, backend, vc.collection_name)
    return user_fields(dict(sorted(found.items())))


class CollectionHandle:
    """The collection a service answers from.

    Args:
        opener: opens the collection (called on first use, and again after a failure).
        closer: closes what the opener opened besides the collection (the client), at shutdown.
        retry_s: after a failed open, the next attempt waits at least this long (requests in
            between get 503 at once).
    """

    def __init__(self, opener: Opener, closer: Closer | None = None, *, retry_s: float = 2.0) -> None:
        self._opener = opener
        self._closer = closer
        self._retry_s = retry_s
        self._vc: AsyncVideoCollection | None = None
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._failure = ""
        self.fields: dict[str, str] = {}
        #: the service must not start without the collection (an embedded folder: a wrong name or a
        #: lock held by another process will not fix itself)
        self.required = False

    @classmethod
    def of(cls, vc: AsyncVideoCollection) -> CollectionHandle:
        """A handle on a collection that is already open (the caller closes it)."""

        async def opener() -> AsyncVideoCollection:
            return vc

        return cls(opener)

    async def get(self) -> AsyncVideoCollection:
        """The open collection.

        Raises:
            ApiError: 503 while it cannot be opened (the message says why).
        """
        if self._vc is not None:
            return self._vc
        async with self._lock:
            if self._vc is not None:
                return self._vc
            if self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_s:
                raise ApiError(503, "backend_unavailable", self._failure)
            try:
                vc = await self._opener()
                self.fields = await payload_indexes(vc)
            except Exception as e:
                self._failed_at = time.monotonic()
                reason = "unreachable or busy" if is_unavailable(e) else f"not usable: {e}"
                self._failure = f"the collection cannot be opened (the vector store is {reason}); retry later"
                log.warning("opening the collection failed: %s: %s", type(e).__name__, e)
                raise ApiError(503, "backend_unavailable", self._failure) from None
            self._vc, self._failed_at = vc, None
            return vc

    async def close(self) -> None:
        """Close the collection (if this handle opened it) and the client."""
        vc, self._vc = self._vc, None
        if vc is not None and self._closer is not None:
            await vc.close()
        if self._closer is not None:
            await self._closer()
