"""Which frames to take: the collection's sampling settings, the requested times, the chosen frames.

Both decoding engines (:mod:`.ffmpeg` and :mod:`.pyav_worker`) build the same :class:`VideoInfo`
with :func:`make_info` and choose frames with :func:`target_times` and :func:`choose_frames`, so
they return the same frames.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError, VideoDecodeError
from .ffmpeg_bin import StreamHeader
from .frames import VideoInfo

__all__ = [
    "SamplingConfig",
    "SAMPLING_MODES",
    "validate_sampling_args",
    "check_timeout",
    "make_info",
    "target_times",
    "choose_frames",
]

SAMPLING_MODES = ("exact", "fast")


class SamplingConfig(BaseModel):
    """How frames are sampled from a video; recorded in the collection so every video matches.

    Attributes:
        num_frames: frames per video, X-Pool protocol (middle of N equal parts). Default 12.
        fps: alternatively, one frame every 1/fps seconds (long videos). Exactly one of the two.
        mode: ``exact`` (frame-accurate) or ``fast`` (nearest keyframe, true timestamps).
        segment_seconds: cut long videos into points of this many seconds (None: only the
            multivector size limit splits a video).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0)
    mode: Literal["exact", "fast"] = "exact"
    segment_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_rate(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("num_frames") is None and data.get("fps") is None:
            return {**data, "num_frames": 12}
        return data

    @model_validator(mode="after")
    def _one_rate(self) -> SamplingConfig:
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("set exactly one of num_frames (frames per video) and fps (frames per second)")
        return self


def validate_sampling_args(num_frames: int | None, fps: float | None, size: int, mode: str,
                   max_frames: int | None) -> None:
    if (num_frames is None) == (fps is None):
        raise ConfigError("pass exactly one of num_frames= (X-Pool protocol) or fps= (frames per second)")
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int)
                                   or num_frames < 1):
        raise ConfigError(f"num_frames must be a positive integer, got {num_frames!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096:
        raise ConfigError(f"size must be an integer in [1, 4096], got {size!r}")
    if mode not in SAMPLING_MODES:
        raise ConfigError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ConfigError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    if max_frames is not None and num_frames is not None and num_frames > max_frames:
        raise ConfigError(f"num_frames={num_frames} exceeds max_frames={max_frames}")


def target_times(info: VideoInfo, num_frames: int | None, fps: float | None) -> tuple[np.ndarray, float]:
    """Requested times (seconds, relative clock) and the width of each sampling window."""
    t0 = float(info.frame_times[0])
    if num_frames is not None:
        window = info.duration / num_frames
        n = num_frames
    else:
        assert fps is not None  # narrowed by validate_sampling_args
        window = 1.0 / fps
        n = max(1, math.ceil(info.duration * fps - 0.5))
    return t0 + (np.arange(n, dtype=np.float64) + 0.5) * window, window


def choose_frames(info: VideoInfo, targets: np.ndarray, window: float, mode: str
                   ) -> tuple[list[int], set[int]]:
    """Frame index for each target, and the set of frames chosen as keyframe stand-ins."""
    ft = info.frame_times
    tol = 1e-6
    exact = np.clip(np.searchsorted(ft, targets + tol, side="right") - 1, 0, ft.size - 1)
    chosen = [int(i) for i in exact]
    keyframe_hits: set[int] = set()
    if mode == "fast":
        kt = info.keyframe_times
        key_idx = np.clip(np.searchsorted(ft, kt - tol, side="left"), 0, ft.size - 1)
        used: set[int] = set()
        for i, t in enumerate(targets):
            lo, hi = t - window / 2, t + window / 2
            a = int(np.searchsorted(kt, lo - tol, side="left"))
            b = int(np.searchsorted(kt, hi - tol, side="left"))
            best = None
            for k in range(a, b):
                f = int(key_idx[k])
                if f in used:
                    continue
                if best is None or abs(kt[k] - t) < abs(kt[best[0]] - t):
                    best = (k, f)
            if best is not None:
                chosen[i] = best[1]
                used.add(best[1])
                keyframe_hits.add(best[1])
    return chosen, keyframe_hits


def make_info(text: str, header: StreamHeader, times: np.ndarray, keys: np.ndarray,
               end: float | None) -> VideoInfo:
    """Build the :class:`VideoInfo` from a header and the packet timeline (absolute seconds).

    Shared by both engines, so that they compute the same duration and choose the same frames.
    """
    if times.size == 0:
        raise VideoDecodeError(text, "the video stream has no frames (zero duration)", reason="no_frames")
    start = header.start_time
    frame_times = np.round(times - start, 9)
    keyframe_times = np.round(keys - start, 9)
    gaps = np.diff(frame_times)
    typical = float(np.median(gaps)) if gaps.size else (1.0 / header.fps if header.fps else 0.04)
    last_end = end - start if end is not None and end - start > frame_times[-1] else frame_times[-1] + typical
    if (header.container_duration is not None and not header.has_audio
            and frame_times[-1] < header.container_duration <= last_end + 10.0):
        # Without audio the container's duration is the video's: it knows how long the last
        # frame stays on screen (VFR), which packet durations often do not.
        last_end = max(last_end, header.container_duration)
    duration = float(last_end - frame_times[0])
    w, h = header.width, header.height
    if header.rotation in (90, 270):
        w, h = h, w
    return VideoInfo(
        uri=text, format_name=header.format_name, codec=header.codec, duration=duration,
        start_time=start, fps=header.fps, width=w, height=h, rotation=header.rotation, sar=header.sar,
        frame_times=frame_times, keyframe_times=keyframe_times,
    )




def check_timeout(timeout: float) -> float:
    """A positive, finite number of seconds, else :class:`ConfigError`."""
    if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)
