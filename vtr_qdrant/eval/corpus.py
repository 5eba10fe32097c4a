"""The corpus under evaluation (every point's frames, by video) and exhaustive scoring over it.

Exhaustive scoring is chunked over queries and videos so the (Q, V, F, D) tensor of a naive batched
implementation is never formed (the official X-Pool code needs ~38 GB on MSVD this way); only the
(Q, V) float32 score matrix and one block's temporaries (``max_block_bytes``) live at once. A long
video stored as several segments (points) is scored per segment and takes its best segment's
score, exactly as :meth:`VideoCollection.search <vtr_qdrant.collection.VideoCollection.search>` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..search.aggregation import Aggregator
from ..store.points import Key
from .queries import EvalQuery

if TYPE_CHECKING:
    from ..collection import VideoCollection

__all__ = ["EvalCorpus", "DEFAULT_MAX_BLOCK_BYTES", "relevance_for", "exhaustive_scores"]

log = logging.getLogger(__name__)

#: Upper bound of one block's temporaries in exhaustive scoring (bytes, approximate).
DEFAULT_MAX_BLOCK_BYTES = 64 << 20


@dataclass
class EvalCorpus:
    """Every stored point's frames, grouped by video.

    P points (one per video, or per segment of a long video), V videos, F the widest point.

    Attributes:
        video_ids: (V,) the videos, in order (columns of every score matrix).
        point_video: (P,) int64 index into ``video_ids``, non-decreasing.
        frames: (P, F, D) float32 frame embeddings (zero where masked).
        mask: (P, F) bool, True where a frame exists.
        timestamps: per point, (F_p,) float64 seconds (may be empty when unknown).
    """

    video_ids: list[str]
    point_video: np.ndarray
    frames: np.ndarray
    mask: np.ndarray
    timestamps: list[np.ndarray] = field(default_factory=list)

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @classmethod
    def from_arrays(
        cls, video_ids: Sequence[str], frames: np.ndarray, mask: np.ndarray | None = None
    ) -> EvalCorpus:
        """One point per video from a (V, F, D) array and an optional (V, F) bool mask."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 3 or frames.shape[0] != len(video_ids):
            raise InvalidInputError(f"frames must be (V, F, D) with V = {len(video_ids)}, got {frames.shape}")
        if len(set(video_ids)) != len(video_ids):
            raise InvalidInputError("video_ids must be unique")
        m = np.ones(frames.shape[:2], bool) if mask is None else np.asarray(mask, dtype=bool)
        if m.shape != frames.shape[:2] or (len(m) and not m.any(axis=1).all()):
            raise InvalidInputError(f"mask must be (V, F) = {frames.shape[:2]} with a frame per video")
        return cls(list(video_ids), np.arange(len(video_ids), dtype=np.int64), frames, m)

    @classmethod
    def from_collection(
        cls, collection: VideoCollection, video_ids: Sequence[str] | None = None
    ) -> EvalCorpus:
        """Read every point's frames from a collection (scroll), ordered by video then segment.

        Args:
            collection: the :class:`VideoCollection`.
            video_ids: keep only these videos, in this order (missing ones are an error).
        """
        n = collection.count_points()
        recs = collection.backend.scroll(collection.collection_name, None, with_frames=True, limit=max(n, 1))
        by_video: dict[str, list[Any]] = {}
        for r in recs:
            if r.frames is None or not len(r.frames):
                continue
            by_video.setdefault(str(r.payload.get(Key.VIDEO_ID, r.id)), []).append(r)
        if video_ids is None:
            order = sorted(by_video)
        else:
            order = list(video_ids)
            missing = [v for v in order if v not in by_video]
            if missing:
                raise InvalidInputError(
                    f"{len(missing)} video(s) are not in the collection, e.g. {missing[:3]}"
                )
        if not order:
            raise InvalidInputError(f"collection {collection.collection_name!r} holds no videos with frames")
        points = []
        owner = []
        for i, vid in enumerate(order):
            segs = sorted(by_video[vid], key=lambda r: int(r.payload.get(Key.SEGMENT_INDEX, 0)))
            points.extend(segs)
            owner.extend([i] * len(segs))
        widest = max(len(r.frames) for r in points)
        frames = np.zeros((len(points), widest, collection.dim), np.float32)
        mask = np.zeros((len(points), widest), bool)
        stamps = []
        for j, r in enumerate(points):
            frames[j, : len(r.frames)] = r.frames
            mask[j, : len(r.frames)] = True
            stamps.append(np.asarray(r.payload.get(Key.TIMESTAMPS) or [], dtype=np.float64))
        return cls(order, np.asarray(owner, dtype=np.int64), frames, mask, stamps)

    def per_video(self) -> tuple[np.ndarray, np.ndarray]:
        """Frames with a video's segments concatenated: ((V, F', D) float32, (V, F') bool)."""
        if len(self.point_video) == self.num_videos:
            return self.frames, self.mask
        lengths = np.bincount(self.point_video, weights=self.mask.sum(axis=1), minlength=self.num_videos)
        out = np.zeros((self.num_videos, int(lengths.max()), self.frames.shape[2]), np.float32)
        mask = np.zeros(out.shape[:2], bool)
        fill = np.zeros(self.num_videos, np.int64)
        for p, v in enumerate(self.point_video):
            f = self.frames[p, self.mask[p]]
            out[v, fill[v] : fill[v] + len(f)] = f
            mask[v, fill[v] : fill[v] + len(f)] = True
            fill[v] += len(f)
        return out, mask


def relevance_for(queries: Sequence[EvalQuery], video_ids: Sequence[str]) -> tuple[list[int], list[set[int]]]:
    """Column indices of each query's relevant videos; queries with none in the corpus are dropped.

    Returns:
        ``(kept query indices, relevant column sets)``; a warning is logged for dropped queries.
    """
    col = {v: i for i, v in enumerate(video_ids)}
    kept, rel = [], []
    for i, q in enumerate(queries):
        s = {col[v] for v in q.video_ids if v in col}
        if s:
            kept.append(i)
            rel.append(s)
    if len(kept) < len(queries):
        log.warning(
            "%d of %d queries name no video of the corpus; they are skipped",
            len(queries) - len(kept),
            len(queries),
        )
    if not kept:
        raise InvalidInputError("no query names a video of the corpus: check the video ids in the query file")
    return kept, rel


def exhaustive_scores(
    aggregator: Aggregator,
    text: np.ndarray,
    corpus: EvalCorpus | np.ndarray,
    mask: np.ndarray | None = None,
    *,
    query_chunk: int = 256,
    video_chunk: int | None = None,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
) -> np.ndarray:
    """Score every query against every video, in blocks of bounded memory.

    Args:
        aggregator: any stage-2 :class:`Aggregator` (one that precomputes, like the X-Pool head, does
            so once per video block and reuses the state for every query block).
        text: (Q, D) float32 L2-normalised query embeddings.
        corpus: an :class:`EvalCorpus`, or a (V, F, D) float32 frame array (with ``mask``).
        mask: (V, F) bool when ``corpus`` is an array.
        query_chunk: queries per block.
        video_chunk: points per block (None: as many as fit in ``max_block_bytes``).
        max_block_bytes: approximate bound on one block's temporaries.

    Returns:
        (Q, V) float32 scores; a video with several points takes its best point's score.
    """
    if not isinstance(corpus, EvalCorpus):
        arr = np.asarray(corpus)
        corpus = EvalCorpus.from_arrays(
            [str(i) for i in range(arr.shape[0])] if arr.ndim == 3 else [], arr, mask
        )
    text = np.asarray(text, dtype=np.float32)
    if text.ndim != 2 or text.shape[1] != corpus.frames.shape[2]:
        raise InvalidInputError(f"text must be (Q, {corpus.frames.shape[2]}), got {text.shape}")
    q_n, dim = text.shape
    p_n, f_n = corpus.frames.shape[:2]
    qc = max(1, int(query_chunk))
    if video_chunk is None:
        per_video = min(qc, q_n or 1) * (dim + 4 * f_n) * 8
        video_chunk = max(1, int(max_block_bytes) // per_video)
    vc = max(1, int(video_chunk))
    out = np.full((q_n, corpus.num_videos), -np.inf, dtype=np.float32)
    for lo in range(0, p_n, vc):
        hi = min(p_n, lo + vc)
        frames, m = corpus.frames[lo:hi], corpus.mask[lo:hi]
        # text-independent state (the X-Pool head's tensors) once per video block, for every query block
        states = aggregator.precompute_candidates(frames, m) if aggregator.precomputes else None
        block = np.empty((q_n, hi - lo), dtype=np.float32)
        for qlo in range(0, q_n, qc):
            qhi = min(q_n, qlo + qc)
            if states is not None:
                block[qlo:qhi] = aggregator.aggregate_precomputed(text[qlo:qhi], states).scores
            else:
                block[qlo:qhi] = aggregator.aggregate(text[qlo:qhi], frames, m).scores
        owners = corpus.point_video[lo:hi]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        best = np.maximum.reduceat(block, starts, axis=1)
        cols = owners[starts]
        out[:, cols] = np.maximum(out[:, cols], best)
    return out
