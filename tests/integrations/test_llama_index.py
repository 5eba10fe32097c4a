"""LlamaIndex VideoRetriever: NodeWithScore equal to search's hits, MetadataFilters translated, native aretrieve."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from qdrant_client import models  # noqa: E402
from rag_world import QUERY, edge_world, top_video, world  # noqa: E402,F401 (fixtures)

from vtr_qdrant import AsyncVideoCollection, InvalidInputError, VideoCollection  # noqa: E402
from vtr_qdrant.integrations.documents import hit_documents  # noqa: E402
from vtr_qdrant.integrations.llama_index import VideoRetriever  # noqa: E402


def test_nodes_equal_the_search_hits(world: VideoCollection) -> None:
    hits = world.search(QUERY, limit=5)
    nodes = VideoRetriever(world, similarity_top_k=5).retrieve(QUERY)
    assert all(isinstance(n, NodeWithScore) and isinstance(n.node, TextNode) for n in nodes)
    assert [(n.node.node_id, n.node.get_content(), n.node.metadata, n.score) for n in nodes] == [
        (d.id, d.text, d.metadata, d.score) for d in hit_documents(hits)
    ]


def test_metadata_filters_remove_the_top_hit(world: VideoCollection) -> None:
    top = top_video(world)
    category = world.search(QUERY, limit=1)[0].payload["category"]
    excluding = MetadataFilters(filters=[MetadataFilter(key="video_id", value=top, operator=FilterOperator.NE)])
    ids = [n.node.node_id for n in VideoRetriever(world, similarity_top_k=4, filters=excluding).retrieve(QUERY)]
    assert len(ids) == 4 and top not in ids
    # the other category only: a raw Qdrant filter and the MetadataFilters form agree
    other = "odd" if category == "even" else "even"
    raw = models.Filter(must=[models.FieldCondition(key="category", match=models.MatchValue(value=other))])
    li = MetadataFilters(filters=[MetadataFilter(key="category", value=other)])
    by_raw = [n.node.node_id for n in VideoRetriever(world, similarity_top_k=10, filters=raw).retrieve(QUERY)]
    by_li = [n.node.node_id for n in VideoRetriever(world, similarity_top_k=10, filters=li).retrieve(QUERY)]
    assert by_raw == by_li and len(by_li) == 5 and top not in by_li
    # nested OR of ranges: n < 2 or n >= 8
    nested = MetadataFilters(
        filters=[
            MetadataFilter(key="n", value=2, operator=FilterOperator.LT),
            MetadataFilter(key="n", value=8, operator=FilterOperator.GTE),
        ],
        condition=FilterCondition.OR,
    )
    nodes = VideoRetriever(world, similarity_top_k=10, filters=nested).retrieve(QUERY)
    assert sorted(n.node.metadata["n"] for n in nodes) == [0, 1, 8, 9]
    with pytest.raises(InvalidInputError, match="text_match_insensitive"):
        VideoRetriever(world, filters=MetadataFilters(filters=[
            MetadataFilter(key="caption", value="x", operator=FilterOperator.TEXT_MATCH_INSENSITIVE)
        ]))


def test_aretrieve_on_an_async_collection_equals_retrieve(edge_world: VideoCollection) -> None:
    expected = VideoRetriever(edge_world, similarity_top_k=4).retrieve(QUERY)

    async def main() -> list[NodeWithScore]:
        async with await AsyncVideoCollection.create(edge_world.backend, "world", edge_world.bundle) as avc:
            return await VideoRetriever(avc, similarity_top_k=4).aretrieve(QUERY)

    got = asyncio.run(main())
    assert [(n.node.node_id, n.node.metadata, n.score) for n in got] == [
        (n.node.node_id, n.node.metadata, n.score) for n in expected
    ]
