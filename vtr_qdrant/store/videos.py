"""One collection's videos: validated, segmented, idempotent writes; reads; deletes.

:class:`VideoStore` is the writer that in-process ingestion (:mod:`vtr_qdrant.ingest`), the Ray
job's sink and :class:`~vtr_qdrant.collection.VideoCollection` all write through, so "what a
stored video is" (its points, payload and segment cleanup) is decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client import models

from ..errors import InvalidInputError
from .backend import StorageBackend
from .points import Key, PointData, make_points, validate_frames

__all__ = ["EmbeddedVideo", "StoredVideo", "VideoStore", "video_filter"]

#: points per upsert request (12x512 frames: ~1.6 MB of JSON per request on a server)
UPSERT_BATCH_POINTS = 64


@dataclass
class EmbeddedVideo:
    """One video's frame embeddings, ready to store.

    Attributes:
        video_id: unique id of the video in the collection.
        frames: (F, D) float array of frame embeddings (normalised on write).
        timestamps: (F,) float seconds of each frame.
        metadata: user payload fields (top-level keys; reserved names are refused).
        uri, duration, content_hash: stored in the payload.
    """

    video_id: str
    frames: np.ndarray
    timestamps: np.ndarray
    metadata: Mapping[str, Any] | None = None
    uri: str | None = None
    duration: float | None = None
    content_hash: str | None = None


@dataclass
class StoredVideo:
    """A video as stored: all segments concatenated in time order.

    Attributes:
        video_id: its id.
        frames: (F, D) float32 L2-normalised frame embeddings.
        timestamps: (F,) float64 seconds.
        payload: the first segment's payload (shared fields: uri, duration, metadata...).
        point_ids: ids of its points, one per segment.
    """

    video_id: str
    frames: np.ndarray
    timestamps: np.ndarray
    payload: dict[str, Any]
    point_ids: list[str] = field(default_factory=list)


def video_filter(video_id: str) -> models.Filter:
    """Every point (segment) of one video."""
    return models.Filter(must=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchValue(value=video_id))])


def _first_segments(video_ids: Sequence[str]) -> models.Filter:
    return models.Filter(
        must=[
            models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchAny(any=list(video_ids))),
            models.FieldCondition(key=Key.SEGMENT_INDEX, match=models.MatchValue(value=0)),
        ]
    )


class VideoStore:
    """Videos in one collection of a :class:`~vtr_qdrant.store.backend.StorageBackend`.

    Args:
        backend: the storage back end.
        collection_name: the (existing) collection.
        dim: embedding dimension D of its vectors.
        fingerprint: model towers fingerprint recorded on every point ("" for embeddings-only).
        segment_seconds: cut videos into segments of this many seconds (None: only the multivector
            size limit splits them).
    """

    def __init__(
        self,
        backend: StorageBackend,
        collection_name: str,
        *,
        dim: int,
        fingerprint: str | None,
        segment_seconds: float | None = None,
    ) -> None:
        self.backend = backend
        self.collection_name = collection_name
        self.dim = dim
        self.fingerprint = fingerprint
        self.segment_seconds = segment_seconds

    # ------------------------------------------------------------------ writes

    def points_for(self, video: EmbeddedVideo) -> list[PointData]:
        """Validate one video and turn it into its points (one per segment); writes nothing."""
        frames, ts = validate_frames(video.video_id, video.frames, video.timestamps, self.dim)
        return make_points(
            video.video_id,
            frames,
            ts,
            model_fingerprint=self.fingerprint or "",
            metadata=video.metadata,
            uri=video.uri,
            duration=video.duration,
            content_hash=video.content_hash,
            segment_seconds=self.segment_seconds,
        )

    def upsert(self, videos: Iterable[EmbeddedVideo]) -> dict[str, list[str]]:
        """Store videos; every video is validated before anything is written (idempotent: a
        re-upserted video replaces its points).

        Returns:
            ``{video_id: [point ids]}``.

        Raises:
            InvalidInputError: bad shapes, dtypes, NaNs, reserved metadata keys, or a video id twice.
        """
        per_video: dict[str, list[PointData]] = {}
        for v in videos:
            if v.video_id in per_video:
                raise InvalidInputError(f"video_id {v.video_id!r} appears twice in one batch")
            per_video[v.video_id] = self.points_for(v)
        flat = [p for pts in per_video.values() for p in pts]
        for i in range(0, len(flat), UPSERT_BATCH_POINTS):
            self.backend.upsert(self.collection_name, flat[i : i + UPSERT_BATCH_POINTS])
        # A re-ingested video may have fewer segments than before: drop the stale ones, after the
        # new points are durable, so a crash in between never loses the video. One scroll per batch
        # (not a count per video: a filtered count is a full scan in local mode).
        self._delete_stale_segments(per_video)
        return {vid: [p.id for p in pts] for vid, pts in per_video.items()}

    def _delete_stale_segments(self, per_video: Mapping[str, list[PointData]]) -> None:
        keep = {p.id for pts in per_video.values() for p in pts}
        vids = list(per_video)
        stale: list[str] = []
        for i in range(0, len(vids), 256):
            f = models.Filter(must=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchAny(any=vids[i : i + 256]))])
            stale += [c.id for c in self.backend.scroll(self.collection_name, f, with_frames=False) if c.id not in keep]
        if stale:
            self.backend.delete(self.collection_name, models.Filter(must=[models.HasIdCondition(has_id=stale)]))  # type: ignore[list-item]

    def delete(self, video_id: str) -> int:
        """Delete a video (all its segments). Returns how many points were removed."""
        f = video_filter(video_id)
        n = self.backend.count(self.collection_name, f)
        if n:
            self.backend.delete(self.collection_name, f)
        return n

    # ------------------------------------------------------------------ reads

    def get(self, video_id: str, *, with_frames: bool = True) -> StoredVideo | None:
        """A stored video (segments concatenated in time order), or None if absent."""
        recs = self.backend.scroll(self.collection_name, video_filter(video_id), with_frames=with_frames)
        if not recs:
            return None
        recs.sort(key=lambda r: r.payload.get(Key.SEGMENT_INDEX, 0))
        frames = (
            np.concatenate([r.frames for r in recs if r.frames is not None])
            if with_frames
            else np.zeros((0, self.dim), np.float32)
        )
        ts = np.concatenate([np.asarray(r.payload.get(Key.TIMESTAMPS, []), dtype=np.float64) for r in recs])
        return StoredVideo(video_id, frames, ts, recs[0].payload, [r.id for r in recs])

    def stored_payloads(self, video_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """First-segment payloads of those videos already in the collection, by video id."""
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(video_ids), 256):
            for c in self.backend.scroll(self.collection_name, _first_segments(video_ids[i : i + 256]), with_frames=False):
                found[str(c.payload.get(Key.VIDEO_ID))] = c.payload
        return found

    def count(self, query_filter: models.Filter | None = None) -> int:
        """Number of videos (not points) matching an optional filter."""
        first = models.FieldCondition(key=Key.SEGMENT_INDEX, match=models.MatchValue(value=0))
        f = models.Filter(must=[first, *([query_filter] if query_filter is not None else [])])
        return self.backend.count(self.collection_name, f)

    def count_points(self) -> int:
        """Number of points (segments) in the collection."""
        return self.backend.count(self.collection_name)
