"""Haystack VideoRetriever: documents equal to search's hits, filters, run_async, to_dict/from_dict, a Pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline  # noqa: E402
from rag_world import QUERY, edge_world, fill_world, open_local, top_video, world  # noqa: E402,F401 (fixtures)

from vtr_qdrant import AsyncVideoCollection, InvalidInputError, VideoCollection, VideoHit  # noqa: E402
from vtr_qdrant.integrations.documents import hit_documents  # noqa: E402
from vtr_qdrant.integrations.haystack import VideoRetriever  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402


def short_text(hit: VideoHit) -> str:
    """A module-level ``content`` callable (to_dict names it by its import path)."""
    return f"video {hit.video_id}"


def _ids(out: dict[str, list[Document]]) -> list[str]:
    return [d.id for d in out["documents"]]


def _same(a: dict[str, list[Document]], b: dict[str, list[Document]]) -> bool:
    """Equal documents, up to the last digits of the scores: a re-opened local-mode folder may order
    stage-1 ties differently, which moves stage 2's float sums by ~1e-8."""
    key = [(d.id, d.content, d.meta["video_id"], d.meta["start"], d.meta["end"]) for d in a["documents"]]
    return key == [(d.id, d.content, d.meta["video_id"], d.meta["start"], d.meta["end"]) for d in b["documents"]] and [
        d.score for d in a["documents"]
    ] == pytest.approx([d.score for d in b["documents"]], abs=1e-6)


def test_documents_equal_the_search_hits_and_filters_apply(world: VideoCollection) -> None:
    hits = world.search(QUERY, limit=5)
    out = VideoRetriever(collection=world, top_k=5).run(query=QUERY)
    assert [(d.id, d.content, d.meta, d.score) for d in out["documents"]] == [
        (e.id, e.text, e.metadata, e.score) for e in hit_documents(hits)
    ]
    top = top_video(world)
    not_top = {"field": "meta.video_id", "operator": "!=", "value": top}
    retriever = VideoRetriever(collection=world, top_k=3, filters=not_top)
    assert top not in _ids(retriever.run(query=QUERY)) and len(_ids(retriever.run(query=QUERY))) == 3
    # run's filters replace the component's; top_k per call
    nested = {"operator": "OR", "conditions": [
        {"field": "meta.n", "operator": "<", "value": 2},
        {"operator": "AND", "conditions": [{"field": "n", "operator": ">=", "value": 8},
                                           {"field": "meta.category", "operator": "in", "value": ["odd"]}]},
    ]}
    got = retriever.run(query=QUERY, filters=nested, top_k=10)["documents"]
    assert sorted(d.meta["n"] for d in got) == [0, 1, 9]
    with pytest.raises(InvalidInputError, match="operator"):
        VideoRetriever(collection=world, filters={"field": "meta.n", "operator": "~", "value": 1})


def test_run_async_on_an_async_collection_equals_run(edge_world: VideoCollection) -> None:
    expected = VideoRetriever(collection=edge_world, top_k=4).run(query=QUERY)

    async def main() -> dict[str, list[Document]]:
        async with await AsyncVideoCollection.create(edge_world.backend, "world", edge_world.bundle) as avc:
            return await VideoRetriever(collection=avc, top_k=4).run_async(query=QUERY)

    assert asyncio.run(main()) == expected


def test_to_dict_from_dict_round_trip_reconnects(tmp_path: Path, test_bundle: ModelBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    # Haystack loads callables and components only from trusted modules: this test's and ours
    monkeypatch.setenv("HAYSTACK_DESERIALIZATION_ALLOWLIST", "test_haystack,vtr_qdrant")
    client = open_local(tmp_path / "q")
    vc = VideoCollection(client, "world", test_bundle)
    fill_world(vc)
    retriever = VideoRetriever(collection=vc, top_k=3, filters={"field": "meta.category", "operator": "==", "value": "odd"},
                               content=short_text)
    before = retriever.run(query=QUERY)
    data = retriever.to_dict()
    settings = data["init_parameters"]["collection"]
    assert settings["client"]["kind"] == "qdrant" and settings["client"]["path"] == str(tmp_path / "q")
    assert settings["collection_name"] == "world" and settings["bundle"] == f"local-dir:{test_bundle.path}"
    assert data["init_parameters"]["content"].endswith("test_haystack.short_text")
    client.close()  # local mode admits one client per folder: the copy opens its own
    again = VideoRetriever.from_dict(data)
    assert again.to_dict() == data and _same(again.run(query=QUERY), before)
    assert {d.meta["category"] for d in before["documents"]} == {"odd"} and len(before["documents"]) == 3
    # in a Pipeline, and serialised with it
    pipe = Pipeline()
    pipe.add_component("videos", again)
    assert pipe.run({"videos": {"query": QUERY}})["videos"] == again.run(query=QUERY)
    again.collection.backend.client.close()  # type: ignore[union-attr]
    reloaded = Pipeline.loads(pipe.dumps())
    assert _same(reloaded.run({"videos": {"query": QUERY}})["videos"], before)


@pytest.mark.edge
def test_async_settings_reconnect_on_first_run_async(tmp_path: Path, test_bundle: ModelBundle) -> None:
    pytest.importorskip("qdrant_edge")
    from vtr_qdrant import EdgeBackend

    backend = EdgeBackend(tmp_path / "edge")
    vc = VideoCollection(backend, "world", test_bundle)
    fill_world(vc)
    expected = [h.video_id for h in vc.search(QUERY, limit=2)]

    async def serialise() -> dict[str, object]:
        async with await AsyncVideoCollection.create(backend, "world", test_bundle) as avc:
            return VideoRetriever(collection=avc, top_k=2).to_dict()

    data = asyncio.run(serialise())
    assert data["init_parameters"]["collection"]["async"] is True  # type: ignore[index]
    assert data["init_parameters"]["collection"]["client"] == {"kind": "edge", "path": str(tmp_path / "edge")}  # type: ignore[index]
    backend.close()  # one Edge handle per shard: the copy opens its own

    async def reconnect() -> list[str]:
        again = VideoRetriever.from_dict(data)
        assert again.collection is None  # an async collection is created inside the running loop
        ids = _ids(await again.run_async(query=QUERY))
        assert isinstance(again.collection, AsyncVideoCollection) and again.to_dict() == data
        again.collection.collection.backend.close()  # type: ignore[attr-defined]  # on the engine's thread
        await again.collection.close()
        return ids

    assert asyncio.run(reconnect()) == expected
