"""THE stage-1 plan (vtr_qdrant.store.plan) and its translation by each back end."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from vtr_qdrant.store.plan import FRAMES_HNSW_EF, RRF_K, AnnSearch, StageOneQuery, plan_stage_one
from vtr_qdrant.store.points import VECTOR_FRAMES, VECTOR_POOLED
from vtr_qdrant.store.qdrant import QdrantClientBackend

V = np.ones(8, np.float32) / np.sqrt(8)


def _efs(plan) -> dict[str, int | None]:
    return {s.using: s.hnsw_ef for s in plan.prefetch}


def test_pooled_only_is_one_search_with_the_filter_on_it() -> None:
    plan = plan_stage_one(StageOneQuery(vector=V, limit=7, hnsw_ef=64, exact=True))
    assert plan.prefetch == ()
    assert plan.main == AnnSearch(VECTOR_POOLED, 7, 64, True)


def test_hybrid_prefetches_pooled_k_and_frames_half_fused_by_rrf() -> None:
    plan = plan_stage_one(StageOneQuery(vector=V, limit=100, hybrid=True, hnsw_ef=128))
    assert plan.main == "rrf"
    assert [(s.using, s.limit) for s in plan.prefetch] == [(VECTOR_POOLED, 100), (VECTOR_FRAMES, 50)]
    assert RRF_K == 2  # Qdrant's default: plain Fusion.RRF on a server means the same
    one = plan_stage_one(StageOneQuery(vector=V, limit=1, hybrid=True))
    assert [s.using for s in one.prefetch] == [VECTOR_POOLED]  # limit // 2 == 0: no frames prefetch


def test_rescore_prefetches_factor_k_then_maxsim() -> None:
    plan = plan_stage_one(StageOneQuery(vector=V, limit=10, rescore=True, rescore_factor=3))
    assert [(s.using, s.limit) for s in plan.prefetch] == [(VECTOR_POOLED, 30)]
    assert plan.main == AnnSearch(VECTOR_FRAMES, 10)
    hybrid = plan_stage_one(StageOneQuery(vector=V, limit=10, rescore=True, hybrid=True))
    assert [(s.using, s.limit) for s in hybrid.prefetch] == [(VECTOR_POOLED, 10), (VECTOR_FRAMES, 5)]
    assert hybrid.main == AnnSearch(VECTOR_FRAMES, 10)


def test_frames_prefetch_gets_its_own_beam() -> None:
    assert _efs(plan_stage_one(StageOneQuery(vector=V, limit=100, hybrid=True, hnsw_ef=128))) == {
        VECTOR_POOLED: 128,
        VECTOR_FRAMES: FRAMES_HNSW_EF,
    }
    narrow = StageOneQuery(vector=V, limit=100, hybrid=True, hnsw_ef=512, frames_hnsw_ef=64)  # honoured as given
    assert _efs(plan_stage_one(narrow)) == {VECTOR_POOLED: 512, VECTOR_FRAMES: 64}
    off = StageOneQuery(vector=V, limit=100, hybrid=True, frames_hnsw_ef=None)
    assert _efs(plan_stage_one(off)) == {VECTOR_POOLED: None, VECTOR_FRAMES: None}
    # a back end's default beam counts as the pooled beam, for the frames prefetch too
    assert _efs(plan_stage_one(off, default_hnsw_ef=256)) == {VECTOR_POOLED: 256, VECTOR_FRAMES: 256}


def test_qdrant_client_request_follows_the_plan() -> None:
    backend = QdrantClientBackend(QdrantClient(":memory:"))
    req = backend._request(StageOneQuery(vector=V, limit=100, hybrid=True, hnsw_ef=128))
    assert {p.using: p.params.hnsw_ef for p in req.prefetch} == {VECTOR_POOLED: 128, VECTOR_FRAMES: FRAMES_HNSW_EF}
    assert [p.limit for p in req.prefetch] == [100, 50]


def test_edge_request_follows_the_plan(tmp_path) -> None:
    pytest.importorskip("qdrant_edge")
    from vtr_qdrant.store.edge import EdgeBackend

    backend = EdgeBackend(tmp_path, hnsw_ef=256)
    req = backend._request(StageOneQuery(vector=np.ones(8, np.float32), limit=10, hybrid=True))
    efs = sorted(p.params.hnsw_ef for p in req.prefetches)
    assert efs == [256, FRAMES_HNSW_EF]
