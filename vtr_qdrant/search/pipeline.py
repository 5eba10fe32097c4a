"""One search, end to end below the façade: options checked, stage 1 planned and run, stage 2 ranked.

:class:`SearchOptions` holds every per-call option of
:meth:`VideoCollection.search <vtr_qdrant.collection.VideoCollection.search>` with qdrant-client's
names and meanings (``limit``, ``offset``, ``query_filter``, ``search_params``, ``with_payload``,
``score_threshold``); :func:`run_search` executes a batch of query vectors with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import models

from ..errors import InvalidInputError
from ..store.backend import StorageBackend
from ..store.filters import check_filter
from ..store.plan import StageOneQuery
from ..store.points import VECTOR_FRAMES, VECTOR_SCENES, Key
from ..store.videos import current_versions
from .aggregation import Aggregator
from .hits import VideoHit
from .query import MAX_CANDIDATES, check_search_args
from .stage_two import StageTwo

__all__ = ["SearchOptions", "StageOneSettings", "run_search", "single_query", "like_vector", "image_vector"]


@dataclass(frozen=True)
class StageOneSettings:
    """What the collection fixes for stage 1: its vectors and default beams."""

    frames_indexed: bool
    scenes_indexed: bool
    hnsw_ef: int | None
    frames_hnsw_ef: int | None
    exact: bool


@dataclass(frozen=True)
class SearchOptions:
    """The per-call options of a search (see :meth:`VideoCollection.search`)."""

    limit: int = 10
    offset: int = 0
    query_filter: models.Filter | None = None
    candidates: int | None = None
    rescore: bool = False
    hybrid: bool | None = None
    score_threshold: float | None = None
    with_payload: bool | Sequence[str] = True
    search_params: models.SearchParams | None = None
    timeout: int | None = None
    consistency: Any = None

    def checked(self) -> tuple[int, SearchOptions]:
        """(K, the options with the filter and threshold validated); raises InvalidInputError."""
        if isinstance(self.offset, bool) or not isinstance(self.offset, (int, np.integer)) or not 0 <= self.offset < MAX_CANDIDATES:
            raise InvalidInputError(f"offset must be an int from 0 to {MAX_CANDIDATES - 1:,}, got {self.offset!r}")
        wp = self.with_payload
        if not isinstance(wp, bool) and (isinstance(wp, str) or not all(isinstance(k, str) for k in wp)):
            raise InvalidInputError(f"with_payload must be a bool or a list of payload field names, got {wp!r}")
        t = self.timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1):
            raise InvalidInputError(f"timeout must be a whole number of seconds >= 1 (as in qdrant-client) or None, got {t!r}")
        if self.search_params is not None and not isinstance(self.search_params, models.SearchParams):
            raise InvalidInputError(f"search_params must be a qdrant_client.models.SearchParams, got {type(self.search_params).__name__}")
        k, flt, threshold = check_search_args(self.limit, self.candidates, self.query_filter, self.score_threshold)
        k = max(k, int(self.limit) + int(self.offset))  # every hit of the requested page reaches stage 2
        return k, SearchOptions(self.limit, int(self.offset), flt, self.candidates, self.rescore, self.hybrid, threshold,
                                self.with_payload, self.search_params, self.timeout, self.consistency)


def run_search(
    backend: StorageBackend,
    collection_name: str,
    settings: StageOneSettings,
    stage_two: StageTwo,
    vectors: np.ndarray,
    agg: Aggregator,
    k: int,
    o: SearchOptions,
) -> list[list[VideoHit]]:
    """Rank videos for each (D,) row of ``vectors`` in one stage-1 round trip.

    Args:
        k, o: what :meth:`SearchOptions.checked` returned (the caller checks before encoding texts).

    Returns:
        One hit list per query: hits ``offset .. offset + limit`` of the ranking, best first.
    """
    sp = o.search_params
    stage1 = [
        StageOneQuery(
            vector=v,
            limit=k,
            query_filter=o.query_filter,
            rescore=o.rescore,
            hybrid=settings.frames_indexed if o.hybrid is None else o.hybrid,
            hnsw_ef=sp.hnsw_ef if sp is not None and sp.hnsw_ef is not None else settings.hnsw_ef,
            frames_hnsw_ef=settings.frames_hnsw_ef,
            aware_vector=VECTOR_SCENES if settings.scenes_indexed else VECTOR_FRAMES,
            exact=bool(sp.exact) if sp is not None and sp.exact is not None else settings.exact,
            with_frames=stage_two.frames_with_stage_one,
            timeout=o.timeout,
            consistency=o.consistency,
        )
        for v in vectors
    ]
    results = [current_versions(c) for c in backend.query(collection_name, stage1)]  # hide half-written videos
    if not stage_two.frames_with_stage_one:
        stage_two.attach_frames(backend, collection_name, [c for cands in results for c in cands])
    out = []
    for v, cands in zip(vectors, results):
        hits = stage_two.rank(v, cands, agg, limit=o.limit + o.offset, score_threshold=o.score_threshold,
                              with_payload=o.with_payload is not False)[o.offset:]
        if not isinstance(o.with_payload, bool):  # a list of fields, as in qdrant-client
            keep = set(o.with_payload)
            hits = [h.model_copy(update={"payload": {f: x for f, x in h.payload.items() if f in keep}}) for h in hits]
        out.append(hits)
    return out


def like_vector(frames: np.ndarray) -> np.ndarray:
    """A stored video as a query: the (D,) float32 L2-normalised mean of its (F, D) frames."""
    m = np.asarray(frames, dtype=np.float64).mean(axis=0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)


def image_vector(encode_frames: Any, image: np.ndarray) -> np.ndarray:
    """An image (H, W, 3) uint8 RGB, or several (N, H, W, 3) as one query: the (D,) float32
    L2-normalised mean of their visual-tower embeddings."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4 or img.shape[-1] != 3 or img.dtype != np.uint8 or not len(img):
        raise InvalidInputError(f"image must be (H, W, 3) or (N, H, W, 3) uint8 RGB, got {img.dtype} {img.shape}")
    return like_vector(encode_frames(img))


def single_query(
    query: str | np.ndarray | None,
    image: np.ndarray | None,
    like: str | None,
    query_filter: Any,
    *,
    encode_frames: Callable[[np.ndarray], np.ndarray],
    stored_frames: Callable[[str], np.ndarray | None],
) -> tuple[str | np.ndarray, Any]:
    """The query of a search given as a text/vector, an image or a stored video's id, and its filter
    (``like`` leaves the video itself out of the hits).

    Raises:
        InvalidInputError: not exactly one of the three, or ``like`` names no stored video.
    """
    if sum(x is not None for x in (query, image, like)) != 1:
        raise InvalidInputError("give exactly one of query (a text or a vector), image=... or like=video_id")
    if image is not None:
        return image_vector(encode_frames, image), query_filter
    if like is not None:
        frames = stored_frames(like) if isinstance(like, str) else None
        if frames is None:
            raise InvalidInputError(f"like={like!r}: no such stored video")
        other = models.Filter(must_not=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchValue(value=like))])
        return like_vector(frames), other if query_filter is None else models.Filter(must=[check_filter(query_filter), other])
    return query, query_filter  # type: ignore[return-value]
