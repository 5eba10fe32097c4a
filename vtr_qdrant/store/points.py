"""Embeddings -> Qdrant points: the only place vector names, payload keys and point ids are spelled.

One point per video, or one per segment when a video is long: a multivector must stay under
Qdrant's limit of 1,048,576 floats (2047 frames at 512-d). Local mode and Qdrant Edge do not check
that limit, so we enforce it here for every back end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..video.frames import segment_spans  # one segmentation rule for decoding and storage
from ..video.source import display_name
from .payload import check_metadata, check_text
from .scenes import scene_vectors

__all__ = [
    "SCHEMA_VERSION",
    "VECTOR_FRAMES",
    "VECTOR_POOLED",
    "VECTOR_SCENES",
    "MULTIVECTORS",
    "MAX_MULTIVECTOR_FLOATS",
    "Key",
    "RESERVED_KEYS",
    "user_fields",
    "PointData",
    "point_id",
    "max_frames_per_point",
    "segment_spans",
    "make_points",
    "frames_digest",
    "validate_frames",
    "version_token",
    "source_of",
]

SCHEMA_VERSION = 1
VECTOR_FRAMES = "frames"
VECTOR_POOLED = "pooled"
#: scene vectors (multivector, MaxSim, HNSW): what the frame-aware stage 1 searches (:mod:`.scenes`)
VECTOR_SCENES = "scenes"
#: the named vectors that are multivectors (a one-vector query against them is MaxSim)
MULTIVECTORS = (VECTOR_FRAMES, VECTOR_SCENES)
MAX_MULTIVECTOR_FLOATS = 1_048_576
METADATA_KEY = "vtr_qdrant"
_ID_NAMESPACE = uuid.UUID("6f1c3a52-5d0e-4b8a-9d0c-2f6f7f1b9a10")


class Key:
    """Payload keys written by vtr-qdrant (user metadata sits beside them at the top level)."""

    VIDEO_ID = "video_id"
    URI = "uri"
    #: base64 of the source path's bytes (``os.fsencode``), only when the name is not UTF-8 (``uri``
    #: then holds its escaped form, :func:`~vtr_qdrant.video.source.display_name`)
    URI_BYTES = "uri_bytes"
    DURATION = "duration"
    SEGMENT_INDEX = "segment_index"
    SEGMENT_COUNT = "segment_count"
    SEGMENT_START = "segment_start"
    SEGMENT_END = "segment_end"
    TIMESTAMPS = "timestamps"
    CONTENT_HASH = "content_hash"
    MODEL_FINGERPRINT = "model_fingerprint"
    INGESTED_AT = "ingested_at"
    FRAMES_DIGEST = "frames_digest"
    #: content token of one write of a video (see :func:`version_token`); absent on points written
    #: before versioned writes existed (such a "legacy" video is one complete version)
    VERSION = "version"
    #: 0 while a version's segments are being written, 1 once every segment is stored; a version
    #: with a 0 is invisible to search, counts and reads (absent: complete)
    COMPLETE = "complete"


RESERVED_KEYS = frozenset(v for k, v in vars(Key).items() if k.isupper())


def user_fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The user's fields of a stored payload: everything vtr-qdrant did not write (:data:`RESERVED_KEYS`)."""
    return {k: v for k, v in payload.items() if k not in RESERVED_KEYS}


@dataclass
class PointData:
    """One point ready for any storage back end.

    Attributes:
        id: UUIDv5 string of (video id, segment index).
        frames: (F, D) float32, L2-normalised frame embeddings.
        pooled: (D,) float32, L2-normalised mean of the frames.
        payload: JSON-serialisable payload.
        scenes: (S, D) float32 scene vectors (:func:`~vtr_qdrant.store.scenes.scene_vectors`) for
            collections that index them, else None.
    """

    id: str
    frames: np.ndarray
    pooled: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)
    scenes: np.ndarray | None = None


def point_id(video_id: str, segment_index: int = 0, version: str | None = None) -> str:
    """Deterministic point id of one segment of one version of a video.

    Re-writing the same version overwrites its points instead of duplicating them; a new version
    gets new ids, so it is written beside the old one (which is deleted only once the new one is
    complete). ``version=None`` gives the ids of points written before versions existed.
    """
    key = f"{video_id}\x1f{segment_index}" if version is None else f"{video_id}\x1f{version}\x1f{segment_index}"
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def source_of(payload: Mapping[str, Any]) -> str | None:
    """The stored source as a path this OS can open: ``uri``, or the exact original name (with
    its undecodable bytes, as ``os.fsdecode`` represents them) when ``uri_bytes`` is present."""
    raw = payload.get(Key.URI_BYTES)
    if raw:
        return os.fsdecode(base64.b64decode(raw))
    uri = payload.get(Key.URI)
    return None if uri is None else str(uri)


def max_frames_per_point(dim: int) -> int:
    """Most frames one multivector point may hold at this dimension (2047 at 512-d)."""
    return (MAX_MULTIVECTOR_FLOATS - 1) // dim


def validate_frames(video_id: Any, frames: Any, timestamps: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Check one video's embeddings; returns ``(frames (F, D) float32 normalised, timestamps (F,) float64)``."""
    if not isinstance(video_id, str) or not video_id:
        raise InvalidInputError(f"video_id must be a non-empty str, got {video_id!r}")
    check_text(video_id, "video_id")
    f = np.asarray(frames)
    if f.ndim != 2 or f.shape[1] != dim:
        raise InvalidInputError(f"video {video_id!r}: frames must have shape (F, {dim}), got {f.shape}")
    if f.shape[0] == 0:
        raise InvalidInputError(f"video {video_id!r}: frames is empty; a video needs at least one frame")
    if not np.issubdtype(f.dtype, np.floating):
        raise InvalidInputError(f"video {video_id!r}: frames must be a float array, got dtype {f.dtype}")
    if not np.isfinite(f).all():
        raise InvalidInputError(f"video {video_id!r}: frames contain NaN or infinite values")
    norms = np.linalg.norm(f, axis=1)
    if (norms == 0).any():
        raise InvalidInputError(f"video {video_id!r}: frame {int(np.argmin(norms))} is a zero vector")
    t = np.asarray(timestamps, dtype=np.float64)
    if t.shape != (f.shape[0],):
        raise InvalidInputError(
            f"video {video_id!r}: timestamps must have shape ({f.shape[0]},) to match the frames, got {t.shape}"
        )
    if not np.isfinite(t).all() or (np.diff(t) < 0).any():
        raise InvalidInputError(f"video {video_id!r}: timestamps must be finite and non-decreasing seconds")
    return (f / norms[:, None]).astype(np.float32), t


def frames_digest(frames: np.ndarray) -> str:
    """A short digest of a point's (F, D) float32 frame matrix (16 hex chars of BLAKE2b).

    Stored in the payload (``Key.FRAMES_DIGEST``) so readers can cache frames by (point id, digest):
    a re-ingested video keeps its point ids but gets a new digest when its frames changed.
    """
    arr = np.ascontiguousarray(frames, dtype=np.float32)
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    h.update(arr.tobytes())
    return h.hexdigest()


def version_token(video_id: str, frames: np.ndarray, timestamps: np.ndarray, **fields: Any) -> str:
    """The content token of one write of a video: 16 hex chars of BLAKE2b over its id, frames,
    timestamps and the other stored fields (``fields``, JSON-serialised with sorted keys).

    Writing the same content again gives the same token (so the same point ids: idempotent); any
    change of frames, metadata, uri, model or segmentation gives a new one.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(video_id.encode("utf-8", "surrogatepass"))
    h.update(frames_digest(frames).encode())
    h.update(np.ascontiguousarray(timestamps, dtype=np.float64).tobytes())
    h.update(json.dumps(fields, sort_keys=True, default=str, allow_nan=True).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def make_points(
    video_id: str,
    frames: np.ndarray,
    timestamps: np.ndarray,
    *,
    model_fingerprint: str,
    metadata: Mapping[str, Any] | None = None,
    uri: str | None = None,
    duration: float | None = None,
    content_hash: str | None = None,
    segment_seconds: float | None = None,
    version: str | None = None,
    scenes: bool = False,
) -> list[PointData]:
    """Turn one video's validated embeddings into points (one per segment).

    Args:
        video_id: the video's id (indexed payload field).
        frames: (F, D) float32, L2-normalised (see :func:`validate_frames`).
        timestamps: (F,) float64 seconds.
        model_fingerprint: the bundle fingerprint that produced the frames.
        metadata: user payload fields; may not use a reserved key.
        uri, duration, content_hash: stored as given.
        segment_seconds: cut the video into windows of this many seconds (None: only the
            multivector limit splits it).
        version: the write's :func:`version_token` (stored with ``complete=1``; the writer lowers
            it to 0 while the version is being written). None: unversioned points (legacy ids).
        scenes: give each point its scene vectors (collections with a ``scenes`` vector).
    """
    meta = check_metadata(metadata, where=f"video {video_id!r} metadata")
    clash = RESERVED_KEYS.intersection(meta)
    if clash:
        raise InvalidInputError(
            f"video {video_id!r}: metadata keys {sorted(clash)} are reserved by vtr-qdrant; rename them"
        )
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float, np.number))
                                 or not math.isfinite(float(duration)) or float(duration) < 0):
        raise InvalidInputError(f"video {video_id!r}: duration must be a finite number of seconds >= 0 or None, got {duration!r}")
    duration = None if duration is None else float(duration)
    uri_fields: dict[str, Any] = {Key.URI: None}
    if uri is not None:
        uri_fields[Key.URI] = display_name(uri)
        if uri_fields[Key.URI] != uri:  # a name that is not UTF-8: keep its bytes too
            uri_fields[Key.URI_BYTES] = base64.b64encode(os.fsencode(uri)).decode("ascii")
    if content_hash is not None:
        check_text(content_hash, f"video {video_id!r}: content_hash")
    dim = frames.shape[1]
    spans = segment_spans(timestamps, duration=duration, max_frames=max_frames_per_point(dim), segment_seconds=segment_seconds)
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    points = []
    for i, (a, b, seg_start, seg_end) in enumerate(spans):
        seg = frames[a:b]
        pooled = seg.mean(axis=0)
        pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        payload: dict[str, Any] = {
            **meta,
            Key.VIDEO_ID: video_id,
            **uri_fields,
            Key.DURATION: duration,
            Key.SEGMENT_INDEX: i,
            Key.SEGMENT_COUNT: len(spans),
            Key.SEGMENT_START: seg_start,
            Key.SEGMENT_END: seg_end,
            Key.TIMESTAMPS: [float(x) for x in timestamps[a:b]],
            Key.CONTENT_HASH: content_hash,
            Key.MODEL_FINGERPRINT: model_fingerprint,
            Key.INGESTED_AT: now,
            Key.FRAMES_DIGEST: frames_digest(seg),
        }
        if version is not None:
            payload[Key.VERSION] = version
            payload[Key.COMPLETE] = 1
        points.append(PointData(point_id(video_id, i, version), seg, pooled.astype(np.float32), payload,
                                scene_vectors(seg) if scenes else None))
    return points
