"""THE stage-1 plan: which ANN searches run, with which beam widths, and how they are fused.

A :class:`StageOneQuery` (what the caller wants) becomes a :class:`StageOnePlan` (what to run) in
one place, :func:`plan_stage_one`. Every back end executes the plan by a mechanical translation
into its own request types (qdrant-client ``QueryRequest`` for local mode and servers,
``qdrant_edge.QueryRequest`` for Qdrant Edge), so a rule such as "the frames prefetch gets its own,
wider beam" or the fusion constant exists once and cannot drift between engines;
``tests/store/test_congruence.py`` runs the same plans on both engines and compares candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from qdrant_client import models

from .points import VECTOR_FRAMES, VECTOR_POOLED

__all__ = ["FRAMES_HNSW_EF", "SCENES_HNSW_EF", "RRF_K", "StageOneQuery", "AnnSearch", "StageOnePlan", "plan_stage_one"]

#: Default HNSW beam width of the hybrid stage 1's frames-MaxSim prefetch (see StageOneQuery).
FRAMES_HNSW_EF = 4096
#: ... and of its scenes-MaxSim prefetch (collections with scene vectors: :mod:`.scenes`).
SCENES_HNSW_EF = 128

#: Reciprocal-rank-fusion constant: score = sum over prefetches of 1 / (RRF_K + rank). 2 is Qdrant's
#: own default, so a server's and local mode's plain ``Fusion.RRF`` and Edge's ``Rrf(k=2)`` agree.
RRF_K = 2


@dataclass(frozen=True)
class StageOneQuery:
    """What the caller asks of stage 1.

    Attributes:
        vector: (D,) float32 L2-normalised query embedding.
        limit: how many candidates to return.
        query_filter: payload filter, applied inside the ANN search.
        rescore: if True, the pooled-vector search fetches ``limit * rescore_factor`` points and
            MaxSim on the frame multivectors keeps the best ``limit``.
        rescore_factor: prefetch multiplier when rescoring.
        hybrid: frame-aware stage 1: the ``floor(limit/2)`` best points by MaxSim over the frames
            (the best frame's cosine) plus the best points by pooled cosine up to ``limit``, so a
            video whose matching moment is too short to move its pooled vector is still found.
            Fused with RRF over prefetches of ``limit // 2`` (frames) and ``limit`` (pooled): every
            frame-prefetch point outranks pooled-only points below rank ``limit // 2``, so the set
            is as described whatever the fusion constant. With ``rescore``, the main query orders
            the prefetched union by MaxSim instead (and may drop pooled-only points).
        with_frames: return the candidates' frame matrices.
        hnsw_ef: HNSW beam width for the pooled search (None: the back end's default).
        frames_hnsw_ef: HNSW beam width of the hybrid frames-MaxSim prefetch (None: the pooled
            search's beam). The ``frames`` graph is built with multivector-to-multivector
            MaxSim (whole-video likeness) but searched with one query vector (one moment), so its
            neighbourhoods fit the query badly and it needs a wide beam. Qdrant Edge, 12 frames x
            512-d: MaxSim top-50 recall vs exact on 10k videos 0.91 / 0.97 / 0.99 / 0.9995 at
            512 / 1024 / 2048 / 4096; hybrid stage-1 recall of the exhaustive top-10 at K=100 on
            30k videos 0.983 / 0.986 / 0.990 / 0.993 for 40 / 43 / 62 / 67 ms
            (``benchmarks/bench_recall.py --edge``).
        exact: brute-force every search (small collections, or to measure ANN recall).
        score_threshold: drop candidates scoring below this.
        aware_vector: the multivector the hybrid prefetch searches: ``VECTOR_FRAMES``, or
            ``VECTOR_SCENES`` in collections that have scene vectors (faster, better recall).
        timeout: server-side request timeout, seconds (None: the back end's); an embedded engine
            runs in-process and ignores it.
        consistency: qdrant-client ``ReadConsistency`` for a replicated server collection (ignored
            by local mode and Edge: one replica).
    """

    vector: np.ndarray
    limit: int
    query_filter: models.Filter | None = None
    rescore: bool = False
    rescore_factor: int = 4
    hybrid: bool = False
    with_frames: bool = True
    hnsw_ef: int | None = None
    frames_hnsw_ef: int | None = FRAMES_HNSW_EF
    exact: bool = False
    score_threshold: float | None = None
    aware_vector: str = VECTOR_FRAMES
    timeout: int | None = None
    consistency: Any = None


@dataclass(frozen=True)
class AnnSearch:
    """One nearest-neighbour search of the query vector.

    Attributes:
        using: the named vector searched: ``VECTOR_POOLED`` (the query as one vector) or
            ``VECTOR_FRAMES`` / ``VECTOR_SCENES`` (the query as a one-vector multivector: MaxSim = the
            best frame's, or best scene's, cosine).
        limit: how many points it returns.
        hnsw_ef: HNSW beam width (None: the engine's default).
        exact: brute force instead of HNSW.
    """

    using: str
    limit: int
    hnsw_ef: int | None = None
    exact: bool = False


@dataclass(frozen=True)
class StageOnePlan:
    """What a back end runs for one stage-1 query, in one request.

    Attributes:
        vector: (D,) float32 query embedding.
        query_filter: applied inside every search of ``prefetch`` (or inside ``main`` when there is none).
        prefetch: searches whose results ``main`` combines; empty when ``main`` searches the collection.
        main: ``"rrf"`` (fuse the prefetches' ranks with :data:`RRF_K`) or a search (over the
            prefetched points, or the whole collection when ``prefetch`` is empty).
        limit: how many candidates come back.
        with_frames: return the ``frames`` multivector of each candidate.
        score_threshold: drop candidates scoring below this.
    """

    vector: np.ndarray
    query_filter: models.Filter | None
    prefetch: tuple[AnnSearch, ...]
    main: AnnSearch | Literal["rrf"]
    limit: int
    with_frames: bool
    score_threshold: float | None


def plan_stage_one(q: StageOneQuery, *, default_hnsw_ef: int | None = None) -> StageOnePlan:
    """The one stage-1 planner every back end executes.

    Args:
        q: the query.
        default_hnsw_ef: the back end's beam width when ``q.hnsw_ef`` is None (Qdrant Edge sets one;
            a server uses its collection's setting).

    Returns:
        The plan: pooled-only (one search), rescored (pooled prefetch -> frames MaxSim), or hybrid
        (pooled + frames prefetches fused by RRF, or rescored by MaxSim with ``rescore``).
    """
    vec = np.ascontiguousarray(q.vector, dtype=np.float32)
    ef = q.hnsw_ef if q.hnsw_ef is not None else default_hnsw_ef
    pooled_k = q.limit * q.rescore_factor if (q.rescore and not q.hybrid) else q.limit
    pooled = AnnSearch(VECTOR_POOLED, pooled_k, ef, bool(q.exact))
    maxsim = AnnSearch(VECTOR_FRAMES, q.limit)  # rescoring: exact MaxSim over the prefetched points
    prefetch: tuple[AnnSearch, ...] = ()
    main: AnnSearch | Literal["rrf"]
    if q.hybrid:
        prefetch = (pooled,)
        if q.limit // 2:
            # the frames graph has its own beam (StageOneQuery.frames_hnsw_ef), else the pooled one
            frames_ef = q.frames_hnsw_ef if q.frames_hnsw_ef is not None else ef
            prefetch += (AnnSearch(q.aware_vector, q.limit // 2, frames_ef, bool(q.exact)),)
        main = maxsim if q.rescore else "rrf"
    elif q.rescore:
        prefetch, main = (pooled,), maxsim
    else:
        main = AnnSearch(VECTOR_POOLED, q.limit, ef, bool(q.exact))
    return StageOnePlan(vec, q.query_filter, prefetch, main, q.limit, q.with_frames, q.score_threshold)
