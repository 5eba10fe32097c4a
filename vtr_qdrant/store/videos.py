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
from .backend import Candidate, StorageBackend
from .filters import check_filter
from .frame_store import FrameStore, frames_version
from .payload import check_metadata
from .points import Key, PointData, make_points, source_of, validate_frames, version_token

__all__ = ["EmbeddedVideo", "StoredVideo", "VideoState", "VideoStore", "WRITING", "current_versions", "is_complete", "video_filter"]

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

    @property
    def source(self) -> str | None:
        """The source path exactly as it was ingested (a name that is not UTF-8 included), or None."""
        return source_of(self.payload)


def video_filter(video_id: str) -> models.Filter:
    """Every point (segment) of one video."""
    return models.Filter(must=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchValue(value=video_id))])


#: the condition of points whose version is still being written (``must_not`` it to hide them)
WRITING = models.FieldCondition(key=Key.COMPLETE, match=models.MatchValue(value=0))


def is_complete(payload: Mapping[str, Any]) -> bool:
    """Whether a point's version is completely written (points from before versioned writes are)."""
    return payload.get(Key.COMPLETE, 1) != 0


def _version_order(payload: Mapping[str, Any]) -> tuple[str, str]:
    """Newer versions sort higher: by write time (microsecond ISO), then token."""
    return str(payload.get(Key.INGESTED_AT) or ""), str(payload.get(Key.VERSION) or "")


def current_versions(cands: Sequence[Candidate]) -> list[Candidate]:
    """Drop points a reader must not see: those of versions still being written, and those of a
    video's older complete version while a newer one is replacing it. Order is kept."""
    newest: dict[str, tuple[str, str]] = {}
    for c in cands:
        if is_complete(c.payload):
            vid, o = str(c.payload.get(Key.VIDEO_ID, c.id)), _version_order(c.payload)
            if vid not in newest or o > newest[vid]:
                newest[vid] = o
    if not newest:
        return []
    return [
        c for c in cands
        if is_complete(c.payload) and str(c.payload.get(Key.VERSION) or "") == newest[str(c.payload.get(Key.VIDEO_ID, c.id))][1]
    ]


@dataclass
class VideoState:
    """How one video is stored, from its points' payloads.

    Attributes:
        versions: version token -> segment indexes stored ("" for points written before versions).
        incomplete: versions with a point still marked ``complete=0`` (a write in flight, or one a
            crash interrupted).
        payload: first-segment payload of the current (newest complete) version, or None.
        segment_count: segments the current version should have.
        missing_segments: segment indexes of the current version that are not stored.
    """

    versions: dict[str, list[int]]
    incomplete: list[str]
    payload: dict[str, Any] | None
    segment_count: int
    missing_segments: list[int]

    @classmethod
    def of(cls, recs: Sequence[Candidate]) -> VideoState:
        versions: dict[str, list[int]] = {}
        incomplete: set[str] = set()
        for r in recs:
            v = str(r.payload.get(Key.VERSION) or "")
            versions.setdefault(v, []).append(int(r.payload.get(Key.SEGMENT_INDEX, 0)))
            if not is_complete(r.payload):
                incomplete.add(v)
        cur = sorted(current_versions(recs), key=lambda r: r.payload.get(Key.SEGMENT_INDEX, 0))
        n = int(cur[0].payload.get(Key.SEGMENT_COUNT, len(cur))) if cur else 0
        have = {int(r.payload.get(Key.SEGMENT_INDEX, 0)) for r in cur}
        return cls(
            {v: sorted(ix) for v, ix in versions.items()},
            sorted(incomplete),
            next((r.payload for r in cur if r.payload.get(Key.SEGMENT_INDEX, 0) == 0), cur[0].payload if cur else None),
            n,
            [i for i in range(n) if i not in have],
        )

    @property
    def whole(self) -> bool:
        """Exactly one version, complete, with every segment: nothing for a re-run to repair."""
        return len(self.versions) == 1 and not self.incomplete and self.payload is not None and not self.missing_segments


class VideoStore:
    """Videos in one collection of a :class:`~vtr_qdrant.store.backend.StorageBackend`.

    Args:
        backend: the storage back end.
        collection_name: the (existing) collection.
        dim: embedding dimension D of its vectors.
        fingerprint: model towers fingerprint recorded on every point ("" for embeddings-only).
        segment_seconds: cut videos into segments of this many seconds (None: only the multivector
            size limit splits them).
        frame_store: written with every stored video's frames (so stage 2 never reads them back
            from Qdrant), after the video is complete.
        scenes: write each point's scene vectors (collections with ``scenes_indexed``).
    """

    def __init__(
        self,
        backend: StorageBackend,
        collection_name: str,
        *,
        dim: int,
        fingerprint: str | None,
        segment_seconds: float | None = None,
        frame_store: FrameStore | None = None,
        scenes: bool = False,
    ) -> None:
        self.backend = backend
        self.frame_store = frame_store
        self.scenes = scenes
        self.collection_name = collection_name
        self.dim = dim
        self.fingerprint = fingerprint
        self.segment_seconds = segment_seconds

    # ------------------------------------------------------------------ writes

    def points_for(self, video: EmbeddedVideo) -> list[PointData]:
        """Validate one video and turn it into its points (one per segment); writes nothing."""
        frames, ts = validate_frames(video.video_id, video.frames, video.timestamps, self.dim)
        fields: dict[str, Any] = dict(
            model_fingerprint=self.fingerprint or "",
            metadata=check_metadata(video.metadata, where=f"video {video.video_id!r} metadata"),
            uri=video.uri,
            duration=video.duration,
            content_hash=video.content_hash,
            segment_seconds=self.segment_seconds,
        )
        return make_points(video.video_id, frames, ts, **fields, version=version_token(video.video_id, frames, ts, **fields),
                           scenes=self.scenes)

    def upsert(self, videos: Iterable[EmbeddedVideo]) -> dict[str, list[str]]:
        """Store videos, crash-consistently; every video is validated before anything is written.

        The write protocol (one version of a video is what search, counts, reads and the skip check
        see, whatever instant the process dies at):

        1. each video's points get its :func:`~vtr_qdrant.store.points.version_token` (point ids
           derive from it, so a new version lands beside the old one) and ``complete=0``;
        2. the points are upserted in requests of :data:`UPSERT_BATCH_POINTS`;
        3. video by video, one ``set_payload`` request flips its points to ``complete=1``, and
           right after it its other points (older versions, leftovers of a crashed write) are deleted.

        Writing a version that is already stored and complete overwrites it in place with
        ``complete=1`` (same content, same ids), so it never disappears. Between a video's flip and
        its delete two complete versions coexist; readers keep the newest (:func:`current_versions`),
        only :meth:`count` sees both (a crash at that instant leaves one video counted twice until
        the re-run, which repairs it, or ``vtr-qdrant verify --repair``).

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
        before = self.points_by_video(list(per_video), with_frames=False)
        pending: list[str] = []  # videos whose version is new or was left incomplete
        for vid, pts in per_video.items():
            stored = {c.id: c for c in before.get(vid, [])}
            if not all(p.id in stored and is_complete(stored[p.id].payload) for p in pts):
                pending.append(vid)
                for p in pts:
                    p.payload[Key.COMPLETE] = 0
        flat = [p for pts in per_video.values() for p in pts]
        for i in range(0, len(flat), UPSERT_BATCH_POINTS):
            self.backend.upsert(self.collection_name, flat[i : i + UPSERT_BATCH_POINTS])
        keep = {p.id for p in flat}
        for vid, pts in per_video.items():
            if vid in pending:  # one request per video: the video flips to its new version at once
                self.backend.set_payload(self.collection_name, {Key.COMPLETE: 1}, [p.id for p in pts])
                for p in pts:
                    p.payload[Key.COMPLETE] = 1
            if self.frame_store is not None:  # a cache: written once the points are in Qdrant
                self.frame_store.put_many([(p.id, frames_version(p.payload), p.frames) for p in pts])
            # right after the flip: at most one video has two versions
            self.delete_points([c.id for c in before.get(vid, []) if c.id not in keep])
        return {vid: [p.id for p in pts] for vid, pts in per_video.items()}

    def points_by_video(self, video_ids: Sequence[str], *, with_frames: bool) -> dict[str, list[Candidate]]:
        """Every stored point of those videos (all versions, complete or not), by video id."""
        out: dict[str, list[Candidate]] = {}
        for i in range(0, len(video_ids), 256):
            f = models.Filter(must=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchAny(any=list(video_ids[i : i + 256])))])
            for c in self.backend.scroll(self.collection_name, f, with_frames=with_frames, limit=2**62):
                out.setdefault(str(c.payload.get(Key.VIDEO_ID)), []).append(c)
        return out

    def delete_points(self, ids: Sequence[str]) -> None:
        """Delete these points (by id, 1024 a request)."""
        for i in range(0, len(ids), 1024):
            self.backend.delete(self.collection_name, models.Filter(must=[models.HasIdCondition(has_id=list(ids[i : i + 1024]))]))  # type: ignore[arg-type]

    def delete(self, video_id: str) -> int:
        """Delete a video (all its segments). Returns how many points were removed."""
        f = video_filter(video_id)
        n = self.backend.count(self.collection_name, f)
        if n:
            self.backend.delete(self.collection_name, f)
        return n

    # ------------------------------------------------------------------ reads

    def get(self, video_id: str, *, with_frames: bool = True) -> StoredVideo | None:
        """A stored video's current version (segments concatenated in time order), or None if
        absent or only incompletely written."""
        recs = self.backend.scroll(self.collection_name, video_filter(video_id), with_frames=with_frames, limit=2**62)
        recs = current_versions(recs)
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

    def states(self, video_ids: Sequence[str]) -> dict[str, VideoState]:
        """How each of those videos is stored (absent ids are left out); see :class:`VideoState`."""
        return {vid: VideoState.of(recs) for vid, recs in self.points_by_video(video_ids, with_frames=False).items()}

    def stored_payloads(self, video_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """First-segment payloads of the current versions of those videos that are stored, by id."""
        return {vid: st.payload for vid, st in self.states(video_ids).items() if st.payload is not None}

    def unchanged(self, content_hashes: Mapping[str, str | None]) -> set[str]:
        """Videos that need no re-ingestion: stored :attr:`VideoState.whole` (one complete version,
        every segment) with this content hash and this store's model fingerprint. A video without a
        hash (a URL) is never unchanged."""
        want = {vid: h for vid, h in content_hashes.items() if h is not None}
        out = set()
        for vid, st in self.states(list(want)).items():
            p = st.payload
            if st.whole and p is not None and p.get(Key.CONTENT_HASH) == want[vid] and p.get(Key.MODEL_FINGERPRINT) == (self.fingerprint or ""):
                out.add(vid)
        return out

    def count(self, query_filter: models.Filter | None = None) -> int:
        """Number of videos (not points) matching an optional filter.

        Versions still being written are not counted; a video caught between its new version's flip
        and its old version's delete (a moment during a re-write, or after a crash at that moment)
        counts twice.
        """
        first = models.FieldCondition(key=Key.SEGMENT_INDEX, match=models.MatchValue(value=0))
        user = check_filter(query_filter)
        f = models.Filter(must=[first, *([user] if user is not None else [])], must_not=[WRITING])
        return self.backend.count(self.collection_name, f)

    def count_points(self) -> int:
        """Number of points (segments) in the collection."""
        return self.backend.count(self.collection_name)
