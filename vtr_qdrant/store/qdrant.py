"""A :class:`~vtr_qdrant.store.backend.StorageBackend` over ``qdrant_client.QdrantClient``.

Local mode (``:memory:``, ``path=``) and a server (``url=``) run the same code; stage 1 is the plan
of :mod:`vtr_qdrant.store.plan`, translated into one ``query_points`` (or ``query_batch_points``) call.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from ..errors import StorageError
from .backend import Candidate, StorageBackend, candidate_of, frames_of
from .plan import RRF_K, AnnSearch, StageOneQuery, plan_stage_one
from .points import MULTIVECTORS, VECTOR_FRAMES, VECTOR_POOLED, VECTOR_SCENES, PointData

__all__ = ["QdrantClientBackend", "as_backend", "open_local_client"]

log = logging.getLogger(__name__)


class QdrantClientBackend(StorageBackend):
    """:class:`StorageBackend` over ``qdrant_client.QdrantClient`` (local mode or server)."""

    def __init__(self, client: QdrantClient, *, timeout: int | None = None) -> None:
        self.client = client
        self.timeout = timeout

    def collection_exists(self, name: str) -> bool:
        return bool(self.client.collection_exists(name))

    def create_collection(
        self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False, index_scenes: bool = False
    ) -> None:
        maxsim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
        scenes = {VECTOR_SCENES: models.VectorParams(size=dim, distance=models.Distance.COSINE, multivector_config=maxsim)}
        self.client.create_collection(
            name,
            vectors_config={
                **(scenes if index_scenes else {}),
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
                vector={VECTOR_FRAMES: p.frames.tolist(), VECTOR_POOLED: p.pooled.tolist(),
                        **({VECTOR_SCENES: p.scenes.tolist()} if p.scenes is not None else {})},
                payload=p.payload,
            )
            for p in points
        ]
        self.client.upsert(name, points=structs, wait=True, timeout=self.timeout)

    @staticmethod
    def _search_query(s: AnnSearch, vec: list[float]) -> Any:
        return [vec] if s.using in MULTIVECTORS else vec  # frames, scenes: a one-vector multivector (MaxSim)

    @staticmethod
    def _params(s: AnnSearch) -> models.SearchParams | None:
        return models.SearchParams(hnsw_ef=s.hnsw_ef, exact=s.exact) if (s.hnsw_ef or s.exact) else None

    def _request(self, q: StageOneQuery) -> models.QueryRequest:
        """The plan (:func:`~vtr_qdrant.store.plan.plan_stage_one`) as one qdrant-client request."""
        plan = plan_stage_one(q)
        vec = plan.vector.tolist()
        prefetch = [
            models.Prefetch(
                query=self._search_query(s, vec), using=s.using, filter=plan.query_filter, limit=s.limit, params=self._params(s)
            )
            for s in plan.prefetch
        ]
        main: Any
        if plan.main == "rrf":
            # plain Fusion.RRF (Qdrant's default constant, 2) is understood by every server version
            query = (
                models.FusionQuery(fusion=models.Fusion.RRF) if RRF_K == 2 else models.RrfQuery(rrf=models.Rrf(k=RRF_K))
            )
            using, params = None, None
        else:
            main = plan.main
            query, using, params = self._search_query(main, vec), main.using, self._params(main)
        return models.QueryRequest(
            prefetch=prefetch or None,
            query=query,
            using=using,
            filter=None if prefetch else plan.query_filter,
            params=params,
            limit=plan.limit,
            with_payload=True,
            with_vector=[VECTOR_FRAMES] if plan.with_frames else False,
            score_threshold=plan.score_threshold,
        )

    def query(self, name: str, queries: Sequence[StageOneQuery]) -> list[list[Candidate]]:
        if not queries:
            return []
        requests = [self._request(q) for q in queries]
        timeout = queries[0].timeout if queries[0].timeout is not None else self.timeout
        # local mode has no replicas (and no such argument): only a server gets it
        consistency = {"consistency": queries[0].consistency} if queries[0].consistency is not None and not _is_local(self.client) else {}
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
                    timeout=timeout,
                    **consistency,
                )
            ]
        else:
            resp = self.client.query_batch_points(name, requests=requests, timeout=timeout, **consistency)
        return [
            [candidate_of(p) for p in r.points]
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
            out.extend(candidate_of(r) for r in records)
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
            f = frames_of(r.vector)
            if f is not None:
                out[str(r.id)] = f
        return out

    def set_payload(self, name: str, payload: dict[str, Any], ids: Sequence[str]) -> None:
        self.client.set_payload(name, payload=payload, points=list(ids), wait=True)

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


def open_local_client(path: str | os.PathLike[str]) -> QdrantClient:
    """qdrant-client local mode on a folder, or a :class:`StorageError` saying why not and what to do.

    Local mode admits one process per folder (qdrant-client locks it); a second process gets a raw
    ``RuntimeError`` from qdrant-client, turned here into an error that names the alternatives.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local-mode notices
            return QdrantClient(path=os.fspath(path))
    except RuntimeError as e:
        if "already accessed" not in str(e):
            raise
        raise StorageError(
            f"the local Qdrant folder {os.fspath(path)!r} is in use by another process (qdrant-client local mode "
            "admits one process at a time). Wait for that process to finish, or, to read and write from "
            "several processes, use a Qdrant server (--qdrant-url http://...) or Qdrant Edge"
        ) from None


def _is_local(client: QdrantClient) -> bool:
    """Whether a QdrantClient is local mode (":memory:" or a folder), not a server."""
    return type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
