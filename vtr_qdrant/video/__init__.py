"""Video -> frames: sources (paths, URIs, safety), sampling (which timestamps), the decoding
engines (the ffmpeg binary, FFmpeg's libraries through PyAV in a worker pool).

The names below resolve on first use (PEP 562), so ``import vtr_qdrant.video`` imports no decoder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .decode import (
        ENGINES,
        SAMPLING_MODES,
        SampledFrames,
        Segment,
        VideoInfo,
        clip_geometry,
        probe,
        pyav_available,
        resolve_ffmpeg,
        sample_frames,
        segment_windows,
    )

_LAZY = {
    "ENGINES": "decode",
    "SAMPLING_MODES": "sampling",
    "SampledFrames": "frames",
    "Segment": "frames",
    "VideoInfo": "frames",
    "clip_geometry": "frames",
    "probe": "ffmpeg",
    "pyav_available": "decode",
    "resolve_ffmpeg": "ffmpeg_bin",
    "sample_frames": "decode",
    "segment_windows": "frames",
}

__all__ = [
    "ENGINES",
    "SAMPLING_MODES",
    "SampledFrames",
    "Segment",
    "VideoInfo",
    "clip_geometry",
    "probe",
    "pyav_available",
    "resolve_ffmpeg",
    "sample_frames",
    "segment_windows",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
