"""The stage-2 frames cache: stage 1 returns ids + payloads, frames come from an LRU or one by-id read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient

from vtr_qdrant import ConfigError, VideoCollection
from vtr_qdrant.store.points import Key, frames_digest
from vtr_qdrant.store.qdrant import QdrantClientBackend


class Spy(QdrantClientBackend):
    """Records what stage 1 asked for and which ids were read by id."""

    def __init__(self, client: QdrantClient, drop: Sequence[str] = ()) -> None:
        super().__init__(client)
        self.fetched: list[list[str]] = []
        self.with_frames: list[bool] = []
        self.frames_efs: list[int | None] = []
        self.drop = set(drop)

    def query(self, name, queries):  # type: ignore[no-untyped-def]
        self.with_frames.extend(q.with_frames for q in queries)
        self.frames_efs.extend(q.frames_hnsw_ef for q in queries)
        return super().query(name, queries)

    def fetch_frames(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        self.fetched.append(list(ids))
        out = super().fetch_frames(name, ids)
        return {k: v for k, v in out.items() if k not in self.drop}


@pytest.fixture
def spy(client: QdrantClient) -> Spy:
    return Spy(client)


def _fill(vc: VideoCollection, n: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vids = {f"v{i}": random_frames(rng, 6) for i in range(n)}
    for vid, f in vids.items():
        vc.upsert_embeddings(vid, f, np.arange(6) * 1.0)
    return vids


def _scores(hits) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {h.video_id: h.score for h in hits}


def test_second_search_reads_no_frames_and_scores_match_uncached(spy: Spy, test_bundle) -> None:  # type: ignore[no-untyped-def]
    vc = VideoCollection(spy, "c", test_bundle, frames_cache_size=64)
    vids = _fill(vc)
    q = vids["v3"][2]
    first = vc.search(q, limit=5)
    assert spy.with_frames == [False] and len(spy.fetched) == 1 and len(spy.fetched[0]) == 10
    second = vc.search(q, limit=5)
    assert len(spy.fetched) == 1, "every candidate was cached: no second read"
    uncached = VideoCollection(spy, "c", test_bundle, frames_cache_size=0).search(q, limit=5)
    assert spy.with_frames[-1] is True and len(spy.fetched) == 1, "cache off: frames come with stage 1"
    for hits in (second, uncached):
        assert [h.video_id for h in hits] == [h.video_id for h in first]
        assert np.allclose([h.score for h in hits], [h.score for h in first], atol=1e-6)
        assert [h.moment.peak for h in hits] == [h.moment.peak for h in first]
    assert first[0].video_id == "v3"


def test_reingested_frames_are_never_served_stale(spy: Spy, test_bundle) -> None:  # type: ignore[no-untyped-def]
    vc = VideoCollection(spy, "c", test_bundle, frames_cache_size=64)
    vids = _fill(vc)
    q = vids["v3"][2]
    assert vc.search(q, limit=1, aggregation="max")[0].score == pytest.approx(1.0, abs=1e-5)
    # same video id (same point id), new frames, within the same second as the first write
    new = random_frames(np.random.default_rng(99), 6)
    vc.upsert_embeddings("v3", new, np.arange(6) * 1.0)
    stored = vc.get("v3")
    assert stored is not None
    hit = {h.video_id: h for h in vc.search(q, limit=10, aggregation="max")}["v3"]
    expected = float((new @ q).max())
    assert hit.score == pytest.approx(expected, abs=1e-5)
    assert spy.fetched[-1] == [hit.point_id], "only the changed point is read again"


def test_digest_is_in_the_payload_and_tracks_content() -> None:
    rng = np.random.default_rng(0)
    a = random_frames(rng, 4)
    assert frames_digest(a) == frames_digest(a.copy())
    b = a.copy()
    b[0, 0] += 1e-3
    assert frames_digest(a) != frames_digest(b)
    assert frames_digest(a[:3]) != frames_digest(a)


def test_lru_is_bounded_and_keeps_serving(spy: Spy, test_bundle) -> None:  # type: ignore[no-untyped-def]
    vc = VideoCollection(spy, "c", test_bundle, frames_cache_size=4)
    vids = _fill(vc)
    for vid in ("v1", "v2", "v3"):
        hits = vc.search(vids[vid][0], limit=10)
        assert len(hits) == 10 and hits[0].video_id == vid
        assert len(vc.stage_two._frames) == 4
        assert {k[0] for k in vc.stage_two._frames} <= {h.point_id for h in hits}
    assert all(len(ids) >= 6 for ids in spy.fetched), "a 4-entry cache cannot hold 10 candidates"


def test_point_deleted_between_the_two_calls_is_dropped(client: QdrantClient, test_bundle) -> None:  # type: ignore[no-untyped-def]
    vc = VideoCollection(Spy(client), "c", test_bundle)
    vids = _fill(vc)
    gone = vc.get("v3")
    assert gone is not None
    # a back end whose by-id read no longer finds v3's point (deleted by another writer meanwhile)
    vc.backend = Spy(client, drop=[gone.point_ids[0]])
    hits = vc.search(vids["v3"][0], limit=10)
    assert "v3" not in {h.video_id for h in hits} and len(hits) == 9


def test_edge_backend_reads_frames_by_id(tmp_path: Path, test_bundle) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("qdrant_edge")
    from vtr_qdrant.store.edge import EdgeBackend

    with EdgeBackend(tmp_path / "edge", max_search_threads=1) as edge:
        vc = VideoCollection(edge, "c", test_bundle, frames_cache_size=64, index_frames=False)
        vids = _fill(vc)
        ref = VideoCollection(edge, "c", test_bundle, frames_cache_size=0)
        got = edge.fetch_frames("c", [p for v in ("v1", "v2") for p in vc.get(v).point_ids])  # type: ignore[union-attr]
        assert len(got) == 2
        for f in got.values():
            assert f.shape == (6, vc.dim) and f.dtype == np.float32
        q = vids["v7"][4]
        a, b = vc.search(q, limit=5), ref.search(q, limit=5)
        assert [h.video_id for h in a] == [h.video_id for h in b] and a[0].video_id == "v7"
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
        assert all(h.payload[Key.FRAMES_DIGEST] for h in a)


def test_bad_cache_size(spy: Spy, test_bundle) -> None:  # type: ignore[no-untyped-def]
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ConfigError, match="frames_cache_size"):
            VideoCollection(spy, "c", test_bundle, frames_cache_size=bad)  # type: ignore[arg-type]


def test_frames_hnsw_ef_reaches_stage_one(spy: Spy, test_bundle) -> None:  # type: ignore[no-untyped-def]
    from vtr_qdrant.store.plan import SCENES_HNSW_EF

    vids = _fill(VideoCollection(spy, "c", test_bundle))
    VideoCollection(spy, "c", test_bundle).search(vids["v1"][0], limit=3)  # "auto": the scenes graph's beam
    VideoCollection(spy, "c", test_bundle, frames_hnsw_ef=777).search(vids["v1"][0], limit=3)
    assert spy.frames_efs == [SCENES_HNSW_EF, 777]
