"""THE mapping from a search hit to a document a RAG application can cite.

The LangChain, LlamaIndex and Haystack retrievers of :mod:`vtr_qdrant.integrations` all build their
framework's document type from :class:`HitDocument`, so a hit reads the same in every stack:

- **order**: one document per hit, in :meth:`VideoCollection.search
  <vtr_qdrant.collection.VideoCollection.search>` order (best first);
- **text** (:func:`hit_text`): the stored caption field (the first of :data:`TEXT_FIELDS` the hit's
  payload holds as a non-empty string), else ``content(hit)`` when a ``content`` callable is given,
  else ``"<uri> [<start>–<end> s]"`` — the video and the moment that matched, to one decimal;
- **metadata** (:func:`hit_metadata`): the user's payload fields, then ``video_id``, ``uri``,
  ``score``, ``stage1_score``, ``start``, ``end``, ``peak`` (seconds of the best frame),
  ``segment_index``, ``duration``. These nine keys win over user fields of the same name. Never
  included: the per-frame timestamps and attention weights, digests and hashes, versions and the
  other bookkeeping fields of :class:`~vtr_qdrant.store.points.Key`.

Everything here is plain Python (no framework import), so it is cheap to import and test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..search.hits import VideoHit
from ..store.points import Key, user_fields

__all__ = [
    "TEXT_FIELDS", "METADATA_KEYS", "Content", "HitDocument", "hit_text", "hit_metadata", "hit_documents", "check_content",
]

#: payload fields that hold a human-written text of the video, tried in this order
TEXT_FIELDS = ("caption", "description")
#: the keys every document's metadata carries (``uri`` and ``duration`` may be None)
METADATA_KEYS = ("video_id", "uri", "score", "stage1_score", "start", "end", "peak", "segment_index", "duration")

#: a callable giving a hit's document text when its payload has no caption
Content = Callable[[VideoHit], str]


@dataclass(frozen=True)
class HitDocument:
    """One hit as a citable document, before it becomes a framework's type.

    Attributes:
        id: the video id (hits are one per video, so it is unique within a result list).
        text: the document text (:func:`hit_text`).
        metadata: JSON-serialisable fields (:func:`hit_metadata`).
        score: the hit's stage-2 score (higher is better).
    """

    id: str
    text: str
    metadata: dict[str, Any]
    score: float


def _uri(hit: VideoHit) -> str | None:
    uri = hit.payload.get(Key.URI)
    return None if uri is None else str(uri)


def hit_text(hit: VideoHit, content: Content | None = None) -> str:
    """The document text of a hit (rule in the module docstring).

    Raises:
        ConfigError: ``content`` returned something other than a str.
    """
    for name in TEXT_FIELDS:
        value = hit.payload.get(name)
        if isinstance(value, str) and value.strip():
            return value
    if content is not None:
        text = content(hit)
        if not isinstance(text, str):
            raise ConfigError(f"content must return a str for each hit, got {type(text).__name__} for {hit.video_id!r}")
        return text
    return f"{_uri(hit) or hit.video_id} [{hit.moment.start:.1f}–{hit.moment.end:.1f} s]"


def hit_metadata(hit: VideoHit) -> dict[str, Any]:
    """The document metadata of a hit: user payload fields plus :data:`METADATA_KEYS` (module docstring)."""
    out = user_fields(hit.payload)
    duration = hit.payload.get(Key.DURATION)
    out.update(
        video_id=hit.video_id,
        uri=_uri(hit),
        score=hit.score,
        stage1_score=hit.stage1_score,
        start=hit.moment.start,
        end=hit.moment.end,
        peak=hit.moment.peak,
        segment_index=hit.segment_index,
        duration=None if duration is None else float(duration),
    )
    return out


def hit_documents(hits: Sequence[VideoHit], content: Content | None = None) -> list[HitDocument]:
    """Hits -> :class:`HitDocument`, in the hits' order."""
    return [HitDocument(h.video_id, hit_text(h, content), hit_metadata(h), h.score) for h in hits]


def check_content(content: object) -> Content | None:
    """``content`` if it is None or callable, else a :class:`ConfigError`."""
    if content is not None and not callable(content):
        raise ConfigError(f"content must be a callable VideoHit -> str or None, got {type(content).__name__}")
    return content  # type: ignore[return-value]
