"""LlamaIndex: :class:`VideoRetriever`, a ``llama_index.core`` retriever over a video collection.

Needs ``pip install 'vtr-qdrant[llama-index]'`` (imported only when this module is)::

    from vtr_qdrant.integrations.llama_index import VideoRetriever
    retriever = VideoRetriever(collection=videos, similarity_top_k=4)
    nodes = retriever.retrieve("a red circle moving left")    # or await retriever.aretrieve(...)
    nodes[0].node.text, nodes[0].score, nodes[0].node.metadata["start"]

Nodes are ``TextNode`` objects in ``NodeWithScore`` (score = the hit's score), text and metadata
from :mod:`vtr_qdrant.integrations.documents`; the node id is the video id. ``filters`` takes
LlamaIndex ``MetadataFilters`` (translated by :func:`~vtr_qdrant.integrations.filters.llama_index_filter`)
or a raw ``qdrant_client.models.Filter``.
"""

from __future__ import annotations

from typing import Any

from .._optional import require

require("llama_index.core", "llama-index", purpose="vtr_qdrant.integrations.llama_index")

from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from ..search.hits import VideoHit  # noqa: E402
from .calls import asearch_hits, check_collection, search_hits  # noqa: E402
from .documents import Content, check_content, hit_documents  # noqa: E402
from .filters import llama_index_filter  # noqa: E402

__all__ = ["VideoRetriever"]


class VideoRetriever(BaseRetriever):
    """Retrieve videos (with the moment that matched) as LlamaIndex ``NodeWithScore``.

    Args:
        similarity_top_k: how many videos (nodes) to return.
        filters: ``MetadataFilters`` or a ``qdrant_client.models.Filter`` (applied in stage 1).
        collection, score_threshold, aggregation, content: as every retriever
            (:mod:`vtr_qdrant.integrations`).
        callback_manager, verbose: as LlamaIndex's ``BaseRetriever``.

    Raises:
        ConfigError: ``collection`` or ``content`` of the wrong type.
        InvalidInputError: a filter with no Qdrant equivalent.
    """

    def __init__(
        self,
        collection: Any,
        similarity_top_k: int = 4,
        filters: Any = None,
        score_threshold: float | None = None,
        aggregation: str | None = None,
        content: Content | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.collection = check_collection(collection)
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self._query_filter = llama_index_filter(filters)  # translated once; refused here if it cannot be
        self.score_threshold = score_threshold
        self.aggregation = aggregation
        self.content = check_content(content)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _search_args(self) -> dict[str, Any]:
        return {
            "limit": self.similarity_top_k,
            "query_filter": self._query_filter,
            "score_threshold": self.score_threshold,
            "aggregation": self.aggregation,
        }

    def _nodes(self, hits: list[VideoHit]) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=TextNode(id_=d.id, text=d.text, metadata=d.metadata), score=d.score)
            for d in hit_documents(hits, self.content)
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(search_hits(self.collection, query_bundle.query_str, **self._search_args()))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(await asearch_hits(self.collection, query_bundle.query_str, **self._search_args()))
