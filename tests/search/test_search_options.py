"""qdrant-client's conventions on search (offset, with_payload fields, search_params, count_filter,
compact hits) and queries by image and by example video, on local mode and Qdrant Edge."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient, models

from vtr_qdrant import InvalidInputError, VideoCollection
from vtr_qdrant.model.bundle import ModelBundle
from vtr_qdrant.store.points import Key


@pytest.fixture(params=["local", "edge"])
def vc(request: pytest.FixtureRequest, tmp_path: Path, test_bundle: ModelBundle) -> VideoCollection:
    if request.param == "edge":
        pytest.importorskip("qdrant_edge")
        from vtr_qdrant.store.edge import EdgeBackend

        client: Any = EdgeBackend(tmp_path / "edge")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = QdrantClient(":memory:")
    c = VideoCollection(client, "opts", test_bundle, indexed_fields={"cat": "keyword"})
    rng = np.random.default_rng(0)
    for i in range(12):
        c.upsert_embeddings(f"v{i}", random_frames(rng, 6), np.arange(6.0) * 0.5, metadata={"cat": "ab"[i % 2], "n": i},
                            uri=f"/media/v{i}.mp4")
    return c


def test_offset_pages_through_the_ranking(vc: VideoCollection) -> None:
    q = random_frames(np.random.default_rng(5), 1)[0]
    full = [h.video_id for h in vc.search(q, limit=12, candidates=12)]
    pages = [h.video_id for off in (0, 4, 8) for h in vc.search(q, limit=4, offset=off, candidates=12)]
    assert pages == full and len(set(full)) == 12
    assert vc.search(q, limit=4, offset=11, candidates=12)[0].video_id == full[11]
    with pytest.raises(InvalidInputError, match="offset"):
        vc.search(q, offset=-1)


def test_with_payload_fields_search_params_and_count_filter(vc: VideoCollection) -> None:
    q = random_frames(np.random.default_rng(6), 1)[0]
    hits = vc.search(q, limit=3, with_payload=["cat"])
    assert all(set(h.payload) == {"cat"} for h in hits)
    assert all(h.payload == {} for h in vc.search(q, limit=3, with_payload=False))
    exact = vc.search(q, limit=5, search_params=models.SearchParams(hnsw_ef=256, exact=True))
    assert [h.video_id for h in exact] == [h.video_id for h in vc.search(q, limit=5)]
    flt = models.Filter(must=[models.FieldCondition(key="cat", match=models.MatchValue(value="a"))])
    assert vc.count(count_filter=flt) == vc.count(flt) == 6
    with pytest.raises(InvalidInputError, match="not both"):
        vc.count(flt, count_filter=flt)
    with pytest.raises(InvalidInputError, match="with_payload"):
        vc.search(q, with_payload="cat")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="search_params"):
        vc.search(q, search_params={"hnsw_ef": 5})  # type: ignore[arg-type]


def test_compact_hits(vc: VideoCollection) -> None:
    hit = vc.search(random_frames(np.random.default_rng(7), 1)[0], limit=1)[0]
    small = hit.to_dict()
    assert set(small) == {"video_id", "score", "uri", "moment", "segment_index", "payload"}
    assert small["uri"] == f"/media/{hit.video_id}.mp4" and set(small["payload"]) == {"cat", "n"}
    assert Key.TIMESTAMPS not in small["payload"] and Key.TIMESTAMPS in hit.to_dict(full=True)["payload"]


def test_like_a_stored_video(vc: VideoCollection) -> None:
    near = vc.get("v3")
    assert near is not None
    twin = near.frames + 0.05 * random_frames(np.random.default_rng(8), 6)
    vc.upsert_embeddings("twin", twin / np.linalg.norm(twin, axis=1, keepdims=True), np.arange(6.0) * 0.5,
                         metadata={"cat": "b", "n": 99})
    hits = vc.search(like="v3", limit=3)
    assert hits[0].video_id == "twin" and "v3" not in {h.video_id for h in hits}  # itself left out
    only_a = models.Filter(must=[models.FieldCondition(key="cat", match=models.MatchValue(value="a"))])
    assert all(h.payload["cat"] == "a" for h in vc.search(like="v3", query_filter=only_a, limit=5))
    with pytest.raises(InvalidInputError, match="no such stored video"):
        vc.search(like="missing")
    with pytest.raises(InvalidInputError, match="exactly one"):
        vc.search("red", like="v3")
    with pytest.raises(InvalidInputError, match="exactly one"):
        vc.search()


def test_search_by_image(vc: VideoCollection, test_bundle: ModelBundle) -> None:
    size = test_bundle.manifest.image.image_size
    red = np.zeros((size, size, 3), np.uint8)
    red[..., 0] = 255
    emb = test_bundle.frame_encoder().encode(red[None])[0]
    frames = np.stack([emb] * 6)
    vc.upsert_embeddings("red-video", frames, np.arange(6.0))
    assert vc.search(image=red, limit=1)[0].video_id == "red-video"
    assert vc.search(image=np.stack([red, red]), limit=1)[0].video_id == "red-video"
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        vc.search(image=np.zeros((4, 4), np.float32))


def test_timeout_and_consistency_reach_a_server_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server here: the request qdrant-client would send is captured at its public method."""
    from vtr_qdrant.store.plan import StageOneQuery
    from vtr_qdrant.store.qdrant import QdrantClientBackend

    client = QdrantClient(url="http://127.0.0.1:9", check_compatibility=False)  # never contacted
    seen: dict[str, Any] = {}

    def query_points(name: str, **kw: Any) -> Any:
        from qdrant_client.http import models as rest

        seen.clear()
        seen.update(kw)
        return rest.QueryResponse(points=[])

    monkeypatch.setattr(client, "query_points", query_points)
    backend = QdrantClientBackend(client)
    q = StageOneQuery(np.ones(4, np.float32), limit=5, timeout=7, consistency=models.ReadConsistencyType.ALL)
    assert backend.query("c", [q]) == [[]]
    assert seen["timeout"] == 7 and seen["consistency"] == models.ReadConsistencyType.ALL
    backend.query("c", [StageOneQuery(np.ones(4, np.float32), limit=5)])
    assert seen["timeout"] == backend.timeout and "consistency" not in seen


def test_timeout_checked_and_ignored_by_embedded_engines(vc: VideoCollection) -> None:
    q = random_frames(np.random.default_rng(9), 1)[0]
    assert vc.search(q, limit=2, timeout=5, consistency=models.ReadConsistencyType.MAJORITY)  # local / Edge: no replicas
    for bad in (0, 1.5, True):
        with pytest.raises(InvalidInputError, match="timeout"):
            vc.search(q, timeout=bad)  # type: ignore[arg-type]


def test_add_embeddings_is_upsert_embeddings(vc: VideoCollection) -> None:
    frames = random_frames(np.random.default_rng(10), 3)
    ids = vc.add_embeddings("added", frames, np.arange(3.0))
    stored = vc.get("added")
    assert stored is not None and stored.point_ids == ids and np.allclose(stored.frames, frames, atol=1e-6)
