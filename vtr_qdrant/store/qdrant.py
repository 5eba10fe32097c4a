"""The storage seam: every call :class:`~vtr_qdrant.collection.VideoCollection` makes to Qdrant.

:class:`StorageBackend` is the small interface (create/inspect a collection, upsert, one-call
two-stage query, scroll, delete, count). :class:`QdrantClientBackend` implements it over
``qdrant_client.QdrantClient`` — local mode (``:memory:``, ``path=``) or a server (``url=``), the same
code. A Qdrant Edge back end implements the same interface; nothing outside it changes.
Filters are ``qdrant_client.models.Filter`` objects, passed through untouched.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from .points import VECTOR_FRAMES, VECTOR_POOLED, PointData

__all__ = ["Candidate", "StageOneQuery", "StorageBackend", "QdrantClientBackend", "as_backend"]

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A point returned by stage 1.

    Attributes:
        id: point id.
        score: stage-1 score (cosine on the pooled vector, or MaxSim when rescored).
        payload: the point's payload.
        frames: (F, D) float32 frame embeddings, or None when not requested.
    """

    id: str
    score: float
    payload: dict[str, Any]
    frames: np.ndarray | None = None


#: Default HNSW beam width of the hybrid stage 1's frames-MaxSim prefetch (see StageOneQuery).
FRAMES_HNSW_EF = 4096


@dataclass(frozen=True)
class StageOneQuery:
    """Parameters of one stage-1 query.

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
        hnsw_ef: HNSW beam width for the pooled search (None: server default).
        frames_hnsw_ef: HNSW beam width of the hybrid frames-MaxSim prefetch (the larger of this and
            ``hnsw_ef`` is used). The ``frames`` graph is built with multivector-to-multivector
            MaxSim (whole-video likeness) but searched with one query vector (one moment), so its
            neighbourhoods fit the query badly and it needs a wide beam. Qdrant Edge, 12 frames x
            512-d: MaxSim top-50 recall vs exact on 10k videos 0.91 / 0.97 / 0.99 / 0.9995 at
            512 / 1024 / 2048 / 4096; hybrid stage-1 recall of the exhaustive top-10 at K=100 on
            30k videos 0.983 / 0.986 / 0.990 / 0.993 for 40 / 43 / 62 / 67 ms
            (``benchmarks/bench_recall.py --edge``).
        exact: brute-force the pooled search (small collections, or to measure ANN recall).
        score_threshold: drop candidates scoring below this.
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

    def frames_params_ef(self) -> int | None:
        """The beam width for the frames prefetch: max(frames_hnsw_ef, hnsw_ef), None if neither is set."""
        given = [x for x in (self.frames_hnsw_ef, self.hnsw_ef) if x]
        return max(given) if given else None


class StorageBackend(ABC):
    """What VideoCollection needs from a vector store."""

    @abstractmethod
    def collection_exists(self, name: str) -> bool: ...

    @abstractmethod
    def create_collection(self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False) -> None:
        """Create ``frames`` (multivector, cosine, MAX_SIM; HNSW only if ``index_frames``) and ``pooled`` (cosine, HNSW)."""

    @abstractmethod
    def collection_schema(self, name: str) -> dict[str, Any]:
        """``{"metadata": {...}, "vectors": {name: {"size": int, "multivector": bool}}}``."""

    @abstractmethod
    def create_payload_index(self, name: str, field: str, schema: str) -> None:
        """Index a payload field; ``schema`` is a Qdrant payload schema type name (``keyword``, ``integer``...)."""

    @abstractmethod
    def upsert(self, name: str, points: Sequence[PointData]) -> None:
        """Insert or overwrite points; returns once they are durable/searchable (``wait=True``)."""

    @abstractmethod
    def query(self, name: str, queries: Sequence[StageOneQuery]) -> list[list[Candidate]]:
        """Run stage 1 for each query (one round trip for the batch where the back end allows it)."""

    @abstractmethod
    def scroll(self, name: str, query_filter: models.Filter | None, *, with_frames: bool, limit: int = 10_000) -> list[Candidate]:
        """Every point matching the filter (score 0)."""

    @abstractmethod
    def delete(self, name: str, query_filter: models.Filter) -> None:
        """Delete every point matching the filter."""

    @abstractmethod
    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        """Exact number of points matching the filter."""

    def fetch_frames(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The (F, D) float32 frame matrices of the given points, by point id.

        Ids that no longer exist are absent from the result. The default scrolls with a
        ``HasIdCondition``; back ends with a cheaper by-id read override it.
        """
        if not ids:
            return {}
        found = self.scroll(
            name, models.Filter(must=[models.HasIdCondition(has_id=list(ids))]), with_frames=True, limit=len(ids)
        )
        return {c.id: c.frames for c in found if c.frames is not None}

    def optimize(self, name: str) -> bool:
        """Build indexes / merge segments now, where the engine leaves that to the caller.

        A server and qdrant-client local mode optimise on their own: this does nothing there.
        Returns True if anything was done.
        """
        return False


def _frames_of(vector: Any) -> np.ndarray | None:
    """The (F, D) float32 frame matrix of a returned point (qdrant-client hands back nested lists)."""
    if isinstance(vector, dict):
        f = vector.get(VECTOR_FRAMES)
        if f is not None:
            if isinstance(f, np.ndarray):
                return f.astype(np.float32, copy=False)
            if not f:
                return np.zeros((0, 0), np.float32)
            # measured ~1.7x faster than np.asarray on nested lists: converting Qdrant's lists is
            # the dominant cost of stage 2 (DESIGN.md), far above the aggregation math
            d = len(f[0])
            flat = np.fromiter(itertools.chain.from_iterable(f), dtype=np.float32, count=len(f) * d)
            return flat.reshape(len(f), d)
    return None


class QdrantClientBackend(StorageBackend):
    """:class:`StorageBackend` over ``qdrant_client.QdrantClient`` (local mode or server)."""

    def __init__(self, client: QdrantClient, *, timeout: int | None = None) -> None:
        self.client = client
        self.timeout = timeout

    def collection_exists(self, name: str) -> bool:
        return bool(self.client.collection_exists(name))

    def create_collection(self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False) -> None:
        self.client.create_collection(
            name,
            vectors_config={
                VECTOR_FRAMES: models.VectorParams(
                    size=dim,
                    distance=models.Distance.COSINE,
                    multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                    # without index_frames: only rescored and fetched, never searched -> no graph
                    hnsw_config=None if index_frames else models.HnswConfigDiff(m=0),
                ),
                VECTOR_POOLED: models.VectorParams(size=dim, distance=models.Distance.COSINE),
            },
            metadata=metadata,
            timeout=self.timeout,
        )

    def collection_schema(self, name: str) -> dict[str, Any]:
        info = self.client.get_collection(name)
        vectors = info.config.params.vectors
        out: dict[str, Any] = {}
        if isinstance(vectors, dict):
            for k, v in vectors.items():
                out[k] = {"size": v.size, "multivector": v.multivector_config is not None}
        elif vectors is not None:
            out[""] = {"size": vectors.size, "multivector": vectors.multivector_config is not None}
        return {"metadata": dict(info.config.metadata or {}), "vectors": out}

    def create_payload_index(self, name: str, field: str, schema: str) -> None:
        with warnings.catch_warnings():
            # local mode warns that indexes have no effect there; the same call matters on a server
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            self.client.create_payload_index(name, field, field_schema=models.PayloadSchemaType(schema), wait=True)

    def upsert(self, name: str, points: Sequence[PointData]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(
                id=p.id,
                vector={VECTOR_FRAMES: p.frames.tolist(), VECTOR_POOLED: p.pooled.tolist()},
                payload=p.payload,
            )
            for p in points
        ]
        self.client.upsert(name, points=structs, wait=True, timeout=self.timeout)

    def _request(self, q: StageOneQuery) -> models.QueryRequest:
        params = models.SearchParams(hnsw_ef=q.hnsw_ef, exact=q.exact) if (q.hnsw_ef or q.exact) else None
        with_vectors: bool | list[str] = [VECTOR_FRAMES] if q.with_frames else False
        vec = q.vector.astype(np.float32).tolist()
        if q.hybrid:
            n_frames = q.limit // 2
            prefetch = [models.Prefetch(query=vec, using=VECTOR_POOLED, filter=q.query_filter, limit=q.limit, params=params)]
            if n_frames:
                f_ef = q.frames_params_ef()
                f_params = models.SearchParams(hnsw_ef=f_ef, exact=q.exact) if (f_ef or q.exact) else None
                prefetch.append(models.Prefetch(query=[vec], using=VECTOR_FRAMES, filter=q.query_filter, limit=n_frames, params=f_params))
            main: Any = models.FusionQuery(fusion=models.Fusion.RRF)
            return models.QueryRequest(
                prefetch=prefetch,
                query=[vec] if q.rescore else main,
                using=VECTOR_FRAMES if q.rescore else None,
                limit=q.limit,
                with_payload=True,
                with_vector=with_vectors,
                score_threshold=q.score_threshold,
            )
        if q.rescore:
            return models.QueryRequest(
                prefetch=models.Prefetch(
                    query=vec, using=VECTOR_POOLED, filter=q.query_filter, limit=q.limit * q.rescore_factor, params=params
                ),
                query=[vec],  # a one-vector multivector query: MaxSim = the best frame's cosine
                using=VECTOR_FRAMES,
                limit=q.limit,
                with_payload=True,
                with_vector=with_vectors,
                score_threshold=q.score_threshold,
            )
        return models.QueryRequest(
            query=vec,
            using=VECTOR_POOLED,
            filter=q.query_filter,
            params=params,
            limit=q.limit,
            with_payload=True,
            with_vector=with_vectors,
            score_threshold=q.score_threshold,
        )

    def query(self, name: str, queries: Sequence[StageOneQuery]) -> list[list[Candidate]]:
        if not queries:
            return []
        requests = [self._request(q) for q in queries]
        if len(requests) == 1:
            r = requests[0]
            resp = [
                self.client.query_points(
                    name,
                    query=r.query,
                    using=r.using,
                    prefetch=r.prefetch,
                    query_filter=r.filter,
                    search_params=r.params,
                    limit=r.limit or 10,
                    with_payload=True,
                    with_vectors=r.with_vector if r.with_vector is not None else False,
                    score_threshold=r.score_threshold,
                    timeout=self.timeout,
                )
            ]
        else:
            resp = self.client.query_batch_points(name, requests=requests, timeout=self.timeout)
        return [
            [Candidate(str(p.id), float(p.score), dict(p.payload or {}), _frames_of(p.vector)) for p in r.points]
            for r in resp
        ]

    def scroll(self, name: str, query_filter: models.Filter | None, *, with_frames: bool, limit: int = 10_000) -> list[Candidate]:
        out: list[Candidate] = []
        offset = None
        while True:
            records, offset = self.client.scroll(
                name,
                scroll_filter=query_filter,
                limit=min(limit - len(out), 256),
                offset=offset,
                with_payload=True,
                with_vectors=[VECTOR_FRAMES] if with_frames else False,
                timeout=self.timeout,
            )
            out.extend(Candidate(str(r.id), 0.0, dict(r.payload or {}), _frames_of(r.vector)) for r in records)
            if offset is None or len(out) >= limit:
                return out

    def fetch_frames(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        records = self.client.retrieve(
            name, ids=list(ids), with_payload=False, with_vectors=[VECTOR_FRAMES], timeout=self.timeout
        )
        out: dict[str, np.ndarray] = {}
        for r in records:
            f = _frames_of(r.vector)
            if f is not None:
                out[str(r.id)] = f
        return out

    def delete(self, name: str, query_filter: models.Filter) -> None:
        self.client.delete(name, points_selector=models.FilterSelector(filter=query_filter), wait=True, timeout=self.timeout)

    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        return int(self.client.count(name, count_filter=query_filter, exact=True, timeout=self.timeout).count)


def as_backend(client: QdrantClient | StorageBackend) -> StorageBackend:
    """Wrap a ``QdrantClient`` (or pass a back end through)."""
    if isinstance(client, StorageBackend):
        return client
    if isinstance(client, QdrantClient):
        return QdrantClientBackend(client)
    raise TypeError(
        f"expected a qdrant_client.QdrantClient (':memory:', path=..., url=...) or a StorageBackend, "
        f"got {type(client).__name__}"
    )
