"""Evaluation inputs: query files (``{"query", "video_ids"}`` per line) and caption files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, InvalidInputError

__all__ = ["EvalQuery", "read_queries", "read_captions"]


@dataclass(frozen=True)
class EvalQuery:
    """One evaluation query: a caption and the ids of the videos it describes.

    Attributes:
        text: the caption.
        video_ids: the relevant videos.
        kind: optional query kind (``scene``, ``video``, ...): metrics are also reported per kind.
        spans: optional ``{video_id: ((start, end), ...)}`` seconds where the caption happens in each
            relevant video: the top hit's moment is scored against them (temporal IoU).
    """

    text: str
    video_ids: tuple[str, ...]
    kind: str | None = None
    spans: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()

    def spans_of(self, video_id: str) -> tuple[tuple[float, float], ...]:
        """The spans given for one relevant video (empty when none)."""
        return next((s for v, s in self.spans if v == video_id), ())


def _jsonl(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ArtifactError(f"cannot read {p}: {e}") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"{p}:{n}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{p}:{n}: expected a JSON object per line, got {type(obj).__name__}")
        out.append((n, obj))
    if not out:
        raise InvalidInputError(f"{p} holds no records")
    return out


def read_queries(path: str | os.PathLike[str]) -> list[EvalQuery]:
    """Read an MSR-VTT-style query file: ``{"query": str, "video_ids": [str, ...]}`` per line.

    ``"video_id": str`` is accepted for a single relevant video. Optional fields: ``"kind"`` (e.g.
    ``"scene"`` / ``"video"``: metrics are also reported per kind and on a balanced mix) and
    ``"spans"`` (``{"video_id": [[start, end], ...]}`` seconds: moments are scored by temporal IoU).

    Raises:
        InvalidInputError: a malformed line (the message names the file and line).
        ArtifactError: the file cannot be read.
    """
    out = []
    for n, obj in _jsonl(path):
        text = obj.get("query")
        ids = obj.get("video_ids", [obj["video_id"]] if "video_id" in obj else None)
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"{path}:{n}: 'query' must be a non-empty string")
        if not isinstance(ids, list) or not ids or not all(isinstance(v, str) and v for v in ids):
            raise InvalidInputError(f"{path}:{n}: 'video_ids' must be a non-empty list of video id strings")
        kind = obj.get("kind")
        if kind is not None and (not isinstance(kind, str) or not kind):
            raise InvalidInputError(f"{path}:{n}: 'kind' must be a non-empty string (e.g. 'scene', 'video')")
        out.append(EvalQuery(text, tuple(ids), kind, _spans(obj.get("spans"), f"{path}:{n}")))
    return out


def _spans(value: Any, where: str) -> tuple[tuple[str, tuple[tuple[float, float], ...]], ...]:
    """``{"video_id": [[start, end], ...]}`` (or one ``[start, end]`` per video) -> sorted tuples."""
    if value is None:
        return ()
    how = "'spans' must map video ids to [start, end] seconds or lists of them, with start < end"
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: {how}")
    out = []
    for vid, raw in sorted(value.items()):
        items = [raw] if raw and not isinstance(raw[0], (list, tuple)) else raw
        try:
            pairs = tuple((float(a), float(b)) for a, b in items)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{where}: {how}") from None
        if not pairs or any(not a < b for a, b in pairs):
            raise InvalidInputError(f"{where}: {how}")
        out.append((str(vid), pairs))
    return tuple(out)


def read_captions(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read a training caption file: ``{"video_id": str, "caption": str}`` per line.

    Returns:
        ``[(video_id, caption), ...]`` in file order (a video may have many captions).
    """
    out = []
    for n, obj in _jsonl(path):
        vid, cap = obj.get("video_id"), obj.get("caption")
        if not isinstance(vid, str) or not vid or not isinstance(cap, str) or not cap.strip():
            raise InvalidInputError(f"{path}:{n}: expected {{'video_id': str, 'caption': non-empty str}}")
        out.append((vid, cap))
    return out
