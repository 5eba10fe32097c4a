"""LangChain: :class:`VideoRetriever`, a ``langchain_core`` retriever over a video collection.

Needs ``pip install 'vtr-qdrant[langchain]'`` (imported only when this module is)::

    from vtr_qdrant.integrations.langchain import VideoRetriever
    retriever = VideoRetriever(collection=videos, k=4)
    docs = retriever.invoke("a red circle moving left")      # or await retriever.ainvoke(...)
    docs[0].page_content, docs[0].metadata["start"], docs[0].metadata["end"]

Documents follow :mod:`vtr_qdrant.integrations.documents` (text, metadata, order);
``Document.id`` is the video id. ``invoke(query, k=..., query_filter=..., score_threshold=...)``
overrides the retriever's settings for one call.
"""

from __future__ import annotations

from typing import Any

from .._optional import require

require("langchain_core", "langchain", purpose="vtr_qdrant.integrations.langchain")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..search.hits import VideoHit  # noqa: E402
from .calls import asearch_hits, check_collection, search_hits  # noqa: E402
from .documents import Content, check_content, hit_documents  # noqa: E402

__all__ = ["VideoRetriever"]

_OVERRIDES = ("k", "query_filter", "score_threshold")


class VideoRetriever(BaseRetriever):
    """Retrieve videos (with the moment that matched) as LangChain ``Document`` objects.

    Args:
        collection, score_threshold, aggregation, content: as every retriever
            (:mod:`vtr_qdrant.integrations`).
        k: how many videos (documents) to return.
        query_filter: a ``qdrant_client.models.Filter`` on payload fields (applied in stage 1).

    Raises:
        ConfigError: ``collection`` or ``content`` of the wrong type; an unknown per-call argument.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: Any
    k: int = 4
    query_filter: Any = None
    score_threshold: float | None = None
    aggregation: str | None = None
    content: Content | None = None

    def __init__(self, **data: Any) -> None:
        # our own errors (pydantic would wrap them in a ValidationError)
        check_collection(data.get("collection"))
        check_content(data.get("content"))
        super().__init__(**data)

    def _search_args(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - set(_OVERRIDES)
        if unknown:
            raise ConfigError(f"unknown argument(s) {sorted(unknown)} for VideoRetriever; per call: {', '.join(_OVERRIDES)}")
        args = {"limit": self.k, "query_filter": self.query_filter, "score_threshold": self.score_threshold}
        args.update({("limit" if k == "k" else k): v for k, v in overrides.items()})
        return {**args, "aggregation": self.aggregation}

    def _documents(self, hits: list[VideoHit]) -> list[Document]:
        return [Document(page_content=d.text, metadata=d.metadata, id=d.id) for d in hit_documents(hits, self.content)]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any) -> list[Document]:
        return self._documents(search_hits(self.collection, query, **self._search_args(kwargs)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._documents(await asearch_hits(self.collection, query, **self._search_args(kwargs)))
