"""The hybrid stage 1 searches the frames multivector graph with a wider beam than the pooled one."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from vtr_qdrant.store.points import VECTOR_FRAMES, VECTOR_POOLED
from vtr_qdrant.store.qdrant import FRAMES_HNSW_EF, QdrantClientBackend, StageOneQuery


def _prefetch_ef(req) -> dict[str, int | None]:
    return {p.using: (p.params.hnsw_ef if p.params else None) for p in req.prefetch}


def test_frames_prefetch_gets_the_wider_beam() -> None:
    v = np.ones(8, np.float32) / np.sqrt(8)
    backend = QdrantClientBackend(QdrantClient(":memory:"))
    q = StageOneQuery(vector=v, limit=100, hybrid=True, hnsw_ef=128)
    assert q.frames_params_ef() == FRAMES_HNSW_EF
    assert _prefetch_ef(backend._request(q)) == {VECTOR_POOLED: 128, VECTOR_FRAMES: FRAMES_HNSW_EF}
    wide = StageOneQuery(
        vector=v, limit=100, hybrid=True, hnsw_ef=8192
    )  # never narrower than the pooled beam
    assert _prefetch_ef(backend._request(wide))[VECTOR_FRAMES] == 8192
    off = StageOneQuery(vector=v, limit=100, hybrid=True, frames_hnsw_ef=None)
    assert _prefetch_ef(backend._request(off)) == {VECTOR_POOLED: None, VECTOR_FRAMES: None}


def test_edge_frames_prefetch_gets_the_wider_beam(tmp_path) -> None:
    pytest.importorskip("qdrant_edge")
    from vtr_qdrant.store.edge import EdgeBackend

    backend = EdgeBackend(tmp_path, hnsw_ef=256)
    req = backend._request(StageOneQuery(vector=np.ones(8, np.float32), limit=10, hybrid=True))
    efs = sorted(p.params.hnsw_ef for p in req.prefetches)
    assert efs == [256, FRAMES_HNSW_EF]
