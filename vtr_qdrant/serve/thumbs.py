"""Thumbnails: one JPEG frame of a served video at a time, made by the project's ffmpeg, cached.

The frame is cut by :func:`extract_jpeg` with the binary :func:`~vtr_qdrant.video.ffmpeg_bin.resolve_ffmpeg`
names (never one found on ``PATH``), under the same protocol and container whitelists as decoding
and a hard deadline. :class:`Thumbnails` keeps the JPEGs in a byte-bounded LRU keyed by the file's
identity (inode, size, mtime) and the time rounded to 0.1 s, runs at most two ffmpeg processes at
once, and lets concurrent requests for the same frame share one run.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict

from ..errors import VideoDecodeError
from ..video.ffmpeg_bin import input_options, resolve_ffmpeg, run_ffmpeg

__all__ = ["extract_jpeg", "Thumbnails"]


def extract_jpeg(path: str, t: float, *, width: int, timeout_s: float, fd: int | None = None) -> bytes:
    """One frame of the video file ``path`` at ``t`` seconds, as a JPEG ``width`` pixels wide.

    With ``fd`` (the descriptor the caller opened and checked), ffmpeg reads that very file through
    ``/proc/self/fd`` (Linux), so a path swapped for a link after the check is never followed.

    Raises:
        VideoDecodeError: ffmpeg failed or produced no frame (``t`` past the end).
        MissingDependencyError: no ffmpeg binary (the ``video`` extra).
    """
    opts = input_options("file")
    use_fd = fd is not None and os.path.isdir("/proc/self/fd")
    source = f"/proc/self/fd/{fd}" if use_fd else path
    args = [
        resolve_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-protocol_whitelist", opts["protocol_whitelist"], "-format_whitelist", opts["format_whitelist"],
        "-ss", f"{t:.3f}", "-i", "file:" + source,
        "-frames:v", "1", "-vf", f"scale={width}:-2", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "4", "pipe:1",
    ]
    _, out, _ = run_ffmpeg(args, uri=path, deadline=time.monotonic() + timeout_s, pass_fds=(fd,) if use_fd and fd is not None else ())
    if not out:
        raise VideoDecodeError(path, f"no frame at {t:.3f} s", reason="no_frame")
    return out


class Thumbnails:
    """JPEG frames by (file identity, time), cached (see the module docstring).

    Args:
        width: JPEG width in pixels.
        cache_bytes: the cache's memory budget.
        timeout_s: ffmpeg's deadline per frame.
        processes: how many ffmpeg processes may run at once.
    """

    def __init__(self, *, width: int, cache_bytes: int, timeout_s: float, processes: int = 2) -> None:
        self.width = width
        self.cache_bytes = cache_bytes
        self.timeout_s = timeout_s
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._size = 0
        self._pending: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        self._procs = asyncio.Semaphore(processes)
        self.hits = 0
        self.misses = 0

    async def get(self, path: str, identity: str, t: float, fd: int | None = None) -> bytes:
        """The JPEG of ``path`` at ``t`` seconds (``identity`` changes when the file does; ``fd``:
        the checked open file, which ffmpeg then reads instead of the path)."""
        from starlette.concurrency import run_in_threadpool

        key = (identity, round(t * 10))
        if key in self._cache:
            self._cache.move_to_end(key)
            self.hits += 1
            return self._cache[key]
        if key in self._pending:
            return await asyncio.shield(self._pending[key])
        self.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            async with self._procs:
                jpeg = await run_in_threadpool(extract_jpeg, path, key[1] / 10, width=self.width, timeout_s=self.timeout_s, fd=fd)
            future.set_result(jpeg)
            self._remember(key, jpeg)
            return jpeg
        except BaseException as e:
            if isinstance(e, Exception):
                future.set_exception(e)
                future.exception()  # retrieved: waiters get it, nobody else is told it was never awaited
            else:
                future.cancel()
            raise
        finally:
            del self._pending[key]

    def _remember(self, key: tuple[str, int], jpeg: bytes) -> None:
        if len(jpeg) > self.cache_bytes:
            return
        self._cache[key] = jpeg
        self._size += len(jpeg)
        while self._size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._size -= len(old)
