"""Opening and indexing a video with PyAV (inside the worker process: imports ``av``)."""

from __future__ import annotations

import os
import time
from typing import Any

import av
import av.logging
import numpy as np

from ..errors import DecodeTimeoutError, UnsafeInputError, VideoDecodeError
from . import ffmpeg_bin
from .ffmpeg import format_refused

__all__ = [
    "watch_parent",
    "check_deadline",
    "open_container",
    "classify_av_error",
    "detected_format",
    "video_stream",
    "index_timeline",
    "stream_header",
]

# Check the deadline every this many packets in the index pass.
_INDEX_CHECK_EVERY = 256


_parent_pid: int | None = None  # set in a worker: it stops when its parent is gone


def watch_parent(pid: int) -> None:
    """Make :func:`check_deadline` end this process once ``pid`` is no longer its parent (orphaned)."""
    global _parent_pid
    _parent_pid = pid


def check_deadline(deadline: float, text: str) -> None:
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(3)  # orphaned mid-decode: nobody will read the result
    if time.monotonic() > deadline:
        raise DecodeTimeoutError(
            text, "decoding did not finish within the per-video timeout; raise `timeout` if this video "
            "is legitimately long")


def open_container(text: str, url: str, deadline: float) -> Any:
    """Open ``url`` with only the ``file`` protocol and the video demuxers allowed."""
    opts = ffmpeg_bin.input_options("file", allow_playlists=False)
    remaining = max(0.001, deadline - time.monotonic())
    err: av.error.FFmpegError | None = None
    av.logging.set_level(av.logging.WARNING)  # captured below: the messages classify failures
    try:
        with av.logging.Capture() as logs:
            try:
                return av.open(url, mode="r", container_options=opts, timeout=(remaining, remaining))
            except av.error.FFmpegError as e:
                err = e
    finally:
        av.logging.set_level(None)
    log = "\n".join(str(m[2]).rstrip() for m in logs)
    if "not on whitelist" in log and "Format" in log:
        raise format_refused(text, detected_format(url) or "unknown")
    if isinstance(err, av.error.ExitError):  # the open timeout's interrupt callback fired
        check_deadline(deadline, text)
    reason, message = ffmpeg_bin.classify_failure(log or str(err))
    if reason == "decode_failed":
        reason, message = classify_av_error(err)
    exc = UnsafeInputError if reason in ffmpeg_bin.UNSAFE_REASONS else VideoDecodeError
    raise exc(text, message, reason=reason)


def classify_av_error(err: Exception | None) -> tuple[str, str]:
    if isinstance(err, av.error.FileNotFoundError):
        return "not_found", "the file does not exist"
    if isinstance(err, av.error.PermissionError):
        return "permission_denied", "the file is not readable"
    if isinstance(err, av.error.InvalidDataError):
        return "invalid_data", f"FFmpeg does not recognise the data as any allowed media format ({err})"
    return "decode_failed", f"FFmpeg failed: {err}"


def detected_format(url: str) -> str | None:
    """The demuxer FFmpeg's probe picks, without letting any demuxer read the file.

    The format whitelist names no real demuxer, so opening stops right after probing the first
    bytes, before a playlist demuxer could open anything it lists.
    """
    av.logging.set_level(av.logging.DEBUG)
    try:
        with av.logging.Capture() as logs:
            try:
                av.open(url, mode="r", container_options={"protocol_whitelist": "file",
                                                          "format_whitelist": "vtr_qdrant_none"}).close()
            except av.error.FFmpegError:
                pass
    finally:
        av.logging.set_level(None)
    for m in logs:
        line = str(m[2])
        if line.startswith("Format ") and " probed with size=" in line:
            return line.split()[1]
    for m in logs:  # probe gave up: the demuxer ffmpeg would have fallen back to is named as context
        if "not on whitelist" in str(m[2]) and m[1]:
            return str(m[1]).split(",")[0]
    return None


def video_stream(container: Any, text: str) -> Any:
    for s in container.streams:
        if s.type == "video" and not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    audio = any(s.type == "audio" for s in container.streams)
    raise VideoDecodeError(text, "the file has no video stream" + (" (audio only)" if audio else ""),
                           reason="no_video_stream")


def index_timeline(container: Any, stream: Any, text: str, deadline: float
           ) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Demux once: sorted unique frame pts and keyframe pts (stream ticks), and the stream end (ticks).

    Same rules as the ffmpeg engine's framecrc pass: pts (dts when missing), packets flagged
    discard (edit-list pre-roll) left out, the first frame always counts as a keyframe.
    """
    pts_list: list[int] = []
    key_list: list[int] = []
    end = None
    n = 0
    for pk in container.demux(stream):
        n += 1
        if n % _INDEX_CHECK_EVERY == 0:
            check_deadline(deadline, text)
        p = pk.pts if pk.pts is not None else pk.dts
        if p is None or pk.is_discard:
            continue
        pts_list.append(p)
        if pk.is_keyframe:
            key_list.append(p)
        e = p + max(pk.duration or 0, 0)
        end = e if end is None or e > end else end
    ticks = np.unique(np.asarray(pts_list, dtype=np.int64))
    keys = np.unique(np.asarray(key_list, dtype=np.int64))
    if ticks.size and (keys.size == 0 or keys[0] > ticks[0]):
        keys = np.concatenate([ticks[:1], keys])
    return ticks, keys, None if end is None else float(end)


def stream_header(container: Any, stream: Any) -> ffmpeg_bin.StreamHeader:
    cc = stream.codec_context
    sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
    rate = stream.average_rate
    return ffmpeg_bin.StreamHeader(
        format_name=container.format.name,
        container_duration=None if container.duration is None else container.duration / 1e6,
        start_time=0.0 if container.start_time is None else container.start_time / 1e6,
        has_video=True,
        has_audio=any(s.type == "audio" for s in container.streams),
        codec=cc.name,
        width=int(cc.width),
        height=int(cc.height),
        sar=float(sar) if sar else 1.0,
        fps=float(rate) if rate else None,
        rotation=0,  # the display matrix is read from the first decoded frame
    )
