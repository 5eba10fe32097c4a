"""Check a collection for videos a crash or another writer left in a bad state, and repair them.

:func:`audit` scans every point (payloads only, no vectors) and groups them by video into a
:class:`~vtr_qdrant.store.videos.VideoState`. A video has a problem when it has:

- ``incomplete_version``: points still marked ``complete=0`` (a crashed write; younger than
  ``min_age`` seconds it may be a write in flight, reported as ``in_flight`` and never touched);
- ``mixed_versions``: points of more than one version (a crash between a flip and its delete);
- ``missing_segments``: the current version lacks some of its segments;
- ``no_complete_version``: no version of the video is complete (invisible to search);
- ``foreign_model``: points written by another model (fingerprint) than the collection's.

:func:`repair` fixes what the store can fix alone: a video whose current version is whole gets
every other point deleted. Videos that need their frames again (no whole version, another model)
are handed to a ``reingest`` callback (the CLI passes one that decodes the stored source path);
without one, or without a readable source, they stay in the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .backend import Candidate
from .points import Key, source_of, user_fields
from .videos import VideoState, VideoStore, current_versions, is_complete

__all__ = ["AuditReport", "VideoProblem", "audit", "repair"]

#: incomplete versions younger than this are taken for writes in flight and left alone (seconds)
DEFAULT_MIN_AGE = 600.0


@dataclass
class VideoProblem:
    """What is wrong with one video, and what a repair did about it.

    Attributes:
        video_id: the video.
        problems: the problem kinds (see the module doc).
        source: the source path stored with it (None for embeddings-only videos).
        versions: version token -> number of stored points.
        missing_segments: segment indexes its current version lacks.
        action: what :func:`repair` did ("" before a repair).
        fixed: whether the video is whole after the repair.
    """

    video_id: str
    problems: list[str]
    source: str | None = None
    versions: dict[str, int] = field(default_factory=dict)
    missing_segments: list[int] = field(default_factory=list)
    action: str = ""
    fixed: bool = False


@dataclass
class AuditReport:
    """The result of :func:`audit` (and of :func:`repair`, which fills in actions).

    Attributes:
        collection: the collection name.
        videos: videos seen (any state).
        points: points scanned.
        problems: one entry per video with a problem.
        foreign_points: points without a ``video_id`` (not written by vtr-qdrant; never touched).
    """

    collection: str
    videos: int = 0
    points: int = 0
    problems: list[VideoProblem] = field(default_factory=list)
    foreign_points: int = 0

    @property
    def remaining(self) -> list[VideoProblem]:
        """Problems a repair has not fixed (all of them before a repair), in-flight writes excluded."""
        return [p for p in self.problems if not p.fixed and p.problems != ["in_flight"]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts, every problem, and ``remaining``."""
        return {**asdict(self), "remaining": len(self.remaining)}


def _age_seconds(payload: dict[str, Any], now: float) -> float:
    try:
        return now - datetime.fromisoformat(str(payload.get(Key.INGESTED_AT))).timestamp()
    except ValueError:
        return float("inf")  # no usable time: old


def _problems(vid: str, recs: Sequence[Candidate], fingerprint: str | None, min_age: float, now: float) -> VideoProblem | None:
    st = VideoState.of(recs)
    kinds: list[str] = []
    stale_incomplete = [r for r in recs if not is_complete(r.payload) and _age_seconds(r.payload, now) >= min_age]
    if st.incomplete:
        kinds.append("incomplete_version" if stale_incomplete else "in_flight")
    if len(st.versions) > 1 and (stale_incomplete or len([v for v in st.versions if v not in st.incomplete]) > 1):
        kinds.append("mixed_versions")
    if st.payload is None:
        kinds.append("no_complete_version")
    elif st.missing_segments:
        kinds.append("missing_segments")
    if fingerprint and any(r.payload.get(Key.MODEL_FINGERPRINT) not in (fingerprint, None) for r in recs):
        kinds.append("foreign_model")
    if not kinds:
        return None
    counts: dict[str, int] = {}
    for r in recs:
        v = str(r.payload.get(Key.VERSION) or "")
        counts[v] = counts.get(v, 0) + 1
    any_payload = st.payload or recs[0].payload
    return VideoProblem(vid, kinds, source_of(any_payload), counts, st.missing_segments)


def _scan(store: VideoStore) -> tuple[dict[str, list[Candidate]], int]:
    by_video: dict[str, list[Candidate]] = {}
    foreign = 0
    for c in store.backend.scroll(store.collection_name, None, with_frames=False, limit=2**62):
        vid = c.payload.get(Key.VIDEO_ID)
        if isinstance(vid, str):
            by_video.setdefault(vid, []).append(c)
        else:
            foreign += 1
    return by_video, foreign


def audit(store: VideoStore, *, min_age: float = DEFAULT_MIN_AGE) -> AuditReport:
    """Scan every point of ``store``'s collection (payloads only) and report each video with a problem.

    Args:
        store: the collection's videos.
        min_age: incomplete versions younger than this many seconds count as writes in flight.

    Returns:
        An :class:`AuditReport`; ``report.remaining`` is empty when every video is whole.
    """
    by_video, foreign = _scan(store)
    now = time.time()
    report = AuditReport(store.collection_name, len(by_video), sum(map(len, by_video.values())), foreign_points=foreign)
    for vid in sorted(by_video):
        p = _problems(vid, by_video[vid], store.fingerprint, min_age, now)
        if p is not None:
            report.problems.append(p)
    return report


#: called with (video_id, source path, user metadata) of each video to decode again; returns the
#: ids that were re-ingested and an error message for each that failed
Reingest = Callable[[Sequence[tuple[str, str, dict[str, Any]]]], tuple[set[str], dict[str, str]]]


def repair(store: VideoStore, report: AuditReport, *, reingest: Reingest | None = None) -> AuditReport:
    """Fix the videos of ``report`` in place (the report's ``action``/``fixed`` fields say what happened).

    - current version whole, same model: every other point of the video is deleted;
    - otherwise, with ``reingest`` and a source file that exists: the video is decoded and written
      again (its user metadata kept), which replaces every old point crash-consistently;
    - otherwise the video is left as it is and stays in ``report.remaining``.

    In-flight writes (``in_flight`` only) are never touched.
    """
    todo: list[tuple[str, str, dict[str, Any]]] = []
    by_id = {p.video_id: p for p in report.problems}
    fixable = [p for p in report.problems if p.problems != ["in_flight"]]
    points = store.points_by_video([p.video_id for p in fixable], with_frames=False)  # as stored now, in one scan
    for p in fixable:
        recs = points.get(p.video_id, [])
        st = VideoState.of(recs)
        same_model = "foreign_model" not in p.problems
        if st.payload is not None and not st.missing_segments and same_model:
            keep = {c.id for c in current_versions(recs)}
            drop = [c.id for c in recs if c.id not in keep]
            store.delete_points(drop)
            p.action, p.fixed = f"deleted {len(drop)} leftover point(s); kept the whole current version", True
        elif p.source is not None and os.path.isfile(p.source) and reingest is not None:
            todo.append((p.video_id, p.source, user_fields((st.payload or recs[0].payload) if recs else {})))
        elif reingest is None:
            p.action = "needs re-ingesting (its frames are not all stored): run verify --repair from the CLI, or ingest it again"
        else:
            p.action = f"cannot re-ingest: source {p.source!r} is not a readable file; ingest it again or delete it"
    if todo:
        done, failed = reingest(todo)  # type: ignore[misc]
        for vid, _, _ in todo:
            p = by_id[vid]
            if vid in done:
                p.action, p.fixed = "re-ingested from its source (old points replaced)", True
            else:
                p.action = f"re-ingest failed: {failed.get(vid, 'unknown error')}"
    return report
