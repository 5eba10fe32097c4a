"""Column names of the rows flowing between the stages (the only place they are spelled).

A row is one video. It starts as a source (uri, id, metadata, content hash), gains frames and
timestamps in the decode stage, embeddings in the encode stage, and is written by the sink. A
video that fails at a stage keeps flowing with the ``error_*`` columns set and empty arrays, so
the writer can report it; nothing raises out of a stage for a bad video.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from vtr_qdrant.errors import VtrError
from vtr_qdrant.video.source import display_name

if TYPE_CHECKING:
    from vtr_qdrant.ingest import VideoFailure

__all__ = ["Col", "set_error", "row_failure", "has_error", "uri_cells", "row_source", "STAGES"]

STAGES = ("input", "decode", "encode", "upsert")


class Col:
    """Row columns."""

    URI = "uri"  # always valid UTF-8 (display_name of a local path)
    URI_BYTES = "uri_bytes"  # base64 of the path's bytes when the name is not UTF-8, else ""
    VIDEO_ID = "video_id"
    METADATA = "metadata"  # JSON text
    CONTENT_HASH = "content_hash"  # "" when unknown
    IMAGES = "images"  # (F, S, S, 3) uint8; (0, S, S, 3) after a failure
    TIMESTAMPS = "timestamps"  # (F,) float64
    DURATION = "duration"  # float seconds, NaN when unknown
    FRAMES = "frames"  # (F, D) float32 embeddings; (0, D) after a failure
    DECODE_S = "decode_s"
    ENCODE_S = "encode_s"
    ERROR_STAGE = "error_stage"  # "" when the video is fine
    ERROR_TYPE = "error_type"
    ERROR_REASON = "error_reason"
    ERROR_MESSAGE = "error_message"


ERROR_COLUMNS = (Col.ERROR_STAGE, Col.ERROR_TYPE, Col.ERROR_REASON, Col.ERROR_MESSAGE)


def set_error(row: dict[str, Any], stage: str, e: BaseException) -> dict[str, Any]:
    """Mark a row failed at ``stage`` with the exception's type, reason tag and message."""
    reason = getattr(e, "reason", None) or ("error" if isinstance(e, VtrError) else "unexpected_error")
    row[Col.ERROR_STAGE] = stage
    row[Col.ERROR_TYPE] = type(e).__name__
    row[Col.ERROR_REASON] = str(reason)
    row[Col.ERROR_MESSAGE] = display_name(str(e) or repr(e))  # Arrow strings must be valid UTF-8
    return row


def clear_error(row: dict[str, Any]) -> dict[str, Any]:
    """Set the error columns of a healthy row (empty strings: one stable column type)."""
    for c in ERROR_COLUMNS:
        row[c] = ""
    return row


def uri_cells(uri: str) -> dict[str, str]:
    """The ``uri`` and ``uri_bytes`` cells of a source (lossless for names that are not UTF-8)."""
    shown = display_name(uri)
    raw = base64.b64encode(os.fsencode(uri)).decode("ascii") if shown != uri else ""
    return {Col.URI: shown, Col.URI_BYTES: raw}


def row_source(row: Mapping[str, Any]) -> str:
    """The path or URI to open for a row: its exact name, undecodable bytes included."""
    raw = scalar_str(row.get(Col.URI_BYTES))
    return os.fsdecode(base64.b64decode(raw)) if raw else scalar_str(row[Col.URI])


def has_error(row: Mapping[str, Any]) -> bool:
    """Whether the row failed at some stage."""
    return bool(scalar_str(row.get(Col.ERROR_STAGE)))


def row_failure(row: Mapping[str, Any]) -> VideoFailure:
    """The failures-table entry of a failed row."""
    from vtr_qdrant.ingest import VideoFailure  # qdrant-client: not needed by the encode actors

    return VideoFailure(
        uri=scalar_str(row[Col.URI]),
        video_id=scalar_str(row[Col.VIDEO_ID]),
        stage=scalar_str(row[Col.ERROR_STAGE]),
        error_type=scalar_str(row[Col.ERROR_TYPE]),
        reason=scalar_str(row[Col.ERROR_REASON]),
        message=scalar_str(row[Col.ERROR_MESSAGE]),
    )


def batch_rows(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A numpy batch (column -> array of B values) as B row dicts (arrays stay views)."""
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def scalar_str(v: Any) -> str:
    """A string cell from a numpy batch (may come back as numpy str / bytes / object)."""
    if isinstance(v, bytes):
        return v.decode()
    return str(v) if v is not None else ""


def as_array(v: Any, dtype: Any) -> np.ndarray:
    """A tensor cell from a numpy batch as an ndarray of ``dtype``."""
    return np.asarray(v, dtype=dtype)
