"""Congruence: qdrant-client local mode and Qdrant Edge execute the same stage-1 plans alike.

The same small collection goes into both engines; for each plan (pooled only, frame-aware hybrid,
rescored, both, each with and without a payload filter) both must return the same candidates in
the same order with the same scores. RRF gives equal scores to points at equal ranks of different
prefetches, and engines may break such ties differently, so ties are compared as sets.
"""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from vtr_qdrant.store.backend import Candidate, StorageBackend
from vtr_qdrant.store.plan import StageOneQuery
from vtr_qdrant.store.points import VECTOR_SCENES, Key, make_points
from vtr_qdrant.store.qdrant import QdrantClientBackend

pytest.importorskip("qdrant_edge")
from vtr_qdrant.store.edge import EdgeBackend  # noqa: E402

DIM, VIDEOS, NAME = 16, 80, "congruence"


def _fill(backend: StorageBackend) -> None:
    rng = np.random.default_rng(7)
    backend.create_collection(NAME, dim=DIM, metadata={}, index_frames=True, index_scenes=True)
    backend.create_payload_index(NAME, "category", "keyword")
    points = []
    for v in range(VIDEOS):
        f = rng.standard_normal((int(rng.integers(3, 9)), DIM)).astype(np.float32)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        ts = np.arange(len(f), dtype=np.float64)
        points += make_points(f"v{v}", f, ts, model_fingerprint="fp", metadata={"category": "ab"[v % 2]}, scenes=True)
    backend.upsert(NAME, points)


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory):
    local = QdrantClientBackend(QdrantClient(":memory:"))
    edge = EdgeBackend(tmp_path_factory.mktemp("edge"))
    for b in (local, edge):
        _fill(b)
    yield local, edge
    edge.close()


def _groups(cands: list[Candidate]) -> list[frozenset[str]]:
    """Candidate video ids in rank order, equal scores (RRF ties) grouped as sets."""
    groups: list[set[str]] = []
    last = None
    for c in cands:
        if last is None or abs(c.score - last) > 1e-9:
            groups.append(set())
        groups[-1].add(str(c.payload[Key.VIDEO_ID]))
        last = c.score
    return [frozenset(g) for g in groups]


PLANS = {
    "pooled": {},
    "hybrid": {"hybrid": True},
    "rescore": {"rescore": True},
    "hybrid+rescore": {"hybrid": True, "rescore": True},
    "hybrid-scenes": {"hybrid": True, "aware_vector": VECTOR_SCENES},
    "hybrid-scenes+rescore": {"hybrid": True, "rescore": True, "aware_vector": VECTOR_SCENES},
}
FILTERS = {
    "no filter": None,
    "category=a": models.Filter(must=[models.FieldCondition(key="category", match=models.MatchValue(value="a"))]),
}


@pytest.mark.parametrize("flt", list(FILTERS))
@pytest.mark.parametrize("plan", list(PLANS))
def test_same_candidates_same_order(backends, plan: str, flt: str) -> None:
    local, edge = backends
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    stage1 = [
        StageOneQuery(vector=q, limit=12, query_filter=FILTERS[flt], exact=True, with_frames=True, **PLANS[plan])
        for q in queries
    ]
    got_local, got_edge = local.query(NAME, stage1), edge.query(NAME, stage1)
    for a, b in zip(got_local, got_edge):
        assert len(a) == len(b) == 12
        assert _groups(a) == _groups(b)
        for ca, cb in zip(a, b):
            assert ca.score == pytest.approx(cb.score, abs=1e-5)
        frames_a = {c.id: c.frames for c in a}
        for c in b:
            np.testing.assert_allclose(frames_a[c.id], c.frames, atol=1e-6)
        if flt != "no filter":
            assert {c.payload["category"] for c in a} == {"a"}
