"""Haystack: :class:`VideoRetriever`, a Haystack component over a video collection.

Needs ``pip install 'vtr-qdrant[haystack]'`` (imported only when this module is)::

    from haystack import Pipeline
    from vtr_qdrant.integrations.haystack import VideoRetriever
    pipe = Pipeline()
    pipe.add_component("videos", VideoRetriever(collection=videos, top_k=4))
    docs = pipe.run({"videos": {"query": "a red circle moving left"}})["videos"]["documents"]

``run(query, filters=None, top_k=None)`` and ``run_async`` (same signature) return
``{"documents": [Document, ...]}``: content, meta and order from
:mod:`vtr_qdrant.integrations.documents`, ``Document.score`` = the hit's score, ``Document.id`` =
the video id. ``filters`` are Haystack filter dicts (translated by
:func:`~vtr_qdrant.integrations.filters.haystack_filter`) or a raw ``qdrant_client.models.Filter``;
filters given to ``run`` replace the component's (Haystack's default filter policy).
``to_dict`` stores the collection's connection settings (:mod:`~vtr_qdrant.integrations.connection`),
never the collection; ``from_dict`` reconnects (an async collection on the first ``run_async``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._optional import require

require("haystack", "haystack", purpose="vtr_qdrant.integrations.haystack")

from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402
from haystack.utils import deserialize_callable, serialize_callable  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..search.hits import VideoHit  # noqa: E402
from .calls import AnyCollection, asearch_hits, check_collection, search_hits  # noqa: E402
from .connection import aopen_collection, collection_settings, open_collection  # noqa: E402
from .documents import Content, check_content, hit_documents  # noqa: E402
from .filters import haystack_filter  # noqa: E402

__all__ = ["VideoRetriever"]


@component
class VideoRetriever:
    """Retrieve videos (with the moment that matched) as Haystack ``Document`` objects.

    Args:
        collection: as every retriever (:mod:`vtr_qdrant.integrations`), or the settings dict
            ``to_dict`` wrote (the collection is reopened from them).
        top_k: how many videos (documents) to return.
        filters: a Haystack filter dict or a ``qdrant_client.models.Filter`` (applied in stage 1).
        score_threshold, aggregation: as every retriever.
        content: as every retriever; a module-level function, so that ``to_dict`` can name it.

    Raises:
        InvalidInputError: ``filters`` that have no Qdrant equivalent.
        ConfigError: a ``collection`` or a ``content`` of the wrong type.
    """

    def __init__(
        self,
        collection: Any,
        top_k: int = 4,
        filters: Any = None,
        score_threshold: float | None = None,
        aggregation: str | None = None,
        content: Content | None = None,
    ) -> None:
        self._settings: dict[str, Any] | None = None
        self._collection: AnyCollection | None = None
        if isinstance(collection, dict):
            self._settings = collection
            if not collection.get("async"):
                self._collection = open_collection(collection)
        else:
            self._collection = check_collection(collection)
        self._lock = asyncio.Lock()
        self.top_k = top_k
        self.filters = filters
        self._query_filter = haystack_filter(filters)  # refused here when it cannot be translated
        self.score_threshold = score_threshold
        self.aggregation = aggregation
        self.content = check_content(content)

    @property
    def collection(self) -> AnyCollection | None:
        """The collection (None until the first ``run_async`` for an async one rebuilt by ``from_dict``)."""
        return self._collection

    def to_dict(self) -> dict[str, Any]:
        """The component as a dict: the collection's connection settings, never the collection."""
        settings = self._settings if self._collection is None else collection_settings(self._collection)
        if self.filters is not None and not isinstance(self.filters, dict):
            raise ConfigError("to_dict needs filters as a Haystack filter dict (a models.Filter cannot be serialised here)")
        return default_to_dict(
            self,
            collection=settings,
            top_k=self.top_k,
            filters=self.filters,
            score_threshold=self.score_threshold,
            aggregation=self.aggregation,
            content=None if self.content is None else serialize_callable(self.content),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoRetriever:
        """Rebuild a component written by :meth:`to_dict` (reconnecting to the collection)."""
        params = dict(data.get("init_parameters", {}))  # the caller's dict stays as it was
        if params.get("content"):
            params["content"] = deserialize_callable(params["content"])
        return default_from_dict(cls, {**data, "init_parameters": params})  # type: ignore[no-any-return]

    def _search_args(self, filters: Any, top_k: int | None) -> dict[str, Any]:
        return {
            "limit": self.top_k if top_k is None else top_k,
            "query_filter": self._query_filter if filters is None else haystack_filter(filters),
            "score_threshold": self.score_threshold,
            "aggregation": self.aggregation,
        }

    def _documents(self, hits: list[VideoHit]) -> dict[str, list[Document]]:
        docs = [Document(id=d.id, content=d.text, meta=d.metadata, score=d.score) for d in hit_documents(hits, self.content)]
        return {"documents": docs}

    async def _async_collection(self) -> AnyCollection:
        async with self._lock:
            if self._collection is None:  # rebuilt from settings: __init__ set them
                self._collection = await aopen_collection(self._settings or {})
        return self._collection

    @component.output_types(documents=list[Document])
    def run(self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None) -> dict[str, list[Document]]:
        """Search: ``{"documents": [...]}``, best first (arguments as the component's; None keeps those)."""
        collection = self._collection
        if collection is None:
            collection = asyncio.run(self._async_collection())
        return self._documents(search_hits(collection, query, **self._search_args(filters, top_k)))

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """:meth:`run` as a coroutine (native for an async collection)."""
        collection = await self._async_collection()
        return self._documents(await asearch_hits(collection, query, **self._search_args(filters, top_k)))

