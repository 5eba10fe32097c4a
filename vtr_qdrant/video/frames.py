"""What decoding produces: a video's timeline, its sampled frames, and its segments (one point each)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["VideoInfo", "SampledFrames", "Segment", "clip_geometry", "segment_spans", "segment_windows"]


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video without decoding it.

    Attributes:
        uri: The source as given.
        format_name: Demuxer ffmpeg detected (e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``).
        codec: Video codec name (e.g. ``"h264"``).
        duration: Seconds from the first frame to the end of the last frame.
        start_time: Container start time in seconds; every timestamp is relative to it.
        fps: Average frame rate ffmpeg reports (``None`` if unknown).
        width: Upright display width in pixels (after rotation).
        height: Upright display height in pixels (after rotation).
        rotation: Display-matrix rotation, counter-clockwise degrees (0/90/180/270).
        sar: Sample aspect ratio (pixel width / pixel height).
        frame_times: ``(N,)`` float64, sorted presentation time of every frame, seconds.
        keyframe_times: ``(K,)`` float64, sorted presentation time of every keyframe, seconds.
    """

    uri: str
    format_name: str
    codec: str | None
    duration: float
    start_time: float
    fps: float | None
    width: int
    height: int
    rotation: int
    sar: float
    frame_times: np.ndarray
    keyframe_times: np.ndarray

    @property
    def num_frames(self) -> int:
        """Number of frames the video presents."""
        return int(self.frame_times.shape[0])


@dataclass(frozen=True)
class SampledFrames:
    """Frames sampled from one video, ready for a CLIP image tower.

    Attributes:
        uri: The source as given.
        images: ``(F, size, size, 3)`` uint8 RGB. Resized like CLIP inside ffmpeg's filter graph:
            short side to ``size`` (bicubic, Catmull-Rom like PIL), then centre crop; upright
            (display rotation applied) and at display aspect (SAR applied).
        timestamps: ``(F,)`` float64 seconds, the true presentation time of each returned frame
            (from the decoder), relative to the container start; non-decreasing.
        duration: Seconds from the first frame to the end of the last frame.
        fps: Average source frame rate, ``None`` if unknown.
        width: Upright source width in pixels.
        height: Upright source height in pixels.
        rotation: Display rotation that was applied, counter-clockwise degrees.
        padded: How many of the F frames repeat an earlier frame because the video has fewer
            distinct frames than were asked for.
        mode: ``"exact"`` or ``"fast"``.
        keyframe_hits: In fast mode, how many frames are keyframes that stand in for the exact
            frame (the others fell back to exact decoding); 0 in exact mode.
    """

    uri: str
    images: np.ndarray
    timestamps: np.ndarray
    duration: float
    fps: float | None
    width: int
    height: int
    rotation: int
    padded: int
    mode: str
    keyframe_hits: int = 0


@dataclass(frozen=True)
class Segment:
    """A window of a sampled video that becomes one Qdrant point.

    Attributes:
        index: 0-based position of the window in the video.
        start: Window start, seconds (same clock as ``SampledFrames.timestamps``).
        end: Window end, seconds (exclusive).
        frame_indices: ``(n,)`` int64 indices into ``SampledFrames.images``/``timestamps``.
    """

    index: int
    start: float
    end: float
    frame_indices: np.ndarray


def clip_geometry(width: int, height: int, sar: float, rotation: int, size: int) -> tuple[int, int, int, int]:
    """CLIP-style resize of an upright ``width`` x ``height`` picture: ``(w, h, x, y)``.

    The picture is scaled to ``w`` x ``h`` (display aspect, short side = ``size``), then the
    ``size`` x ``size`` crop at offset ``(x, y)`` is kept. ``sar`` is the stored pixel aspect and
    ``rotation`` the display rotation (0/90/180/270) already applied to ``width``/``height``.
    """
    disp_w = max(1, round(width * (sar if rotation in (0, 180) else 1.0)))
    disp_h = max(1, round(height * (1.0 if rotation in (0, 180) else 1.0 / sar)))
    if disp_w <= disp_h:
        w, h = size, max(size, int(size * disp_h / disp_w))
    else:
        w, h = max(size, int(size * disp_w / disp_h)), size
    return w, h, int(round((w - size) / 2.0)), int(round((h - size) / 2.0))


def segment_spans(
    timestamps: np.ndarray,
    *,
    duration: float | None = None,
    max_frames: int,
    segment_seconds: float | None = None,
) -> list[tuple[int, int, float, float]]:
    """Split a video's frames into consecutive segments, one Qdrant point each.

    Every frame lands in exactly one segment; segments are ordered and never empty. With
    ``segment_seconds``, segments are the cells ``[k*s, (k+1)*s)`` of the timestamp clock that hold
    frames, and a cell with more than ``max_frames`` frames is split into equal parts. Without it,
    the frames are split into the fewest equal parts of at most ``max_frames`` frames. Split points
    lie midway between neighbouring frames; the first segment starts at 0 (or its grid line), the
    last ends at the video's end.

    Args:
        timestamps: (F,) float64 seconds, non-decreasing.
        duration: the video's duration in seconds (None: the last timestamp).
        max_frames: hard cap of frames per segment (the multivector limit).
        segment_seconds: segment length in seconds, or None for count-based segments.

    Returns:
        ``[(first_frame, stop_frame, start_seconds, end_seconds), ...]``.
    """
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise ConfigError(f"max_frames must be a positive integer, got {max_frames!r}")
    if segment_seconds is not None and not (segment_seconds > 0 and math.isfinite(segment_seconds)):
        raise ConfigError(f"segment_seconds must be a positive number, got {segment_seconds!r}")
    ts = np.asarray(timestamps, dtype=np.float64)
    n = ts.shape[0]
    if n == 0:
        return []
    end_all = float(ts[-1]) if duration is None or not math.isfinite(duration) else max(float(duration), float(ts[-1]))
    groups: list[tuple[float, float, int, int]] = []
    if segment_seconds is None:
        groups.append((0.0, end_all, 0, n))
    else:
        cell = np.floor(ts / segment_seconds + 1e-9).astype(np.int64)
        cuts = [0, *(np.flatnonzero(np.diff(cell)) + 1).tolist(), n]
        for a, b in zip(cuts[:-1], cuts[1:]):
            c = int(cell[a])
            groups.append((c * segment_seconds, min((c + 1) * segment_seconds, end_all), a, b))
    out: list[tuple[int, int, float, float]] = []
    for start, end, a, b in groups:
        parts = math.ceil((b - a) / max_frames)
        base, extra = divmod(b - a, parts)  # equal parts, the first ones one longer (np.array_split)
        bounds = np.cumsum([a] + [base + 1] * extra + [base] * (parts - extra))
        for p in range(parts):
            i, j = int(bounds[p]), int(bounds[p + 1])
            s = start if p == 0 else float((ts[i - 1] + ts[i]) / 2)
            e = end if p == parts - 1 else float((ts[j - 1] + ts[j]) / 2)
            out.append((i, j, float(s), float(max(e, s))))
    return out


def segment_windows(frames: SampledFrames, *, segment_seconds: float | None = None,
                    max_frames_per_segment: int) -> list[Segment]:
    """Split a sampling into consecutive windows, one Qdrant point each.

    Every frame lands in exactly one window; windows are ordered and never empty. With
    ``segment_seconds``, windows are ``[k*s, (k+1)*s)`` on the timestamp clock (empty ones are
    skipped) and any window holding more than ``max_frames_per_segment`` frames is split into
    equal parts. Without it, the frames are split into the fewest equal-sized windows of at most
    ``max_frames_per_segment`` frames. Split boundaries lie midway between neighbouring frames;
    the first window starts at 0 (or its grid line), the last ends at the video's end.

    Args:
        frames: The sampling to split.
        segment_seconds: Window length in seconds, or ``None`` for count-based windows.
        max_frames_per_segment: Upper bound on frames per window (e.g. 2047 for 512-d vectors
            under Qdrant's 1,048,576-float multivector limit).

    Returns:
        The windows, ``index`` 0..n-1.
    """
    spans = segment_spans(frames.timestamps, duration=float(frames.duration), max_frames=max_frames_per_segment,
                          segment_seconds=segment_seconds)
    return [Segment(index=k, start=s, end=e, frame_indices=np.arange(a, b, dtype=np.int64))
            for k, (a, b, s, e) in enumerate(spans)]
