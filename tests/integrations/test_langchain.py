"""LangChain VideoRetriever: LangChain's standard retriever tests, and documents equal to search's hits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain_core")
langchain_tests = pytest.importorskip("langchain_tests.integration_tests")

from langchain_core.documents import Document  # noqa: E402
from qdrant_client import models  # noqa: E402
from rag_world import QUERY, edge_world, top_video, world  # noqa: E402,F401 (fixtures)

from vtr_qdrant import AsyncVideoCollection, ConfigError, VideoCollection  # noqa: E402
from vtr_qdrant.integrations.documents import hit_documents  # noqa: E402
from vtr_qdrant.integrations.langchain import VideoRetriever  # noqa: E402


def _not(video_id: str) -> models.Filter:
    return models.Filter(must_not=[models.FieldCondition(key="video_id", match=models.MatchValue(value=video_id))])


class TestStandardRetriever(langchain_tests.RetrieversIntegrationTests):
    """langchain-tests' suite on a sync collection (its ainvoke has no async path: a thread)."""

    collection: Any = None

    @pytest.fixture(autouse=True)
    def _collection(self, world: VideoCollection) -> None:
        type(self).collection = world

    @property
    def retriever_constructor(self) -> type[VideoRetriever]:
        return VideoRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"collection": self.collection, "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


class TestStandardRetrieverAsyncCollection(TestStandardRetriever):
    """The same suite on an AsyncVideoCollection (ainvoke awaits it natively) over the Edge world."""

    @pytest.fixture(autouse=True)
    def _collection(self, edge_world: VideoCollection) -> None:
        if not isinstance(type(self).collection, AsyncVideoCollection):
            type(self).collection = asyncio.run(AsyncVideoCollection.create(edge_world.backend, "world", edge_world.bundle))


def test_documents_equal_the_search_hits(world: VideoCollection) -> None:
    hits = world.search(QUERY, limit=6)
    docs = VideoRetriever(collection=world, k=6).invoke(QUERY)
    expected = hit_documents(hits)
    assert [(d.id, d.page_content, d.metadata) for d in docs] == [(e.id, e.text, e.metadata) for e in expected]
    assert all(isinstance(d, Document) for d in docs) and docs[0].page_content == hits[0].payload["caption"]


def test_filters_remove_the_top_hit(world: VideoCollection) -> None:
    top = top_video(world)
    retriever = VideoRetriever(collection=world, k=4, query_filter=_not(top))
    ids = [d.id for d in retriever.invoke(QUERY)]
    assert len(ids) == 4 and top not in ids
    assert top in [d.id for d in VideoRetriever(collection=world, k=4).invoke(QUERY)]
    # per call: k and the filter
    assert [d.id for d in VideoRetriever(collection=world).invoke(QUERY, k=3, query_filter=_not(top))] == ids[:3]
    with pytest.raises(ConfigError, match="unknown argument"):
        retriever.invoke(QUERY, limit=2)


def test_threshold_batch_and_content(world: VideoCollection) -> None:
    hits = world.search(QUERY, limit=10)
    cut = hits[2].score
    kept = VideoRetriever(collection=world, k=10, score_threshold=cut).invoke(QUERY)
    assert [d.id for d in kept] == [h.video_id for h in hits if h.score >= cut]
    queries = [QUERY, "a blue square on black"]
    retriever = VideoRetriever(collection=world, k=3)
    assert retriever.batch(queries) == [retriever.invoke(q) for q in queries]
    with pytest.raises(ConfigError, match="collection must be"):
        VideoRetriever(collection="videos")


def test_ainvoke_on_an_async_collection_equals_invoke_on_the_sync_one(edge_world: VideoCollection) -> None:
    sync_docs = VideoRetriever(collection=edge_world, k=5, query_filter=_not(top_video(edge_world))).invoke(QUERY)

    async def main() -> tuple[list[Document], list[list[Document]]]:
        async with await AsyncVideoCollection.create(edge_world.backend, "world", edge_world.bundle) as avc:
            retriever = VideoRetriever(collection=avc, k=5, query_filter=_not(top_video(edge_world)))
            one = await retriever.ainvoke(QUERY)
            with pytest.raises(ConfigError, match="use its async method"):
                retriever.invoke(QUERY)  # a running loop: invoke cannot wait on it
            return one, await retriever.abatch([QUERY, QUERY])

    one, both = asyncio.run(main())
    assert one == sync_docs and both == [sync_docs, sync_docs]
