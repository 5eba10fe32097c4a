"""The PyAV decoding engine: frame sampling with FFmpeg's libraries in-process.

This module runs inside a worker subprocess (``python -m vtr_qdrant._pyav``, managed by
:mod:`vtr_qdrant._pyav_pool`) so that a decode that never returns can be killed; it can also be
called in-process (:func:`sample`) by tests and benchmarks. It imports ``av`` at import time:
nothing outside the worker imports it.

One open container per video:

1. **Index** — open under the same protocol and demuxer whitelists as the ffmpeg engine and demux
   the video packets once (no decoding) for every frame's presentation time and keyframe flag.
   The timeline, duration and frame choice are computed by the same code as the ffmpeg engine
   (:mod:`vtr_qdrant.video.sampling`: ``make_info``, ``target_times``, ``choose_frames``), so both engines
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
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import av.logging
import numpy as np

from ..errors import (
    VideoDecodeError,
)
from . import ffmpeg_bin
from .ffmpeg import format_refused
from .frames import clip_geometry
from .pyav_open import (
    check_deadline,
    index_timeline,
    open_container,
    stream_header,
    video_stream,
    watch_parent,
)
from .pyav_wire import HEADER, error_reply, read_exact, write_all
from .sampling import choose_frames, make_info, target_times

__all__ = ["sample", "SEEK_COST_FRAMES", "NONREF_CODECS", "worker_main"]

# A seek costs about this many frames of decoding (demuxer seek, decoder flush, frame-thread
# pipeline refill). Far cheaper than the ffmpeg engine's new input per run.
SEEK_COST_FRAMES = 8
# Decoders whose skip_frame=NONREF is applied per packet and skips only frames no other frame
# references. Elsewhere (e.g. libdav1d reads it once at open) every packet is decoded.
NONREF_CODECS = frozenset({"h264", "hevc"})
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
        w, h, x, y = clip_geometry(upright_w, upright_h, self.sar, rotation, self.size)
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
        check_deadline(deadline, text)
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
        req: ``uri`` (text for messages), ``url`` (``file:`` URL checked by ``video.source.check_source``),
            ``num_frames``, ``fps``, ``size``, ``mode``, ``max_frames``, ``timeout_s`` (seconds left).

    Returns:
        ``(meta, images, timestamps)``: ``meta`` holds the :class:`~vtr_qdrant.video.SampledFrames`
        scalar fields; ``images`` ``(F, size, size, 3)`` uint8; ``timestamps`` ``(F,)`` float64.
    """
    text, url, size, mode = req["uri"], req["url"], int(req["size"]), req["mode"]
    deadline = time.monotonic() + float(req["timeout_s"])
    check_deadline(deadline, text)
    container = open_container(text, url, deadline)
    try:
        names = set(container.format.name.split(","))
        if not names & set(ffmpeg_bin.VIDEO_DEMUXERS):  # defence in depth: the whitelist already held
            raise format_refused(text, container.format.name)
        stream = video_stream(container, text)
        stream.thread_type = "AUTO"
        header = stream_header(container, stream)
        ticks, key_ticks, end_ticks = index_timeline(container, stream, text, deadline)
        tb = float(stream.time_base)
        info = make_info(text, header, ticks.astype(np.float64) * tb, key_ticks.astype(np.float64) * tb,
                                None if end_ticks is None else end_ticks * tb)
        targets, window = target_times(info, req.get("num_frames"), req.get("fps"))
        max_frames = req.get("max_frames")
        if max_frames is not None and targets.size > max_frames:
            raise VideoDecodeError(
                text, f"sampling at {req.get('fps')} fps gives {targets.size} frames for {info.duration:.1f} s, "
                f"more than max_frames={max_frames}; lower fps or raise max_frames", reason="too_many_frames")
        chosen, keyframe_hits = choose_frames(info, targets, window, mode)
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

def worker_main() -> None:
    """Serve requests on stdin/stdout until stdin closes (the parent went away or released us).

    No PR_SET_PDEATHSIG: it fires when the *thread* that started the worker exits, and workers
    are shared by the caller's threads. An orphaned worker exits at its next deadline check.
    """
    watch_parent(os.getppid())
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr  # nothing but replies may reach the reply pipe
    write_all(fd_out, HEADER.pack(0))  # ready (imports done)
    while True:
        head = read_exact(fd_in, HEADER.size)
        if head is None:
            return
        body = read_exact(fd_in, HEADER.unpack(head)[0])
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
            reply = error_reply(e)
        reply["cpu_s"] = time.process_time() - cpu0
        reply["payload"] = [len(p) for p in payload]
        data = json.dumps(reply).encode()
        write_all(fd_out, HEADER.pack(len(data)) + data)
        for p in payload:
            write_all(fd_out, p)


if __name__ == "__main__":
    worker_main()
