"""How a retriever searches: through a :class:`VideoCollection` or an :class:`AsyncVideoCollection`.

Every retriever of :mod:`vtr_qdrant.integrations` takes either. Its async entry point awaits the
async collection natively; only a synchronous collection, which has no async path, is searched in
a thread there (``asyncio.to_thread``). Its sync entry point runs an async collection's coroutine
to completion with ``asyncio.run`` when the calling thread has no running event loop — fine for
local mode and Edge (they run on threads of their own); with an ``AsyncQdrantClient`` on a server,
prefer the async entry points: its HTTP connections belong to the loop that opened them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..aio.collection import AsyncVideoCollection
from ..collection import VideoCollection
from ..errors import ConfigError
from ..search.hits import VideoHit

__all__ = ["AnyCollection", "check_collection", "search_hits", "asearch_hits"]

AnyCollection = VideoCollection | AsyncVideoCollection


def check_collection(collection: object) -> AnyCollection:
    """``collection`` if it is a :class:`VideoCollection` or an :class:`AsyncVideoCollection`, else a :class:`ConfigError`."""
    if not isinstance(collection, (VideoCollection, AsyncVideoCollection)):
        raise ConfigError(
            "collection must be a vtr_qdrant.VideoCollection or a vtr_qdrant.AsyncVideoCollection, "
            f"got {type(collection).__name__}"
        )
    return collection


def search_hits(collection: AnyCollection, query: str, **search: Any) -> list[VideoHit]:
    """``collection.search(query, **search)`` from synchronous code.

    Raises:
        ConfigError: an :class:`AsyncVideoCollection` searched from a thread whose event loop is
            running (use the retriever's async entry point there).
    """
    if isinstance(collection, VideoCollection):
        return collection.search(query, **search)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(collection.search(query, **search))
    raise ConfigError(
        "this retriever wraps an AsyncVideoCollection and was called synchronously inside a running event loop; "
        "use its async method (ainvoke / aretrieve / run_async) there"
    )


async def asearch_hits(collection: AnyCollection, query: str, **search: Any) -> list[VideoHit]:
    """``collection.search(query, **search)`` from a coroutine (native for an :class:`AsyncVideoCollection`)."""
    if isinstance(collection, AsyncVideoCollection):
        return await collection.search(query, **search)
    return await asyncio.to_thread(collection.search, query, **search)
