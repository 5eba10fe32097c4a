"""VideoCollection end to end on qdrant-client local mode (in memory and on disk)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient, models

from vtr_qdrant import (
    CollectionMismatchError,
    ConfigError,
    EmbeddedVideo,
    InvalidInputError,
    SamplingConfig,
    SoftmaxPooling,
    VideoCollection,
)
from vtr_qdrant.store.points import Key, max_frames_per_point, point_id


def _fill(vc: VideoCollection, n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vids = {}
    for i in range(n):
        f = random_frames(rng, 8)
        vids[f"v{i}"] = f
        vc.upsert_embeddings(f"v{i}", f, np.arange(8) * 0.5, metadata={"cat": "odd" if i % 2 else "even", "n": i})
    return vids


def test_create_upsert_search(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle, indexed_fields={"cat": "keyword"})
    vids = _fill(vc)
    assert vc.count() == 12 and vc.count_points() == 12
    # a query vector equal to one frame of v5 must find v5 first with max-frame aggregation
    q = vids["v5"][3]
    hits = vc.search(q, limit=3, aggregation="max", candidates=12)
    assert hits[0].video_id == "v5"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].moment.peak == pytest.approx(1.5)  # frame 3 at 0.5 s spacing
    assert hits[0].moment.start <= 1.5 <= hits[0].moment.end
    assert hits[0].payload["cat"] == "odd" and hits[0].payload[Key.MODEL_FINGERPRINT] == test_bundle.fingerprint
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    # text search runs through the bundle's tokenizer and text tower
    text_hits = vc.search("a red circle", limit=5)
    assert len(text_hits) == 5 and len({h.video_id for h in text_hits}) == 5


def test_filters_apply_inside_stage_one(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle, indexed_fields={"cat": "keyword"})
    vids = _fill(vc)
    only_even = models.Filter(must=[models.FieldCondition(key="cat", match=models.MatchValue(value="even"))])
    for rescore in (False, True):
        hits = vc.search(vids["v5"][0], limit=20, query_filter=only_even, rescore=rescore)
        assert len(hits) == 6
        assert all(h.payload["cat"] == "even" for h in hits)
    few = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(lt=3))])
    assert {h.video_id for h in vc.search("blue square", limit=10, query_filter=few)} == {"v0", "v1", "v2"}
    assert vc.count(few) == 3


def test_search_matches_numpy_reference_ranking(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle)
    vids = _fill(vc, n=15, seed=3)
    q = vc.encode_text(["the green dog runs"])[0]
    agg = SoftmaxPooling(0.05)
    hits = vc.search(q, limit=15, aggregation=agg, candidates=15)
    ref = {}
    for vid, f in vids.items():
        w = np.exp((f @ q) / 0.05 - ((f @ q) / 0.05).max())
        w /= w.sum()
        pooled = (w[:, None] * f).sum(0)
        ref[vid] = float(pooled @ q / np.linalg.norm(pooled))
    assert [h.video_id for h in hits] == sorted(ref, key=lambda v: -ref[v])
    for h in hits:
        assert h.score == pytest.approx(ref[h.video_id], abs=1e-5)


def test_segments_are_grouped_per_video(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "long", test_bundle, sampling=SamplingConfig(fps=1.0, segment_seconds=10.0))
    rng = np.random.default_rng(1)
    long_frames = random_frames(rng, 30)
    ts = np.arange(30, dtype=np.float64) + 0.5
    ids = vc.upsert_embeddings("long", long_frames, ts, duration=30.0)
    assert len(ids) == 3 and ids[0] == point_id("long", 0, vc.get("long").payload[Key.VERSION])  # type: ignore[union-attr]
    vc.upsert_embeddings("short", random_frames(rng, 5), np.arange(5) + 0.5)
    assert vc.count() == 2 and vc.count_points() == 4
    hits = vc.search(long_frames[25], limit=5, aggregation="max")
    assert [h.video_id for h in hits][:1] == ["long"] and len(hits) == 2
    assert hits[0].segment_index == 2
    assert 20.0 <= hits[0].moment.start <= 25.5 <= hits[0].moment.end <= 30.0
    stored = vc.get("long")
    assert stored is not None and stored.frames.shape == (30, 32)
    np.testing.assert_allclose(stored.timestamps, ts)
    np.testing.assert_allclose(stored.frames, long_frames, atol=1e-6)
    # re-ingesting with fewer segments removes the stale ones
    vc.upsert_embeddings("long", long_frames[:12], ts[:12])
    assert vc.count_points() == 3 and len(vc.get("long").point_ids) == 2  # type: ignore[union-attr]


def test_multivector_limit_splits_points(test_bundle):  # type: ignore[no-untyped-def]
    assert max_frames_per_point(512) == 2047
    from vtr_qdrant.store.points import make_points

    f = np.ones((5000, 512), np.float32) / np.sqrt(512)
    pts = make_points("x", f, np.arange(5000.0), model_fingerprint="fp")
    assert [len(p.frames) for p in pts] == [1667, 1667, 1666]  # fewest equal parts under the limit
    assert all(p.frames.size < 1_048_576 for p in pts)


def test_idempotent_reupsert_and_delete(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle)
    vids = _fill(vc, n=5)
    assert vc.optimize() is False  # qdrant-client optimises on its own
    _fill(vc, n=5)
    assert vc.count() == 5
    assert vc.delete("v2") == 1 and vc.count() == 4
    assert vc.get("v2") is None
    assert vc.delete("v2") == 0
    got = vc.get("v1")
    assert got is not None
    np.testing.assert_allclose(got.frames, vids["v1"], atol=1e-6)


def test_batch_upsert_validates_everything_first(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle)
    rng = np.random.default_rng(0)
    good = EmbeddedVideo("good", random_frames(rng, 4), np.arange(4.0))
    bad = EmbeddedVideo("bad", np.full((4, 32), np.nan, np.float32), np.arange(4.0))
    with pytest.raises(InvalidInputError, match="NaN"):
        vc.upsert_embeddings_batch([good, bad])
    assert vc.count_points() == 0
    out = vc.upsert_embeddings_batch([good])
    assert list(out) == ["good"] and vc.count() == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(frames=np.zeros((0, 32)), timestamps=np.zeros(0)), "at least one frame"),
        (dict(frames=np.ones((3, 16)), timestamps=np.arange(3.0)), r"shape \(F, 32\)"),
        (dict(frames=np.ones((3, 32)), timestamps=np.arange(4.0)), "to match the frames"),
        (dict(frames=np.ones((3, 32)), timestamps=np.array([0.0, 2.0, 1.0])), "non-decreasing"),
        (dict(frames=np.ones((3, 32), dtype=np.int64), timestamps=np.arange(3.0)), "float array"),
        (dict(frames=np.zeros((3, 32)), timestamps=np.arange(3.0)), "zero vector"),
        (dict(frames=np.ones((3, 32)), timestamps=np.arange(3.0), metadata={"video_id": "x"}), "reserved"),
    ],
)
def test_bad_upserts_write_nothing(client, test_bundle, kwargs, match):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle)
    with pytest.raises(InvalidInputError, match=match):
        vc.upsert_embeddings("v", **kwargs)
    assert vc.count_points() == 0


def test_bad_searches(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle)
    _fill(vc, n=3)
    with pytest.raises(InvalidInputError, match="empty"):
        vc.search("   ")
    with pytest.raises(InvalidInputError, match="must be a str"):
        vc.search_batch(["ok", 42])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="limit must be an int from 1 to 100,000"):
        vc.search("red", limit=0)
    with pytest.raises(InvalidInputError, match=r"shape \(32,\)"):
        vc.search(np.ones(5))
    with pytest.raises(InvalidInputError, match="finite and non-zero"):
        vc.search(np.full(32, np.nan))
    with pytest.raises(ConfigError, match="unknown aggregation"):
        vc.search("red", aggregation="median")
    with pytest.raises(ConfigError, match="needs a trained X-Pool head"):
        vc.search("red", aggregation="xpool")


def test_search_batch_equals_single_searches(client, test_bundle):  # type: ignore[no-untyped-def]
    vc = VideoCollection(client, "videos", test_bundle)
    _fill(vc)
    queries = ["a red circle", "blue square on green", "the cat"]
    batch = vc.search_batch(queries, limit=4)
    for q, hits in zip(queries, batch):
        single = vc.search(q, limit=4)
        assert [h.video_id for h in hits] == [h.video_id for h in single]
        assert [h.score for h in hits] == pytest.approx([h.score for h in single])


def test_reopen_checks_model_and_settings(tmp_path: Path, test_bundle, other_bundle):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "q")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = QdrantClient(path=path)
    vc = VideoCollection(c, "videos", test_bundle)
    _fill(vc, n=3)
    c.close()
    c = QdrantClient(path=path)
    again = VideoCollection(c, "videos", test_bundle)
    assert again.count() == 3 and again.sampling == SamplingConfig()
    with pytest.raises(CollectionMismatchError, match="fingerprint"):
        VideoCollection(c, "videos", other_bundle)
    with pytest.raises(CollectionMismatchError, match="sampling"):
        VideoCollection(c, "videos", test_bundle, sampling=SamplingConfig(num_frames=8))
    with pytest.raises(CollectionMismatchError, match="dimension 32"):
        VideoCollection(c, "videos", dim=64)
    # without a bundle: embedding-level access works, text search explains what is missing
    bare = VideoCollection(c, "videos")
    assert bare.dim == 32 and bare.fingerprint == test_bundle.fingerprint
    with pytest.raises(ConfigError, match="needs a model bundle"):
        bare.search("red")
    c.close()


def test_foreign_collection_and_missing(client, test_bundle):  # type: ignore[no-untyped-def]
    client.create_collection("plain", vectors_config=models.VectorParams(size=32, distance=models.Distance.COSINE))
    with pytest.raises(CollectionMismatchError, match="not created by vtr-qdrant"):
        VideoCollection(client, "plain", test_bundle)
    with pytest.raises(ConfigError, match="does not exist"):
        VideoCollection(client, "absent", test_bundle, create=False)
    with pytest.raises(ConfigError, match="needs a model bundle"):
        VideoCollection(client, "new")
    with pytest.raises(TypeError, match="QdrantClient"):
        VideoCollection("http://localhost:6333", "x", test_bundle)  # type: ignore[arg-type]


def _random_head(dim: int = 32, seed: int = 0):  # type: ignore[no-untyped-def]
    from vtr_qdrant.search.xpool import XPoolHead

    rng = np.random.default_rng(seed)
    sd = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in XPoolHead.identity(dim).state_dict().items()}
    return XPoolHead.from_state_dict(sd, num_heads=2)


def test_xpool_search_matches_direct_head_and_cache(client, test_bundle):  # type: ignore[no-untyped-def]
    head = _random_head()
    vc = VideoCollection(client, "videos", test_bundle, aggregation=head, xpool_cache_size=8)
    rng = np.random.default_rng(4)
    vids = {}
    for i in range(12):
        n = 3 + i % 6  # variable frame counts: masking, not padding
        vids[f"v{i}"] = random_frames(rng, n)
        vc.upsert_embeddings(f"v{i}", vids[f"v{i}"], np.arange(n) * 1.0)
    q = vc.encode_text(["a red circle"])[0]
    ref = {v: float(head.similarity(q[None].astype(np.float64), f[None].astype(np.float64))[0, 0]) for v, f in vids.items()}
    for _ in range(2):  # the second pass is served from the LRU cache (8 entries < 12 candidates)
        hits = vc.search(q, limit=12, candidates=12)
        assert [h.video_id for h in hits] == sorted(ref, key=lambda v: -ref[v])
        for h in hits:
            assert h.score == pytest.approx(ref[h.video_id], abs=1e-5)
            assert sum(h.moment.weights) == pytest.approx(1.0, abs=1e-5)
    assert len(vc.stage_two._states) == 8
    # uncached path gives the same scores
    vc0 = VideoCollection(client, "videos", test_bundle, aggregation=head, xpool_cache_size=0)
    assert [h.score for h in vc0.search(q, limit=12, candidates=12)] == pytest.approx([h.score for h in hits], abs=1e-6)


def test_bundle_with_added_head_opens_headless_collection(client, test_bundle, tmp_path):  # type: ignore[no-untyped-def]
    import shutil

    from vtr_qdrant.model.bundle import ModelBundle
    from vtr_qdrant.model.manifest import XPoolSpec, write_manifest

    vc = VideoCollection(client, "videos", test_bundle)
    vids = _fill(vc, n=6)
    root = tmp_path / "with_head"
    shutil.copytree(test_bundle.path, root)
    head = _random_head(seed=3)
    head.save(root / "xpool.npz")
    write_manifest(root, test_bundle.manifest.model_copy(update={"xpool": XPoolSpec(file="xpool.npz", num_heads=2)}))
    headed = ModelBundle.load(root)
    assert headed.fingerprint != test_bundle.fingerprint  # the bundle differs ...
    assert headed.towers_fingerprint == test_bundle.towers_fingerprint == test_bundle.fingerprint  # ... its vectors do not
    vx = VideoCollection(client, "videos", headed, aggregation="xpool")
    q = vids["v2"][0]
    hits = vx.search(q, limit=6)
    ref = head.similarity(q[None].astype(np.float64), np.stack(list(vids.values())).astype(np.float64))[0]
    assert [h.video_id for h in hits] == [list(vids)[i] for i in np.argsort(-ref)]


def test_frame_aware_stage_one_finds_short_moments(client, test_bundle):  # type: ignore[no-untyped-def]
    """One matching frame in twelve barely moves the pooled vector; the frames prefetch still finds it."""
    vc = VideoCollection(client, "videos", test_bundle)
    assert vc.frames_indexed and vc.info()["frames_indexed"]
    rng = np.random.default_rng(11)
    q = random_frames(rng, 1)[0]
    batch = [EmbeddedVideo(f"d{i}", random_frames(rng, 12), np.arange(12.0)) for i in range(150)]
    needle = random_frames(rng, 12)
    needle[7] = q
    batch.append(EmbeddedVideo("needle", needle, np.arange(12.0)))
    vc.upsert_embeddings_batch(batch)
    pooled_only = vc.search(q, limit=5, candidates=10, aggregation="max", hybrid=False)
    assert "needle" not in [h.video_id for h in pooled_only]  # the failure mode being fixed
    hits = vc.search(q, limit=5, candidates=10, aggregation="max")
    assert hits[0].video_id == "needle" and hits[0].moment.peak == 7.0
    assert len(vc.search(q, limit=10, candidates=10, hybrid=True)) == 10  # K candidates, not fewer
    # a collection created without the frame index stays pooled-only unless asked
    plain = VideoCollection(client, "plain", test_bundle, index_frames=False)
    assert not plain.frames_indexed and not VideoCollection(client, "plain", test_bundle).frames_indexed


def test_moment_crosses_a_segment_boundary(client: QdrantClient) -> None:
    """A long video stored as 4-second segments: a match spanning 3-6 s is reported whole."""
    from vtr_qdrant.video.sampling import SamplingConfig

    vc = VideoCollection(client, "long", dim=32, sampling=SamplingConfig(num_frames=12, segment_seconds=4.0))
    rng = np.random.default_rng(5)
    frames = random_frames(rng, 12)
    q = random_frames(rng, 1)[0]
    frames[3:6] = q + 0.05 * random_frames(rng, 3)  # frames at 3.5, 4.5, 5.5 s: across the 4 s edge
    frames /= np.linalg.norm(frames, axis=1, keepdims=True)
    ids = vc.upsert_embeddings("long", frames, np.arange(12) + 0.5, duration=12.0)
    assert len(ids) == 3
    (hit,) = vc.search(q, limit=1, aggregation="softmax")
    assert hit.segment_index in (0, 1)
    assert (hit.moment.start, hit.moment.end) == (3.0, 6.0)
