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
    """One evaluation query: a caption and the ids of the videos it describes."""

    text: str
    video_ids: tuple[str, ...]


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

    ``"video_id": str`` is accepted for a single relevant video.

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
        out.append(EvalQuery(text, tuple(ids)))
    return out


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
