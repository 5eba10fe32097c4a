"""Video sources: which files a request names, whether one is safe to open, and its content hash.

A source is checked before any decoder sees it: URL schemes outside an allow-list, directories,
FIFOs, devices, sockets, empty files and (unless allowed) playlists that would make FFmpeg open other
files are refused with a :class:`~vtr_qdrant.errors.VideoDecodeError` whose ``reason`` says why.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import stat
from collections.abc import Collection, Iterable
from typing import BinaryIO

from ..errors import ConfigError, InvalidInputError, UnsafeInputError, VideoDecodeError
from .ffmpeg_bin import SCHEME_PROTOCOLS

__all__ = [
    "VIDEO_EXTENSIONS",
    "check_source",
    "display_name",
    "default_video_id",
    "inspect_local_source",
    "looks_like_playlist",
    "expand_sources",
    "file_content_hash",
    "open_regular",
]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp", ".ogv"})
_SNIFF_BYTES = 4096
_PLAYLIST_MARKERS = (b"#EXTM3U", b"ffconcat version", b"<MPD", b"#EXT-X-")


def check_source(uri: str | os.PathLike[str], allowed_schemes: Collection[str], allow_playlists: bool
            ) -> tuple[str, str, str]:
    """Validate a source before ffmpeg sees it; return ``(uri text, ffmpeg url, scheme)``."""
    text = os.fspath(uri)
    if not isinstance(text, str) or not text:
        raise ConfigError(f"a video source must be a non-empty path or URL, got {uri!r}")
    allowed = {s.lower() for s in allowed_schemes}
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):", text)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else "file"
    if scheme not in allowed:
        raise UnsafeInputError(
            text,
            f"the URL scheme {scheme!r} is not allowed (allowed: {sorted(allowed)}); pass "
            f"allowed_schemes=(..., {scheme!r}) if this source is trusted",
            reason="scheme_not_allowed",
        )
    if scheme != "file":
        if scheme not in SCHEME_PROTOCOLS:
            raise UnsafeInputError(text, f"the URL scheme {scheme!r} is not supported",
                                   reason="scheme_not_allowed")
        return text, text, scheme
    path = text
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif path.startswith("file:"):
        path = path[len("file:"):]
    path = os.path.abspath(os.path.expanduser(path))
    text = display_name(text)
    st = inspect_local_source(path, shown=text)
    if st.st_size == 0:
        raise VideoDecodeError(text, "the file is empty (0 bytes)", reason="empty_file")
    with open_regular(path, shown=text) as f:
        head = f.read(_SNIFF_BYTES)
    if not allow_playlists and looks_like_playlist(head):
        raise UnsafeInputError(
            text,
            "the file is a playlist (HLS/ffconcat/DASH) that makes ffmpeg open other files; refused. "
            "Pass allow_playlists=True only for trusted playlists",
            reason="playlist",
        )
    return text, "file:" + path, "file"


def display_name(path: str | bytes | os.PathLike[str]) -> str:
    """A path as text that is always valid UTF-8 (storable in a payload, printable in a report).

    Bytes of a file name that are not UTF-8 (``os.fsdecode`` keeps them as lone surrogates)
    become ``\\xNN`` escapes; UTF-8 names are returned unchanged.
    """
    text = os.fsdecode(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes: escape them as code points
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def default_video_id(path: str | os.PathLike[str]) -> str:
    """The id a local file gets when the caller names none: its absolute, symlink-resolved path as
    :func:`display_name` (never raises, even on a symlink loop)."""
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return display_name(os.path.realpath(os.path.expanduser(text)))


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def inspect_local_source(path: str | os.PathLike[str], *, shown: str | None = None) -> os.stat_result:
    """Check that a local path is a regular file, without opening it; return its ``stat``.

    Nothing here can block: FIFOs, devices (``/dev/zero`` behind a symlink...) and sockets are
    refused from their ``stat`` alone, never read.

    Args:
        path: the file (symlinks are followed).
        shown: how to name it in errors (default: :func:`display_name` of ``path``).

    Raises:
        VideoDecodeError: ``reason`` ``not_found``, ``broken_symlink``, ``symlink_loop``,
            ``is_a_directory`` or ``permission_denied``.
        UnsafeInputError: ``reason="not_a_regular_file"`` for a FIFO, device or socket.
    """
    p = os.fspath(path)
    name = shown if shown is not None else display_name(p)
    try:
        return _regular_file(p, name)
    except PermissionError:
        raise VideoDecodeError(name, "the file is not accessible (permission denied); check its permissions "
                               "and those of its folders", reason="permission_denied") from None


def _regular_file(p: str, name: str) -> os.stat_result:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise VideoDecodeError(name, f"is a broken symbolic link (to {display_name(os.readlink(p))!r})",
                                   reason="broken_symlink") from None
        raise VideoDecodeError(name, "the file does not exist", reason="not_found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VideoDecodeError(name, "is a symbolic link loop (it never reaches a file)",
                                   reason="symlink_loop") from None
        if isinstance(e, PermissionError):
            raise
        raise VideoDecodeError(name, f"cannot stat the file: {e.strerror or e}", reason="not_found") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoDecodeError(name, "is a directory, expected a video file (a folder given as a source is "
                               "expanded to the videos under it)", reason="is_a_directory")
    if not stat.S_ISREG(st.st_mode):
        kind = next((what for test, what in _NOT_REGULAR if test(st.st_mode)), "not a regular file")
        # such a file can block a reader forever (FIFO) or never end (/dev/zero): never opened
        raise UnsafeInputError(name, f"is {kind}, not a regular file; it is never opened. Copy the video "
                               "to a regular file to ingest it", reason="not_a_regular_file")
    return st


def open_regular(path: str | os.PathLike[str], *, shown: str | None = None) -> BinaryIO:
    """Open a file for reading only if it is a regular file, without ever blocking.

    The open is non-blocking and the open file is checked again, so a path swapped for a FIFO after
    :func:`inspect_local_source` looked at it cannot hang the reader.

    Raises:
        VideoDecodeError / UnsafeInputError: as :func:`inspect_local_source`.
    """
    name = shown if shown is not None else display_name(path)
    inspect_local_source(path, shown=name)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise VideoDecodeError(name, "the file is not readable (permission denied)", reason="permission_denied") from None
    except OSError as e:
        os_error = e
    else:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        os.close(fd)
        raise UnsafeInputError(name, "stopped being a regular file while it was being opened; refused",
                               reason="not_a_regular_file")
    raise VideoDecodeError(name, f"cannot open the file: {os_error.strerror or os_error}", reason="unreadable")


def looks_like_playlist(head: bytes) -> bool:
    """Whether a file's first bytes are an HLS, ffconcat or DASH playlist."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if any(stripped.startswith(mk) for mk in _PLAYLIST_MARKERS):
        return True
    return b"#EXT-X-" in head[:1024] or b"<MPD" in head[:1024]



def expand_sources(sources: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand folders (recursively) and glob patterns into a list of sources, each once.

    Nothing is dropped silently, so every name ends in the ingestion report:

    * a folder yields every entry under it with a video extension that is not itself a folder:
      regular files, but also FIFOs, devices, broken links and link loops (refused later with a
      reason, never opened); symlinked folders are not followed (no cycles);
    * a folder with no such entry is kept as given (reported as a directory);
    * a path that does not exist is kept as given (reported as not found);
    * a glob that matches nothing is an :class:`InvalidInputError`.
    """
    out: list[str] = []
    for src in sources:
        s = os.fspath(src)
        if os.path.isdir(s):
            found = sorted(_walk_videos(s))
            out += found if found else [s]
        elif any(ch in s for ch in "*?[") and not os.path.lexists(s):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InvalidInputError(f"the pattern {display_name(s)!r} matches no file")
            out += matches
        else:
            out.append(s)
    return list(dict.fromkeys(out))


def _walk_videos(folder: str) -> Iterable[str]:
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        # os.walk lists symlinks to folders (and link loops) among dirs when it cannot tell
        names = files + [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in names:
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                yield os.path.join(root, name)


def file_content_hash(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex, first 32 chars): detects changed files on re-ingestion.

    Raises:
        VideoDecodeError / UnsafeInputError: the path is not a regular file
            (:func:`inspect_local_source`); nothing else is ever opened.
        OSError: reading failed.
    """
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:32]
