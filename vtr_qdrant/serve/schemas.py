"""Request and response bodies of the HTTP API (pydantic, ``extra="forbid"``: a typo is a 422)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..integrations.documents import hit_metadata
from ..search.hits import VideoHit
from .config import MAX_LIMIT

__all__ = ["SearchRequest", "MomentOut", "HitOut", "SearchResponse", "hit_out"]

#: top-level fields of a hit; the rest of the document metadata goes into ``payload``
_TOP = ("video_id", "uri", "score", "start", "end", "peak")


class SearchRequest(BaseModel):
    """``POST /search``: a text query, how many hits, an optional Qdrant filter and aggregation."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    query: str = Field(max_length=1000, description="the text to search for (non-empty)")
    limit: int = Field(10, ge=1, le=MAX_LIMIT, description=f"how many videos, 1..{MAX_LIMIT}")
    query_filter: dict[str, Any] | None = Field(None, alias="filter", description="a Qdrant filter in its JSON form")
    aggregation: str | None = Field(None, max_length=64, description="stage-2 aggregation (default: the collection's)")


class MomentOut(BaseModel):
    """Where in the video the query matched, in seconds."""

    start: float
    end: float
    peak: float


class HitOut(BaseModel):
    """One ranked video; ``payload`` holds the user's fields plus ``stage1_score``, ``segment_index``, ``duration``."""

    video_id: str
    uri: str | None
    score: float
    moment: MomentOut
    payload: dict[str, Any]


class SearchResponse(BaseModel):
    """``hits`` best first; ``took_ms`` is the search's own time on the server."""

    hits: list[HitOut]
    took_ms: float


def hit_out(hit: VideoHit) -> HitOut:
    """A hit as the API shows it: the document mapping of :mod:`vtr_qdrant.integrations.documents`."""
    meta = hit_metadata(hit)
    return HitOut(
        video_id=hit.video_id,
        uri=meta["uri"],
        score=hit.score,
        moment=MomentOut(start=hit.moment.start, end=hit.moment.end, peak=hit.moment.peak),
        payload={k: v for k, v in meta.items() if k not in _TOP},
    )
