"""The storage seam: what :class:`~vtr_qdrant.collection.VideoCollection` needs from a vector store.

:class:`StorageBackend` is a small interface (create/inspect a collection, upsert, stage-1 query,
scroll, set payload, delete, count). Two implementations execute it: :class:`~vtr_qdrant.store.qdrant.QdrantClientBackend`
over ``qdrant_client.QdrantClient`` (local mode or a server, the same code) and
:class:`~vtr_qdrant.store.edge.EdgeBackend` over Qdrant Edge. Both run the same stage-1 plan
(:mod:`vtr_qdrant.store.plan`). Filters are ``qdrant_client.models.Filter`` objects, passed through.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import models

from .plan import StageOneQuery
from .points import VECTOR_FRAMES, PointData

__all__ = ["Candidate", "StorageBackend", "candidate_of", "frames_of"]


@dataclass
class Candidate:
    """A point returned by stage 1.

    Attributes:
        id: point id.
        score: stage-1 score (RRF, cosine on the pooled vector, or MaxSim when rescored).
        payload: the point's payload.
        frames: (F, D) float32 frame embeddings, or None when not requested.
    """

    id: str
    score: float
    payload: dict[str, Any]
    frames: np.ndarray | None = None


def frames_of(vector: Any) -> np.ndarray | None:
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


def candidate_of(point: Any) -> Candidate:
    """A returned point (qdrant-client ``ScoredPoint``/``Record`` or an Edge point) as a :class:`Candidate`."""
    return Candidate(str(point.id), float(getattr(point, "score", None) or 0.0), dict(point.payload or {}), frames_of(point.vector))


class StorageBackend(ABC):
    """What VideoCollection needs from a vector store."""

    @abstractmethod
    def collection_exists(self, name: str) -> bool: ...

    @abstractmethod
    def create_collection(
        self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False, index_scenes: bool = False
    ) -> None:
        """Create ``frames`` (multivector, cosine, MAX_SIM; HNSW only if ``index_frames``), ``pooled``
        (cosine, HNSW) and, with ``index_scenes``, ``scenes`` (multivector, cosine, MAX_SIM, HNSW)."""

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
        """Run stage 1 for each query (one round trip for the batch where the back end allows it).

        Every back end executes :func:`vtr_qdrant.store.plan.plan_stage_one`'s plan, nothing else.
        """

    @abstractmethod
    def scroll(self, name: str, query_filter: models.Filter | None, *, with_frames: bool, limit: int = 10_000) -> list[Candidate]:
        """Every point matching the filter (score 0)."""

    @abstractmethod
    def set_payload(self, name: str, payload: dict[str, Any], ids: Sequence[str]) -> None:
        """Set payload fields on the given points, in one request (``wait=True``)."""

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

    def frame_store_dir(self, name: str) -> str | None:
        """Where a collection's :class:`~vtr_qdrant.store.frame_store.FrameStore` lives by default
        (``frame_store="auto"``): beside the data for embedded engines, None (no store) elsewhere."""
        return None

    def optimize(self, name: str) -> bool:
        """Build indexes / merge segments now, where the engine leaves that to the caller.

        A server and qdrant-client local mode optimise on their own: this does nothing there.
        Returns True if anything was done.
        """
        return False
