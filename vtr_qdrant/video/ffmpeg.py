"""The ffmpeg-binary decoding engine (ffmpeg-python builds the command lines).

It runs two ffmpeg processes per video, whatever its length:

1. **Probe** (:func:`probe`): ffmpeg opens the file under a protocol and demuxer whitelist and
   stream-copies the video packets to its ``framecrc`` muxer. Nothing is decoded; this costs a
   demux pass and yields the header (codec, size, rotation) and the presentation time and keyframe
   flag of every frame. (imageio-ffmpeg ships no ffprobe.)
2. **Decode** (:func:`sample_with_binary`): with every frame's time known, each requested time maps
   to the exact frame displayed then before decoding starts. Targets are grouped into *runs*: decode
   forward from the current position, and start a new run (a seek to the target's keyframe) only
   when that keyframe is more than about one GOP ahead — the strategy that measured best everywhere
   (per-target seeking re-decodes the same GOP on short clips, 3-4x slower than one full pass; a
   full pass is 5-20x slower on long videos). Each run is one ``-ss`` input of the same ffmpeg
   process; a ``select`` filter keeps exactly the planned frames (``-fps_mode passthrough``, so
   nothing is duplicated), then ``scale``+``crop`` resize like CLIP inside ffmpeg, ``showinfo``
   reports the true pts of each kept frame, and ``concat`` joins the runs into one raw rgb24 pipe.

``mode="fast"`` replaces each target by the nearest keyframe inside its own sampling window and
decodes keyframes only (``-skip_frame nokey``); a target with no keyframe of its own in its window
(short clips, long GOPs) falls back to its exact frame.

Imports of ffmpeg-python happen inside functions.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import require
from ..errors import UnsafeInputError, VideoDecodeError
from . import ffmpeg_bin
from .ffmpeg_bin import UNSAFE_REASONS, resolve_ffmpeg
from .frames import SampledFrames, VideoInfo, clip_geometry
from .sampling import check_timeout, choose_frames, make_info, target_times
from .source import check_source

__all__ = [
    "DEFAULT_DECODE_TIMEOUT",
    "DecodeRun",
    "probe",
    "probe_checked",
    "plan_runs",
    "decode_runs",
    "sample_with_binary",
    "format_refused",
]

#: Seconds one video may take to open, probe and decode (the decoder is killed after it); every
#: entry point (sample_frames, probe, add_videos, the CLI, the Ray job) defaults to this one value.
DEFAULT_DECODE_TIMEOUT = 120.0
# At most this many seek runs (= ffmpeg inputs, each opening the file) in one process.
MAX_INPUTS_PER_PROCESS = 16
# Cost of a new run in frames-worth of decoding (opening the file again and priming the decoder).
SEEK_COST_FRAMES = 24
# Cost of a new run in keyframes-worth of a keyframes-only pass (measured: ~25 ms per seek vs
# ~4 ms per keyframe decoded, 5-min 360p H.264).
SEEK_COST_KEYFRAMES = 6


@dataclass
class DecodeRun:
    """One ffmpeg input: decode from ``seek`` (None = file start) until ``end``, keep ``frames``."""

    seek: float | None
    end: float | None
    frames: list[int]
    keyframes_only: bool = False


def probe(uri: str | os.PathLike[str], *, ffmpeg: str | None = None, timeout: float = DEFAULT_DECODE_TIMEOUT,
          allowed_schemes: Collection[str] = ("file",), allow_playlists: bool = False) -> VideoInfo:
    """Read a video's header and frame timeline without decoding it.

    Args:
        uri: Local path (or ``file:`` URL; other schemes only if in ``allowed_schemes``).
        ffmpeg: ffmpeg binary (see :func:`resolve_ffmpeg`).
        timeout: Seconds before ffmpeg is killed.
        allowed_schemes: URL schemes accepted; local files only by default.
        allow_playlists: Accept HLS/ffconcat/DASH playlists (they open the files they list).

    Returns:
        The :class:`VideoInfo`.

    Raises:
        VideoDecodeError: With ``reason`` in ``not_found``, ``is_a_directory``, ``empty_file``,
            ``truncated``, ``invalid_data``, ``not_a_video``, ``no_video_stream``, ``no_frames``...
        UnsafeInputError: ``scheme_not_allowed``, ``playlist``, ``format_not_allowed``,
            ``not_a_regular_file``.
        DecodeTimeoutError: ffmpeg ran longer than ``timeout``.
    """
    text, url, scheme = check_source(uri, allowed_schemes, allow_playlists)
    deadline = time.monotonic() + check_timeout(timeout)
    return probe_checked(text, url, scheme, resolve_ffmpeg(ffmpeg), deadline, allow_playlists)


def probe_checked(text: str, url: str, scheme: str, ffbin: str, deadline: float, allow_playlists: bool
           ) -> VideoInfo:
    ffmpeg_py = require("ffmpeg", "video", purpose="building ffmpeg command lines")
    opts = ffmpeg_bin.input_options(scheme, allow_playlists=allow_playlists)
    cmd = (
        ffmpeg_py.input(url, **opts)["V:0"]
        # -copyinkf: keep packets before the first keyframe, so the timeline lists every frame.
        .output("pipe:1", c="copy", format="framecrc", copyinkf=None)
        .compile(cmd=ffbin)
    )
    cmd = _with_globals(cmd)
    rc, out, err = ffmpeg_bin.run_ffmpeg(cmd, uri=text, deadline=deadline, check=False)
    header = ffmpeg_bin.parse_header(err)
    if rc != 0:
        reason, message = ffmpeg_bin.classify_failure(err)
        if reason == "format_not_allowed":
            _raise_for_format(ffbin, url, text, deadline)
        if "Input #0" in err and not header.has_video:
            reason, message = "no_video_stream", (
                "the file has no video stream" + (" (audio only)" if header.has_audio else ""))
        exc = UnsafeInputError if reason in UNSAFE_REASONS else VideoDecodeError
        raise exc(text, message, reason=reason)
    if not header.has_video:
        raise VideoDecodeError(text, "the file has no video stream", reason="no_video_stream")
    times, keys, end = _parse_framecrc(out.decode("ascii", "replace"))
    return make_info(text, header, times, keys, end)


# Global options go first: ffmpeg-python appends them after the output, where ffmpeg warns that
# trailing options may be ignored. -copyts keeps the file's own timestamps end to end.
_GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-copyts")


def _with_globals(cmd: list[str]) -> list[str]:
    return [cmd[0], *_GLOBAL_ARGS, *cmd[1:]]


_IMAGE_FORMATS = ("image2", "image2pipe", "apng", "webp", "svg", "tiff", "bmp")


def _raise_for_format(ffbin: str, url: str, text: str, deadline: float) -> None:
    name = ffmpeg_bin.detected_format(ffbin, url, uri=text, deadline=deadline) or "unknown"
    raise format_refused(text, name)


def format_refused(text: str, name: str) -> VideoDecodeError:
    """The error for a file whose detected demuxer ``name`` is not on the allowed list."""
    if name in ffmpeg_bin.PLAYLIST_DEMUXERS:
        return UnsafeInputError(
            text, f"ffmpeg detects a {name} playlist, which opens other files; refused. Pass "
            f"allow_playlists=True only for trusted playlists", reason="playlist")
    if name.endswith("_pipe") or name in _IMAGE_FORMATS:
        return VideoDecodeError(text, f"the file is a still image ({name}), not a video", reason="not_a_video")
    return UnsafeInputError(text, f"the container format {name!r} is not on the allowed list",
                            reason="format_not_allowed")


_NOPTS = -(2**63)


def _parse_framecrc(text: str) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Frame and keyframe presentation times (seconds, absolute) and stream end from framecrc."""
    num, den = 1, 1
    pts_list: list[int] = []
    key_list: list[int] = []
    end = -(2**62)
    for line in text.splitlines():
        if line.startswith("#tb 0:"):
            num_s, den_s = line.split(":", 1)[1].strip().split("/")
            num, den = int(num_s), int(den_s)
            continue
        if not line or line[0] == "#":
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or parts[0] != "0":
            continue
        dts, pts, dur = int(parts[1]), int(parts[2]), int(parts[3])
        flags = 1
        for p in parts[6:]:
            if p.startswith("F=0x"):
                flags = int(p[4:], 16)
        if pts == _NOPTS:
            pts = dts
        if pts == _NOPTS or flags & 0x4:  # no timestamp, or AV_PKT_FLAG_DISCARD (edit-list pre-roll)
            continue
        pts_list.append(pts)
        if flags & 0x1:
            key_list.append(pts)
        end = max(end, pts + max(dur, 0))
    if not pts_list:
        return np.zeros(0), np.zeros(0), None
    tb = num / den
    times = np.unique(np.asarray(pts_list, dtype=np.int64)).astype(np.float64) * tb
    keys = np.unique(np.asarray(key_list, dtype=np.int64)).astype(np.float64) * tb
    if keys.size == 0 or keys[0] > times[0]:
        # The first frame is always a valid place to start decoding from.
        keys = np.concatenate([times[:1], keys])
    return times, keys, end * tb


def sample_with_binary(
    text: str, url: str, scheme: str, *, ffmpeg: str | None, num_frames: int | None, fps: float | None,
    size: int, mode: str, max_frames: int | None, deadline: float, allow_playlists: bool,
) -> SampledFrames:
    """:func:`~vtr_qdrant.video.decode.sample_frames` with the ffmpeg binary, for a checked source."""
    ffbin = resolve_ffmpeg(ffmpeg)
    info = probe_checked(text, url, scheme, ffbin, deadline, allow_playlists)
    targets, window = target_times(info, num_frames, fps)
    if max_frames is not None and targets.size > max_frames:
        raise VideoDecodeError(
            text, f"sampling at {fps} fps gives {targets.size} frames for {info.duration:.1f} s, more "
            f"than max_frames={max_frames}; lower fps or raise max_frames", reason="too_many_frames")
    chosen, keyframe_hits = choose_frames(info, targets, window, mode)
    runs = plan_runs(info, chosen, keyframe_hits)
    unique = sorted(set(chosen))
    images, times = decode_runs(ffbin, url, scheme, text, info, runs, size, deadline, allow_playlists)
    pos = {f: i for i, f in enumerate(unique)}
    order = np.fromiter((pos[f] for f in chosen), dtype=np.int64, count=len(chosen))
    return SampledFrames(
        uri=text,
        images=images[order],
        timestamps=times[order],
        duration=info.duration,
        fps=info.fps,
        width=info.width,
        height=info.height,
        rotation=info.rotation,
        padded=len(chosen) - len(unique),
        mode=mode,
        keyframe_hits=len(keyframe_hits),
    )




def plan_runs(info: VideoInfo, chosen: Sequence[int], keyframe_hits: set[int],
               seek_cost_frames: int | None = None) -> list[DecodeRun]:
    """Group frames into decode runs: forward decoding, seeking only when it saves enough."""
    ft = info.frame_times
    kt = info.keyframe_times
    gaps = np.diff(ft)
    typical = float(np.median(gaps)) if gaps.size else 0.04
    # Index of the keyframe a decoder must start from to produce each frame.
    key_frame_idx = np.clip(np.searchsorted(ft, kt - 1e-6, side="left"), 0, ft.size - 1)
    # Seek only when the keyframe before the next target is far enough past the current decode
    # position that skipping those frames saves more than opening a new run costs (measured on
    # 2 cores: 24 frames beat 8, 60 (= one 2 s GOP) and never-seek on 10 s/30 s/5 min videos).
    threshold = SEEK_COST_FRAMES if seek_cost_frames is None else seek_cost_frames
    runs: list[DecodeRun] = []
    # Keyframe stand-ins (fast mode) are cheap seek targets: the run starting at a keyframe
    # decodes just it. Only when there are many of them is one keyframes-only pass over the
    # whole file (-skip_frame nokey: every keyframe decoded) cheaper than seeking to each.
    if keyframe_hits and len(keyframe_hits) * SEEK_COST_KEYFRAMES > kt.size:
        runs.append(DecodeRun(seek=None, end=None, frames=sorted(keyframe_hits), keyframes_only=True))
        exact_frames = sorted(set(chosen) - keyframe_hits)
    else:
        exact_frames = sorted(set(chosen))
    cur: DecodeRun | None = None
    pos = -1  # last frame index the current run decodes
    for f in exact_frames:
        k = int(key_frame_idx[max(0, int(np.searchsorted(key_frame_idx, f, side="right")) - 1)])
        if cur is not None and (k <= pos or k - pos <= threshold):
            cur.frames.append(f)
        else:
            seek = None if k == 0 else float(ft[k])
            cur = DecodeRun(seek=seek, end=None, frames=[f])
            runs.append(cur)
        pos = f
    for r in runs:
        if not r.keyframes_only:
            # Demuxing stops on dts >= end; dts <= pts, so a margin of a few frames suffices.
            r.end = float(ft[r.frames[-1]]) + 3 * typical + 0.05
    return runs


_SHOWINFO_RE = re.compile(r"\] n:\s*\d+\s+pts:\s*(-?\d+)\s+pts_time:(-?[0-9.e+\-]+)")


def decode_runs(ffbin: str, url: str, scheme: str, text: str, info: VideoInfo, runs: list[DecodeRun], size: int,
            deadline: float, allow_playlists: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode the planned frames; return images and true times sorted by frame index."""
    ffmpeg_py = require("ffmpeg", "video", purpose="building ffmpeg command lines")
    opts = ffmpeg_bin.input_options(scheme, allow_playlists=allow_playlists)
    w, h, x, y = clip_geometry(info.width, info.height, info.sar, info.rotation, size)
    ft = info.frame_times
    gaps = np.diff(ft)
    eps = float(min(1e-3, 0.25 * gaps[gaps > 0].min())) if np.any(gaps > 0) else 1e-3
    frame_bytes = size * size * 3
    got_images: dict[int, np.ndarray] = {}
    got_times: dict[int, float] = {}
    for b in range(0, len(runs), MAX_INPUTS_PER_PROCESS):
        batch = runs[b: b + MAX_INPUTS_PER_PROCESS]
        chains = []
        for r in batch:
            kw: dict[str, Any] = dict(opts)
            if r.keyframes_only:
                # Not "-discard nokey" as well: it is faster, but the MP4 demuxer then shifts the
                # keyframes' pts (measured: 2.0667 s for a keyframe at 2.0 s with B-frames).
                kw["skip_frame"] = "nokey"
            if r.seek is not None:
                # Seeking lands on the keyframe at or before the point; a small step past the
                # keyframe's pts keeps float rounding from landing one GOP early.
                kw["ss"] = f"{r.seek + eps:.6f}"
                kw["noaccurate_seek"] = None
            if r.end is not None:
                kw["t"] = f"{r.end - (r.seek or 0.0):.6f}"
            expr = _any_of([f"lt(abs(t-{ft[f] + info.start_time:.6f}),{eps:.7f})" for f in r.frames])
            chain = (
                ffmpeg_py.input(url, **kw)["V:0"]
                .filter("select", expr)
                .filter("scale", w, h, flags="bicubic+accurate_rnd+full_chroma_int", param0=0, param1=0.5)
                .filter("format", "rgb24")
                .filter("crop", size, size, x, y)
                .filter("setsar", 1)
                .filter("showinfo", checksum=0)
            )
            chains.append(chain)
        joined = chains[0] if len(chains) == 1 else ffmpeg_py.concat(*chains, v=1, a=0)
        cmd = (
            joined.output("pipe:1", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
            .compile(cmd=ffbin)
        )
        cmd = _with_globals(cmd)
        _, out, err = ffmpeg_bin.run_ffmpeg(cmd, uri=text, deadline=deadline)
        expected = [f for r in batch for f in r.frames]
        shown = [float(m.group(2)) for m in _SHOWINFO_RE.finditer(err)]
        n_out = len(out) // frame_bytes
        if n_out != len(expected) or len(shown) != len(expected):
            missing = len(expected) - min(n_out, len(shown))
            raise VideoDecodeError(
                text, f"{missing} of {len(expected)} planned frames could not be decoded (corrupt video "
                f"data?); ffmpeg: {ffmpeg_bin.last_error_line(err, 'rror')}", reason="decode_failed")
        frames = np.frombuffer(out, dtype=np.uint8, count=n_out * frame_bytes).reshape(n_out, size, size, 3)
        abs_expected = np.array([ft[f] + info.start_time for f in expected])
        if not np.allclose(np.sort(np.asarray(shown)), np.sort(abs_expected), atol=max(2 * eps, 1e-5)):
            raise VideoDecodeError(
                text, "the decoder returned frames at other times than the file's index says",
                reason="decode_failed")
        for i, f in enumerate(expected):
            got_images[f] = frames[i]
            got_times[f] = float(ft[f])
    keys = sorted(got_images)
    images = np.stack([got_images[k] for k in keys]) if keys else np.zeros((0, size, size, 3), np.uint8)
    return images, np.array([got_times[k] for k in keys], dtype=np.float64)


def _any_of(terms: list[str]) -> str:
    """OR of expression terms as a balanced ``max`` tree: ffmpeg's expression parser refuses
    (ENOMEM) a flat ``a+b+...`` chain deeper than ~100 terms; the tree is log2(n) deep."""
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    return f"max({_any_of(terms[:mid])},{_any_of(terms[mid:])})"
