"""The routes of the HTTP API (registered by :func:`vtr_qdrant.serve.app.create_app`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ..errors import MissingDependencyError, VideoDecodeError
from ..store.filters import check_filter
from ..store.points import Key, user_fields
from ..store.videos import StoredVideo
from .config import MAX_LIMIT, ServeConfig
from .handle import CollectionHandle
from .media import open_media, parse_range, servable_path, stream_range
from .observe import Metrics
from .problems import ApiError, as_api_error
from .schemas import SearchRequest, SearchResponse, hit_out
from .thumbs import Thumbnails

__all__ = ["ServeState", "router"]

router = APIRouter()
VideoId = Path(min_length=1, max_length=512, description="the video's id")


@dataclass
class ServeState:
    """What the routes share (``app.state.serve``)."""

    handle: CollectionHandle
    config: ServeConfig
    metrics: Metrics
    thumbs: Thumbnails


def _state(request: Request) -> ServeState:
    return request.app.state.serve  # type: ignore[no-any-return]


def _cache_control(state: ServeState) -> str:
    return ("private" if state.config.api_key else "public") + ", max-age=300"


async def _search(state: ServeState, query: str, limit: int, query_filter: Any, aggregation: str | None) -> SearchResponse:
    if not query.strip():
        raise ApiError(400, "invalid_query", "query must be a non-empty text, e.g. {\"query\": \"a red circle\"}")
    vc = await state.handle.get()
    start = time.perf_counter()
    try:
        flt = check_filter(query_filter, what="filter")
        hits = await vc.search(query, limit=limit, query_filter=flt, aggregation=aggregation)
    except Exception as e:
        raise as_api_error(e, where="search") from None
    return SearchResponse(hits=[hit_out(h) for h in hits], took_ms=(time.perf_counter() - start) * 1000)


@router.post("/search", response_model=SearchResponse)
async def search_post(request: Request, body: SearchRequest) -> SearchResponse:
    """Search by text: ``{"query", "limit", "filter", "aggregation"}``."""
    return await _search(_state(request), body.query, body.limit, body.query_filter, body.aggregation)


@router.get("/search", response_model=SearchResponse)
async def search_get(
    request: Request,
    q: str = Query(max_length=1000, description="the text to search for"),
    limit: int = Query(10, ge=1, le=MAX_LIMIT),
    filter: str | None = Query(None, max_length=16_384, description="a Qdrant filter as JSON"),
    aggregation: str | None = Query(None, max_length=64),
) -> SearchResponse:
    """Search by text from a link: ``/search?q=...&limit=...``."""
    try:
        flt = None if filter is None else json.loads(filter)
    except ValueError:
        raise ApiError(400, "invalid_filter", "filter must be a Qdrant filter in JSON, e.g. {\"must\": [...]}") from None
    return await _search(_state(request), q, limit, flt, aggregation)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """``{"status": "ok", "collection", "videos"}``; 503 while the vector store is unreachable."""
    state = _state(request)
    vc = await state.handle.get()
    try:
        n = await vc.count()
    except Exception as e:
        raise as_api_error(e, where="health") from None
    return {"status": "ok", "collection": vc.collection_name, "videos": n}


@router.get("/fields")
async def fields(request: Request) -> dict[str, Any]:
    """The payload fields the collection indexes (the page offers filters on them)."""
    state = _state(request)
    await state.handle.get()
    return {"fields": state.handle.fields}


async def _stored(state: ServeState, video_id: str) -> StoredVideo:
    vc = await state.handle.get()
    try:
        video = await vc.get(video_id, with_frames=False)
    except Exception as e:
        raise as_api_error(e, where="get video") from None
    if video is None:
        raise ApiError(404, "video_not_found", f"collection {vc.collection_name!r} has no video {video_id!r}")
    return video


@router.get("/videos/{video_id}")
async def video(request: Request, video_id: str = VideoId) -> dict[str, Any]:
    """The stored metadata of a video."""
    v = await _stored(_state(request), video_id)
    p = v.payload
    return {
        "video_id": v.video_id, "uri": p.get(Key.URI), "duration": p.get(Key.DURATION),
        "segments": len(v.point_ids), "frames": len(v.timestamps), "ingested_at": p.get(Key.INGESTED_AT),
        "payload": user_fields(p),
    }


@router.api_route("/videos/{video_id}/media", methods=["GET", "HEAD"])
async def media(request: Request, video_id: str = VideoId) -> Response:
    """The video file, whole (200) or by a ``Range`` (206 + ``Content-Range``)."""
    state = _state(request)
    v = await _stored(state, video_id)
    media = await run_in_threadpool(open_media, video_id, servable_path(video_id, v.payload, state.config.media_roots))
    try:
        if_range = request.headers.get("if-range")
        rng = parse_range(request.headers.get("range"), media.size) if if_range in (None, media.etag) else None
    except ApiError:
        media.close()
        raise
    start, end = rng or (0, media.size - 1)
    headers = {
        "Accept-Ranges": "bytes", "ETag": media.etag, "Last-Modified": formatdate(media.mtime, usegmt=True),
        "Cache-Control": _cache_control(state), "Content-Length": str(max(0, end - start + 1)),
    }
    if rng is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{media.size}"
    status = 206 if rng is not None else 200
    if request.method == "HEAD":
        media.close()
        return Response(status_code=status, headers=headers, media_type=media.content_type)
    return StreamingResponse(stream_range(media, start, end), status_code=status, headers=headers,
                             media_type=media.content_type, background=BackgroundTask(media.close))


@router.get("/videos/{video_id}/thumbnail")
async def thumbnail(
    request: Request, video_id: str = VideoId, t: float = Query(0.0, ge=0, le=86_400, allow_inf_nan=False)
) -> Response:
    """A JPEG frame of the video at ``t`` seconds (clamped to the video's duration), cached."""
    state = _state(request)
    v = await _stored(state, video_id)
    real = servable_path(video_id, v.payload, state.config.media_roots)
    media = await run_in_threadpool(open_media, video_id, real)
    duration = v.payload.get(Key.DURATION)
    if isinstance(duration, int | float) and duration > 0:
        t = min(t, max(0.0, float(duration) - 0.1))
    try:  # ffmpeg reads the file opened and checked here, not whatever the path points at later
        jpeg = await state.thumbs.get(real, media.etag, t, fd=media.fd)
    except MissingDependencyError as e:
        raise ApiError(503, "thumbnails_unavailable", str(e)) from None
    except VideoDecodeError as e:
        raise ApiError(404, "thumbnail_unavailable", f"no frame of video {video_id!r} at {t:.1f} s ({e.reason})") from None
    finally:
        media.close()
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": _cache_control(state), "ETag": f'{media.etag[:-1]}-{t:.1f}"'})
