"""Video sources: which files a request names, whether one is safe to open, and its content hash.

A source is checked before any decoder sees it: URL schemes outside an allow-list, directories,
FIFOs, devices, sockets, empty files and (unless allowed) playlists that would make FFmpeg open other
files are refused with a :class:`~vtr_qdrant.errors.VideoDecodeError` whose ``reason`` says why.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
from collections.abc import Collection, Iterable
from pathlib import Path

from ..errors import ConfigError, InvalidInputError, UnsafeInputError, VideoDecodeError
from .ffmpeg_bin import SCHEME_PROTOCOLS

__all__ = ["VIDEO_EXTENSIONS", "check_source", "looks_like_playlist", "expand_sources", "file_content_hash"]

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
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(text, "the file does not exist", reason="not_found") from None
    except PermissionError:
        raise VideoDecodeError(text, "the file is not accessible (permission denied)",
                               reason="permission_denied") from None
    except OSError as e:
        raise VideoDecodeError(text, f"cannot stat the file: {e}", reason="not_found") from e
    if stat.S_ISDIR(st.st_mode):
        raise VideoDecodeError(text, "is a directory, expected a video file", reason="is_a_directory")
    if not stat.S_ISREG(st.st_mode):
        # FIFOs, devices and sockets can block a reader forever or never end.
        raise UnsafeInputError(text, "is not a regular file (FIFO, device or socket)",
                               reason="not_a_regular_file")
    if st.st_size == 0:
        raise VideoDecodeError(text, "the file is empty (0 bytes)", reason="empty_file")
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except PermissionError:
        raise VideoDecodeError(text, "the file is not readable (permission denied)",
                               reason="permission_denied") from None
    if not allow_playlists and looks_like_playlist(head):
        raise UnsafeInputError(
            text,
            "the file is a playlist (HLS/ffconcat/DASH) that makes ffmpeg open other files; refused. "
            "Pass allow_playlists=True only for trusted playlists",
            reason="playlist",
        )
    return text, "file:" + path, "file"


def looks_like_playlist(head: bytes) -> bool:
    """Whether a file's first bytes are an HLS, ffconcat or DASH playlist."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if any(stripped.startswith(mk) for mk in _PLAYLIST_MARKERS):
        return True
    return b"#EXT-X-" in head[:1024] or b"<MPD" in head[:1024]



def expand_sources(sources: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand folders (recursively, video extensions only) and glob patterns into a sorted file list.

    Paths that do not exist are kept as given, so they are reported as failed videos instead of
    silently vanishing; a glob that matches nothing is an error.
    """
    out: list[str] = []
    for src in sources:
        s = os.fspath(src)
        p = Path(s)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())
        elif any(ch in s for ch in "*?[") and not p.exists():
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InvalidInputError(f"the pattern {s!r} matches no file")
            out += matches
        else:
            out.append(s)
    return list(dict.fromkeys(out))


def file_content_hash(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex, first 32 chars): detects changed files on re-ingestion."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:32]
