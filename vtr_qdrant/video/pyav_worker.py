"""The PyAV decoding engine: frame sampling with FFmpeg's libraries in-process.

This module runs inside a worker subprocess (``python -m vtr_qdrant._pyav``, managed by
:mod:`vtr_qdrant._pyav_pool`) so that a decode that never returns can be killed; it can also be
called in-process (:func:`sample`) by tests and benchmarks. It imports ``av`` at import time:
nothing outside the worker imports it.

One open container per video:

1. **Index** — open under the same protocol and demuxer whitelists as the ffmpeg engine and demux
   the video packets once (no decoding) for every frame's presentation time and keyframe flag.
   The timeline, duration and frame choice are computed by the same code as the ffmpeg engine
   (:func:`vtr_qdrant.video._make_info`, ``_target_times``, ``_choose_frames``), so both engines
   pick the same frames.
2. **Decode** — needed frames are grouped into runs: decode forward, and seek (to the keyframe
   before a target) only when that keyframe is more than :data:`SEEK_COST_FRAMES` frames past the
   current position. A run feeds packets in decode order up to the last needed packet and then
   drains the decoder, so nothing after the last target of a run is decoded. On the way to a
   target, packets that are not returned are decoded with ``skip_frame=NONREF`` (H.264/HEVC): a
   non-reference frame is by definition never used to reconstruct another, so the returned frames
   are bit-identical to a full decode (tested). Frame threading (``thread_type="AUTO"``).
3. **Convert** — only returned frames go through a filter graph equal to the ffmpeg engine's
   (display rotation, ``scale`` bicubic/Catmull-Rom, rgb24, centre ``crop``), i.e. resized like
   CLIP inside FFmpeg, not in Python.

The worker protocol is length-prefixed JSON plus raw array bytes (never pickle: the worker parses
untrusted files, so the parent must not execute anything it sends).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import av.logging
import numpy as np

from ..errors import (
    ConfigError,
    DecodeTimeoutError,
    MissingDependencyError,
    UnsafeInputError,
    VideoDecodeError,
)
from . import decode as video
from . import ffmpeg_bin

__all__ = ["sample", "SEEK_COST_FRAMES", "NONREF_CODECS", "worker_main"]

# A seek costs about this many frames of decoding (demuxer seek, decoder flush, frame-thread
# pipeline refill). Far cheaper than the ffmpeg engine's new input per run.
SEEK_COST_FRAMES = 8
# Decoders whose skip_frame=NONREF is applied per packet and skips only frames no other frame
# references. Elsewhere (e.g. libdav1d reads it once at open) every packet is decoded.
NONREF_CODECS = frozenset({"h264", "hevc"})
# Check the deadline every this many packets in the index pass.
_INDEX_CHECK_EVERY = 256


_parent_pid: int | None = None  # set in a worker: it stops when its parent is gone


def _check(deadline: float, text: str) -> None:
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(3)  # orphaned mid-decode: nobody will read the result
    if time.monotonic() > deadline:
        raise DecodeTimeoutError(
            text, "decoding did not finish within the per-video timeout; raise `timeout` if this video "
            "is legitimately long")


def _open(text: str, url: str, deadline: float) -> Any:
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
        raise video._format_refused(text, _detected_format(url) or "unknown")
    if isinstance(err, av.error.ExitError):  # the open timeout's interrupt callback fired
        _check(deadline, text)
    reason, message = ffmpeg_bin.classify_failure(log or str(err))
    if reason == "decode_failed":
        reason, message = _classify_av_error(err)
    exc = UnsafeInputError if reason in ffmpeg_bin._UNSAFE_REASONS else VideoDecodeError
    raise exc(text, message, reason=reason)


def _classify_av_error(err: Exception | None) -> tuple[str, str]:
    if isinstance(err, av.error.FileNotFoundError):
        return "not_found", "the file does not exist"
    if isinstance(err, av.error.PermissionError):
        return "permission_denied", "the file is not readable"
    if isinstance(err, av.error.InvalidDataError):
        return "invalid_data", f"FFmpeg does not recognise the data as any allowed media format ({err})"
    return "decode_failed", f"FFmpeg failed: {err}"


def _detected_format(url: str) -> str | None:
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


def _video_stream(container: Any, text: str) -> Any:
    for s in container.streams:
        if s.type == "video" and not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    audio = any(s.type == "audio" for s in container.streams)
    raise VideoDecodeError(text, "the file has no video stream" + (" (audio only)" if audio else ""),
                           reason="no_video_stream")


def _index(container: Any, stream: Any, text: str, deadline: float
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
            _check(deadline, text)
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


def _header(container: Any, stream: Any) -> ffmpeg_bin.StreamHeader:
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


class Converter:
    """Filter graph turning a decoded frame into a CLIP-sized rgb24 array (same chain as ffmpeg's)."""

    def __init__(self, size: int, sar: float, time_base: Fraction) -> None:
        self.size, self.sar, self.time_base = size, sar, time_base
        self.key: tuple[int, int, str, int] | None = None
        self.graph: Any = None
        self.rotation = 0

    def __call__(self, frame: Any) -> np.ndarray:
        rotation = int(round(frame.rotation or 0)) % 360
        key = (frame.width, frame.height, frame.format.name, rotation)
        if key != self.key:
            self._build(*key)
        self.graph.vpush(frame)
        out = self.graph.vpull()
        return np.ascontiguousarray(out.to_ndarray())

    def _build(self, width: int, height: int, fmt: str, rotation: int) -> None:
        upright_w, upright_h = (height, width) if rotation in (90, 270) else (width, height)
        w, h, x, y = video.clip_geometry(upright_w, upright_h, self.sar, rotation, self.size)
        g = av.filter.Graph()
        nodes = [g.add_buffer(width=width, height=height, format=av.VideoFormat(fmt), time_base=self.time_base)]
        # Display rotation as the ffmpeg CLI applies it (counter-clockwise degrees).
        if rotation == 90:
            nodes.append(g.add("transpose", "cclock"))
        elif rotation == 270:
            nodes.append(g.add("transpose", "clock"))
        elif rotation == 180:
            nodes += [g.add("hflip"), g.add("vflip")]
        nodes += [
            g.add("scale", f"w={w}:h={h}:flags=bicubic+accurate_rnd+full_chroma_int:param0=0:param1=0.5"),
            g.add("format", "rgb24"),
            g.add("crop", f"w={self.size}:h={self.size}:x={x}:y={y}"),
            g.add("setsar", "1"),
            g.add("buffersink"),
        ]
        g.link_nodes(*nodes).configure()
        self.graph, self.key, self.rotation = g, (width, height, fmt, rotation), rotation


def _plan(ticks: np.ndarray, keys: np.ndarray, frames: list[int], seek_cost: int) -> list[list[int]]:
    """Runs ``[keyframe index, needed frame indices...]``: seek only when it saves > seek_cost frames."""
    key_idx = np.searchsorted(ticks, keys)
    runs: list[list[int]] = []
    pos = -1
    for f in frames:
        k = int(key_idx[int(np.searchsorted(key_idx, f, side="right")) - 1])
        if runs and (k <= pos or k - pos <= seek_cost):
            runs[-1].append(f)
        else:
            runs.append([k, f])
        pos = f
    return runs


def _packets(container: Any, stream: Any) -> Iterator[Any]:
    for pk in container.demux(stream):
        if pk.size == 0 and pk.pts is None and pk.dts is None:
            continue  # the end-of-stream marker demux() appends
        yield pk


def _decode_run(container: Any, stream: Any, ticks: np.ndarray, run: list[int], convert: Converter,
                text: str, deadline: float, *, skip_nonref: bool, seek: bool) -> tuple[dict[int, np.ndarray], str]:
    """Decode one run; return ``{frame index: image}`` for the frames it could produce and the last error."""
    cc = stream.codec_context
    key, frames = run[0], run[1:]
    want = {int(ticks[f]): f for f in frames}
    pending = set(want)  # needed packets not yet sent
    got: dict[int, np.ndarray] = {}
    last_error = ""
    if seek:
        container.seek(int(ticks[key]), backward=True, any_frame=False, stream=stream)
    cc.flush_buffers()
    skipping = False

    def take(frame: Any) -> None:
        f = want.get(frame.pts) if frame.pts is not None else None
        if f is not None and f not in got:
            got[f] = convert(frame)

    first = True
    for pk in _packets(container, stream):
        _check(deadline, text)
        p = pk.pts if pk.pts is not None else pk.dts
        if first:
            first = False
            if seek and p is not None and p > ticks[key]:
                last_error = "the demuxer's seek landed past the keyframe"
                break
        needed = p in pending
        if skip_nonref and needed == skipping:
            skipping = not needed
            cc.skip_frame = "NONREF" if skipping else "DEFAULT"
        try:
            for frame in cc.decode(pk):
                take(frame)
        except av.error.FFmpegError as e:  # corrupt packet: go on like the ffmpeg CLI does
            last_error = str(e)
        if needed:
            pending.discard(p)
            if not pending:
                break
    if skipping:
        cc.skip_frame = "DEFAULT"
    try:
        for frame in cc.decode(None):
            take(frame)
    except av.error.EOFError:
        pass
    except av.error.FFmpegError as e:
        last_error = str(e)
    return got, last_error


def sample(req: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Sample frames as :func:`vtr_qdrant.video.sample_frames` does, with PyAV.

    Args:
        req: ``uri`` (text for messages), ``url`` (``file:`` URL checked by ``video._source``),
            ``num_frames``, ``fps``, ``size``, ``mode``, ``max_frames``, ``timeout_s`` (seconds left).

    Returns:
        ``(meta, images, timestamps)``: ``meta`` holds the :class:`~vtr_qdrant.video.SampledFrames`
        scalar fields; ``images`` ``(F, size, size, 3)`` uint8; ``timestamps`` ``(F,)`` float64.
    """
    text, url, size, mode = req["uri"], req["url"], int(req["size"]), req["mode"]
    deadline = time.monotonic() + float(req["timeout_s"])
    _check(deadline, text)
    container = _open(text, url, deadline)
    try:
        names = set(container.format.name.split(","))
        if not names & set(ffmpeg_bin.VIDEO_DEMUXERS):  # defence in depth: the whitelist already held
            raise video._format_refused(text, container.format.name)
        stream = _video_stream(container, text)
        stream.thread_type = "AUTO"
        header = _header(container, stream)
        ticks, key_ticks, end_ticks = _index(container, stream, text, deadline)
        tb = float(stream.time_base)
        info = video._make_info(text, header, ticks.astype(np.float64) * tb, key_ticks.astype(np.float64) * tb,
                                None if end_ticks is None else end_ticks * tb)
        targets, window = video._target_times(info, req.get("num_frames"), req.get("fps"))
        max_frames = req.get("max_frames")
        if max_frames is not None and targets.size > max_frames:
            raise VideoDecodeError(
                text, f"sampling at {req.get('fps')} fps gives {targets.size} frames for {info.duration:.1f} s, "
                f"more than max_frames={max_frames}; lower fps or raise max_frames", reason="too_many_frames")
        chosen, keyframe_hits = video._choose_frames(info, targets, window, mode)
        unique = sorted(set(chosen))
        convert = Converter(size, header.sar, stream.time_base)
        skip = header.codec in NONREF_CODECS
        images: dict[int, np.ndarray] = {}
        last_error = ""
        for run in _plan(ticks, key_ticks, unique, SEEK_COST_FRAMES):
            got, err = _decode_run(container, stream, ticks, run, convert, text, deadline, skip_nonref=skip,
                                   seek=True)
            missing = [f for f in run[1:] if f not in got]
            if missing:
                # Paranoid retry without skipping and from the file start (seek landed late, or a
                # decoder that skipped more than it should): exactness first, speed second.
                container.seek(int(ticks[0]), backward=True, any_frame=False, stream=stream)
                got2, err2 = _decode_run(container, stream, ticks, [0, *missing], convert, text, deadline,
                                         skip_nonref=False, seek=False)
                got.update(got2)
                err = err2 or err
            images.update(got)
            last_error = err or last_error
        lost = [f for f in unique if f not in images]
        if lost:
            raise VideoDecodeError(
                text, f"{len(lost)} of {len(unique)} planned frames could not be decoded (corrupt video data?)"
                + (f"; FFmpeg: {last_error}" if last_error else ""), reason="decode_failed")
    finally:
        container.close()
    out = np.stack([images[f] for f in chosen]) if chosen else np.zeros((0, size, size, 3), np.uint8)
    times = np.asarray([info.frame_times[f] for f in chosen], dtype=np.float64)
    rotation = convert.rotation
    w, h = (info.height, info.width) if rotation in (90, 270) else (info.width, info.height)
    meta = {"duration": info.duration, "fps": info.fps, "width": w, "height": h, "rotation": rotation,
            "padded": len(chosen) - len(unique), "mode": mode, "keyframe_hits": len(keyframe_hits)}
    return meta, out, times


# --------------------------------------------------------------------------------------------
# worker process

_HEADER = struct.Struct("!I")
_ERROR_TYPES = ("VideoDecodeError", "UnsafeInputError", "DecodeTimeoutError", "ConfigError", "MissingDependencyError")


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _error_reply(e: BaseException) -> dict[str, Any]:
    name = type(e).__name__
    if isinstance(e, VideoDecodeError):
        msg = str(e)
        prefix = f"{e.uri}: "
        return {"error": {"type": name if name in _ERROR_TYPES else "VideoDecodeError", "reason": e.reason,
                          "message": msg[len(prefix):] if msg.startswith(prefix) else msg}}
    if isinstance(e, (ConfigError, MissingDependencyError)):
        return {"error": {"type": name, "message": str(e)}}
    return {"error": {"type": "VideoDecodeError", "reason": "decode_failed",
                      "message": f"the PyAV decoder failed: {name}: {e}"}}


def worker_main() -> None:
    """Serve requests on stdin/stdout until stdin closes (the parent went away or released us).

    No PR_SET_PDEATHSIG: it fires when the *thread* that started the worker exits, and workers
    are shared by the caller's threads. An orphaned worker exits at its next deadline check.
    """
    global _parent_pid
    _parent_pid = os.getppid()
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr  # nothing but replies may reach the reply pipe
    _write_all(fd_out, _HEADER.pack(0))  # ready (imports done)
    while True:
        head = _read_exact(fd_in, _HEADER.size)
        if head is None:
            return
        body = _read_exact(fd_in, _HEADER.unpack(head)[0])
        if body is None:
            return
        cpu0 = time.process_time()
        payload: list[bytes | memoryview] = []
        try:
            meta, images, times = sample(json.loads(body))
            reply: dict[str, Any] = {"meta": meta, "shape": list(images.shape)}
            payload = [np.ascontiguousarray(images).tobytes(), np.ascontiguousarray(times, dtype="<f8").tobytes()]
        except BaseException as e:  # every failure is a reply; the worker stays usable
            if isinstance(e, KeyboardInterrupt):
                raise
            reply = _error_reply(e)
        reply["cpu_s"] = time.process_time() - cpu0
        reply["payload"] = [len(p) for p in payload]
        data = json.dumps(reply).encode()
        _write_all(fd_out, _HEADER.pack(len(data)) + data)
        for p in payload:
            _write_all(fd_out, p)


if __name__ == "__main__":
    worker_main()
