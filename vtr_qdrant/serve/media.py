"""Which stored file may be served, and serving it by HTTP ranges.

No part of a request ever reaches the file system: the route looks the video id up in the
collection, and the path comes from the stored payload (:func:`~vtr_qdrant.store.points.source_of`).
That path is served only when its real path (every symbolic link resolved, relative paths taken
from the server's working directory, as ingestion did) lies inside one of the ``--media-root``
folders (themselves resolved once at start-up); anything else — a URL, a file outside the roots, a
link that leads out of them, something that is not a regular file — is answered 404. The file is
opened once, without following a final symbolic link, and streamed from that descriptor.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..store.points import source_of
from .problems import ApiError

__all__ = ["MediaFile", "servable_path", "open_media", "parse_range", "stream_range", "CHUNK_BYTES"]

CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _unavailable(video_id: str, why: str) -> ApiError:
    return ApiError(404, "media_unavailable", f"video {video_id!r} has no file this server may serve ({why})")


def servable_path(video_id: str, payload: Mapping[str, Any], roots: Sequence[str]) -> str:
    """The real path of a stored video's file, if it lies inside a media root.

    Raises:
        ApiError: 404 when there is no stored path, it is a remote URL, or it resolves outside
            every root (symbolic links included).
    """
    source = source_of(payload)
    if not source:
        raise _unavailable(video_id, "no stored source")
    if not roots:
        raise _unavailable(video_id, "the server was started without --media-root")
    parts = urlsplit(source)
    if parts.scheme == "file":
        source = unquote(parts.path)
    elif len(parts.scheme) > 1:  # http://..., s3://... (a one-letter scheme is a Windows drive)
        raise _unavailable(video_id, "its source is a URL, not a local file")
    real = os.path.realpath(os.path.abspath(source))
    if not any(real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        raise _unavailable(video_id, "its file is not inside a --media-root")
    return real


@dataclass
class MediaFile:
    """An open regular file: descriptor, size, content type and validator."""

    fd: int
    size: int
    content_type: str
    etag: str
    mtime: float

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def open_media(video_id: str, real: str) -> MediaFile:
    """Open ``real`` (from :func:`servable_path`) for reading.

    Raises:
        ApiError: 404 when it is gone, is a symbolic link now, or is not a regular file.
    """
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise _unavailable(video_id, "its file cannot be opened") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _unavailable(video_id, "its source is not a regular file")
    kind = mimetypes.guess_type(real)[0] or "application/octet-stream"
    return MediaFile(fd, st.st_size, kind, f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"', st.st_mtime)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``[first, last]`` (inclusive) a ``Range`` header asks for; None: the whole file.

    A header this server does not handle (another unit, several ranges) is ignored, as RFC 9110
    allows: the whole file is sent.

    Raises:
        ApiError: 416 (with ``Content-Range: bytes */size``) when the range lies outside the file.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        n = int(last)
        start, end = max(0, size - n), size - 1
        if n == 0 or size == 0:
            start, end = size, size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None  # syntactically invalid: ignored
    if start >= size or start > end:
        raise ApiError(416, "range_not_satisfiable", f"the range {header!r} lies outside the file ({size} bytes)",
                       headers={"Content-Range": f"bytes */{size}"})
    return start, end


async def stream_range(media: MediaFile, start: int, end: int) -> AsyncIterator[bytes]:
    """The bytes ``[start, end]`` of the file, in chunks read off the event loop; closes the file."""
    from starlette.concurrency import run_in_threadpool

    try:
        pos = start
        while pos <= end:
            chunk = await run_in_threadpool(os.pread, media.fd, min(CHUNK_BYTES, end - pos + 1), pos)
            if not chunk:
                break
            pos += len(chunk)
            yield chunk
    finally:
        media.close()
