"""Scene vectors: what they summarise, how collections get them, and that the frame-aware stage 1
finds a video by one short moment through them (local mode and Qdrant Edge alike)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient

from vtr_qdrant import VideoCollection
from vtr_qdrant.store.plan import FRAMES_HNSW_EF, SCENES_HNSW_EF, StageOneQuery, plan_stage_one
from vtr_qdrant.store.points import VECTOR_FRAMES, VECTOR_SCENES
from vtr_qdrant.store.scenes import max_scenes, scene_vectors


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_scenes_follow_the_cuts() -> None:
    rng = np.random.default_rng(0)
    a, b, c = _unit(rng.standard_normal((3, 64)))
    # 12 frames: 5 of scene a, 3 of b, 4 of c, each frame its scene plus a little noise
    frames = _unit(np.concatenate([a + 0.05 * rng.standard_normal((5, 64)), b + 0.05 * rng.standard_normal((3, 64)),
                                   c + 0.05 * rng.standard_normal((4, 64))]))
    s = scene_vectors(frames, 3)
    assert s.shape == (3, 64) and s.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1, atol=1e-6)
    assert [int(np.argmax(s @ np.stack([a, b, c]).T, axis=1)[i]) for i in range(3)] == [0, 1, 2]  # in time order
    assert min(float(s[i] @ x) for i, x in enumerate((a, b, c))) > 0.95  # random 64-d directions: ~0.1
    assert scene_vectors(frames).shape == (4, 64)  # max_scenes(12) = 4: one scene split in two, still close
    assert scene_vectors(frames[:2]).shape == (2, 64) and max_scenes(1) == 1 and max_scenes(30) == 10


def test_plan_searches_the_collections_aware_vector() -> None:
    v = np.ones(8, np.float32)
    for vec in (VECTOR_FRAMES, VECTOR_SCENES):
        plan = plan_stage_one(StageOneQuery(v, limit=10, hybrid=True, aware_vector=vec, frames_hnsw_ef=64))
        assert [(s.using, s.hnsw_ef) for s in plan.prefetch][1] == (vec, 64)


@pytest.fixture(params=["local", "edge"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "edge":
        pytest.importorskip("qdrant_edge")
        from vtr_qdrant.store.edge import EdgeBackend

        return EdgeBackend(tmp_path / "edge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QdrantClient(":memory:")


def test_new_collections_index_scenes_and_find_a_short_moment(backend: Any) -> None:
    vc = VideoCollection(backend, "sc", dim=32)
    assert vc.schema.scenes_indexed and vc.frames_indexed and vc.frames_hnsw_ef == SCENES_HNSW_EF
    rng = np.random.default_rng(1)
    for i in range(30):
        vc.upsert_embeddings(f"v{i}", random_frames(rng, 12), np.arange(12.0))
    target = random_frames(rng, 12)
    moment = _unit(rng.standard_normal(32))
    target[6:9] = _unit(moment + 0.05 * rng.standard_normal((3, 32)))  # a 3-frame scene of v99 is the query
    vc.upsert_embeddings("v99", target, np.arange(12.0))
    seen: list[StageOneQuery] = []
    real = vc.backend.query

    def spy(name: str, queries: Any) -> Any:
        seen.extend(queries)
        return real(name, queries)

    vc.backend.query = spy  # type: ignore[method-assign]
    hits = vc.search(moment, limit=1, candidates=2, aggregation="max")
    assert hits[0].video_id == "v99" and 6.0 <= hits[0].moment.peak <= 8.0
    assert seen[0].hybrid and seen[0].aware_vector == VECTOR_SCENES  # the scenes graph was searched
    reopened = VideoCollection(backend, "sc", dim=32)
    assert reopened.schema.scenes_indexed and reopened.search(moment, limit=1, candidates=2)[0].video_id == "v99"


def test_collections_with_a_frames_graph_keep_working(backend: Any) -> None:
    """A collection created before scene vectors (frames graph) opens and searches its frames."""
    from vtr_qdrant.store.qdrant import as_backend
    from vtr_qdrant.store.schema import CollectionSchema, create_collection
    from vtr_qdrant.video.sampling import SamplingConfig

    b = as_backend(backend)
    create_collection(b, "old", CollectionSchema(dim=32, sampling=SamplingConfig(), frames_indexed=True))
    vc = VideoCollection(backend, "old", dim=32)
    assert not vc.schema.scenes_indexed and vc.frames_indexed and vc.frames_hnsw_ef == FRAMES_HNSW_EF
    rng = np.random.default_rng(2)
    f = random_frames(rng, 6)
    vc.upsert_embeddings("a", f, np.arange(6.0))
    assert vc.search(f[3], limit=1, aggregation="max")[0].video_id == "a"
