"""The ffmpeg binary: where it comes from, how it is run, and what the header it prints means.

Everything here is about the *process*: resolving the executable once, running it in its own
process group with a hard deadline (killing the whole group on timeout), the input options that
make untrusted files safe to open (protocol and demuxer whitelists), and parsing what ffmpeg
reports on stderr. imageio-ffmpeg ships no ffprobe, so probing is done by ffmpeg itself.
Frame sampling built on top of this lives in :mod:`vtr_qdrant.video`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from .._optional import require
from ..errors import DecodeTimeoutError, MissingDependencyError, UnsafeInputError, VideoDecodeError

__all__ = [
    "FFMPEG_ENV_VAR",
    "VIDEO_DEMUXERS",
    "PLAYLIST_DEMUXERS",
    "resolve_ffmpeg",
    "run_ffmpeg",
    "input_options",
    "StreamHeader",
    "parse_header",
    "classify_failure",
    "detected_format",
]

logger = logging.getLogger(__name__)

FFMPEG_ENV_VAR = "VTR_QDRANT_FFMPEG"

# Demuxers allowed to open a file. Each reads only the one file it is given: playlist and
# reference demuxers (hls, dash, concat, image2 patterns, tee...) are absent on purpose, because
# they open other paths named *inside* the file (an .m3u8 listing file:///etc/passwd). Audio-only
# containers are allowed so that they fail with the precise reason "no_video_stream".
VIDEO_DEMUXERS: tuple[str, ...] = (
    "mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "asf", "ogg", "gif",
    "h264", "hevc", "m4v", "mpegvideo", "ivf", "nut", "obu", "dv", "yuv4mpegpipe", "mjpeg",
    "wav", "mp3", "aac", "flac",
)
PLAYLIST_DEMUXERS: tuple[str, ...] = ("hls", "concat", "dash")

# Which URI scheme needs which ffmpeg protocols (nested opens inherit the whitelist).
SCHEME_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "file": ("file",),
    "http": ("http", "tcp"),
    "https": ("https", "http", "tls", "tcp"),
}

_cache: dict[str | None, str] = {}
_cache_lock = threading.Lock()


def resolve_ffmpeg(path: str | None = None) -> str:
    """Return the ffmpeg executable to use, resolved once and cached.

    Order: the explicit ``path`` argument, then the ``VTR_QDRANT_FFMPEG`` environment variable,
    then the binary bundled with ``imageio-ffmpeg``. ffmpeg is never looked up on ``PATH``
    implicitly, so the binary in use is always the one this project installed or was told about.

    Args:
        path: Path to an ffmpeg executable; overrides everything else.

    Returns:
        Absolute path of an executable ffmpeg binary.

    Raises:
        MissingDependencyError: No usable binary; names ``pip install 'vtr-qdrant[video]'``.
    """
    key = path if path is not None else os.environ.get(FFMPEG_ENV_VAR) or None
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    if key is not None:
        found = os.path.abspath(os.path.expanduser(key))
        if not (os.path.isfile(found) and os.access(found, os.X_OK)):
            source = "argument" if path is not None else f"${FFMPEG_ENV_VAR}"
            raise MissingDependencyError(
                f"the ffmpeg binary given by {source} ({key!r}) does not exist or is not executable; "
                f"point it at an ffmpeg executable, or unset it and install the bundled binary with "
                f"pip install 'vtr-qdrant[video]'"
            )
    else:
        imageio_ffmpeg = require("imageio_ffmpeg", "video", purpose="the ffmpeg binary")
        try:
            found = str(imageio_ffmpeg.get_ffmpeg_exe())
        except Exception as e:  # imageio-ffmpeg raises RuntimeError when its binary is missing
            raise MissingDependencyError(
                f"imageio-ffmpeg is installed but has no ffmpeg binary ({e}); reinstall it with "
                f"pip install --force-reinstall 'vtr-qdrant[video]' or set ${FFMPEG_ENV_VAR}"
            ) from e
    with _cache_lock:
        _cache[key] = found
    logger.debug("using ffmpeg binary %s", found)
    return found


def input_options(scheme: str, *, allow_playlists: bool = False) -> dict[str, str]:
    """ffmpeg input options that restrict what opening one source may touch.

    Args:
        scheme: The source's URI scheme (``"file"`` for local paths).
        allow_playlists: Also allow the hls/concat/dash demuxers (they open other files).

    Returns:
        ``{"protocol_whitelist": ..., "format_whitelist": ...}`` for ``ffmpeg.input(**opts)``.
    """
    protocols = list(SCHEME_PROTOCOLS.get(scheme, (scheme,)))
    formats = list(VIDEO_DEMUXERS)
    if allow_playlists:
        formats += PLAYLIST_DEMUXERS
        protocols += ["crypto", "data"]
    return {"protocol_whitelist": ",".join(protocols), "format_whitelist": ",".join(formats)}


def run_ffmpeg(
    args: list[str], *, uri: str, deadline: float, check: bool = True, pass_fds: tuple[int, ...] = ()
) -> tuple[int, bytes, str]:
    """Run an ffmpeg command line in its own process group, under a hard deadline.

    On timeout the whole process group is killed with SIGKILL (ffmpeg may be blocked in a read
    that no signal short of KILL interrupts), so nothing is left running behind the caller.

    Args:
        args: Full command line, binary first.
        uri: Source being decoded, for error messages.
        deadline: ``time.monotonic()`` value after which the process is killed.
        check: Raise when ffmpeg exits with a non-zero status.
        pass_fds: open descriptors ffmpeg inherits (read as ``/proc/self/fd/N``: the file the
            caller opened and checked, whatever its path points at by now).

    Returns:
        ``(return code, stdout bytes, stderr text)``.

    Raises:
        DecodeTimeoutError: The deadline passed; the process group was killed.
        VideoDecodeError: ``check`` and ffmpeg failed (``reason`` classified from its stderr;
            :class:`UnsafeInputError` when a whitelist refused something).
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DecodeTimeoutError(uri, "the per-video decode timeout was exhausted before ffmpeg started")
    logger.debug("running %s", " ".join(args))
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        pass_fds=pass_fds,
    )
    try:
        out, err = proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise DecodeTimeoutError(
            uri,
            "ffmpeg did not finish within the per-video timeout and was killed; raise `timeout` "
            "if this video is legitimately long",
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    text = err.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        reason, message = classify_failure(text)
        exc_type = UnsafeInputError if reason in UNSAFE_REASONS else VideoDecodeError
        raise exc_type(uri, message, reason=reason)
    return proc.returncode, out, text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except Exception:  # pragma: no cover - the process is gone after SIGKILL
        logger.warning("ffmpeg process %d did not exit after SIGKILL", proc.pid)


UNSAFE_REASONS = frozenset({"format_not_allowed", "playlist", "protocol_not_allowed"})

_FAILURES: tuple[tuple[str, str, str], ...] = (
    ("Format not on whitelist", "format_not_allowed",
     "the container format is not on the allowed list (playlists and multi-file formats are refused)"),
    ("not on whitelist", "protocol_not_allowed",
     "the source tried to open a protocol that is not allowed"),
    ("moov atom not found", "truncated",
     "the MP4 index (moov atom) is missing: the file is truncated or still being written"),
    ("Permission denied", "permission_denied", "the file is not readable"),
    ("No such file or directory", "not_found", "the file does not exist"),
    ("Invalid data found when processing input", "invalid_data",
     "ffmpeg does not recognise the data as any allowed media format (corrupt or not a video)"),
    ("matches no streams", "no_video_stream", "the file has no video stream"),
    ("does not contain any stream", "no_video_stream", "the file has no video stream"),
)


def classify_failure(stderr: str) -> tuple[str, str]:
    """Map ffmpeg's stderr of a failed run to ``(reason tag, human message)``."""
    if "detected only with low score" in stderr and "moov atom not found" in stderr:
        # Random bytes that look a little like MP4: not a truncated MP4.
        return "invalid_data", ("ffmpeg does not recognise the data as any allowed media format "
                                f"(ffmpeg: {last_error_line(stderr, 'low score')})")
    for needle, reason, message in _FAILURES:
        if needle in stderr:
            return reason, f"{message} (ffmpeg: {last_error_line(stderr, needle)})"
    return "decode_failed", f"ffmpeg failed: {last_error_line(stderr, '')}"


def last_error_line(stderr: str, needle: str) -> str:
    """The last stderr line containing ``needle`` (for error messages)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if needle and needle in ln:
            return ln[:300]
    return (lines[-1] if lines else "no output")[:300]


@dataclass(frozen=True)
class StreamHeader:
    """What ffmpeg's input header says about a file and its first video stream."""

    format_name: str
    container_duration: float | None
    start_time: float
    has_video: bool
    has_audio: bool
    codec: str | None
    width: int
    height: int
    sar: float
    fps: float | None
    rotation: int


_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"Duration: (N/A|(\d+):(\d+):(\d+(?:\.\d+)?))(?:, start: (-?\d+(?:\.\d+)?))?")
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$", re.M)
_SIZE_RE = re.compile(r"(?:^|[ ,])(\d{1,6})x(\d{1,6})(?:[ ,]|$)")
_SAR_RE = re.compile(r"SAR (\d+):(\d+)")
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) fps")
_ROT_RE = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.I)


def parse_header(stderr: str) -> StreamHeader:
    """Parse the ``Input #0 ...`` block ffmpeg prints to stderr when it opens a file.

    Only the first video stream that is not an attached picture (cover art) counts.
    ``rotation`` is the display-matrix rotation, counter-clockwise degrees as ffmpeg prints it,
    normalised to 0/90/180/270; ``width``/``height`` are the coded (stored) dimensions.
    """
    m = _INPUT_RE.search(stderr)
    format_name = m.group(1) if m else "unknown"
    header = stderr[m.start():] if m else stderr
    duration: float | None = None
    start = 0.0
    d = _DURATION_RE.search(header)
    if d:
        if d.group(1) != "N/A":
            duration = int(d.group(2)) * 3600 + int(d.group(3)) * 60 + float(d.group(4))
        if d.group(5):
            start = float(d.group(5))
    has_video = has_audio = False
    codec: str | None = None
    width = height = 0
    sar = 1.0
    fps: float | None = None
    rotation = 0
    video_pos = -1
    for s in _STREAM_RE.finditer(header):
        kind, desc = s.group(1), s.group(2)
        if kind == "Audio":
            has_audio = True
        if kind != "Video" or has_video or "(attached pic)" in desc:
            continue
        has_video = True
        video_pos = s.end()
        codec = desc.split(" ", 1)[0].rstrip(",")
        size = _SIZE_RE.search(desc)
        if size:
            width, height = int(size.group(1)), int(size.group(2))
        sm = _SAR_RE.search(desc)
        if sm and int(sm.group(1)) > 0 and int(sm.group(2)) > 0:
            sar = int(sm.group(1)) / int(sm.group(2))
        fm = _FPS_RE.search(desc)
        if fm:
            fps = float(fm.group(1)) * (1000.0 if fm.group(2) else 1.0)
    if video_pos >= 0:
        # Side data of the video stream follows its line, up to the next stream / section.
        rest = header[video_pos:]
        nxt = re.search(r"^\s*(Stream #|Stream mapping|Output #|\[)", rest, re.M)
        block = rest[: nxt.start()] if nxt else rest
        r = _ROT_RE.search(block)
        if r:
            rotation = int(round(float(r.group(1)))) % 360
    return StreamHeader(format_name, duration, start, has_video, has_audio, codec, width, height, sar, fps,
                        rotation)


def detected_format(ffmpeg: str, url: str, *, uri: str, deadline: float) -> str | None:
    """Name of the demuxer ffmpeg's probe picks for ``url``.

    Safe on hostile files: the format whitelist names no real demuxer, so ffmpeg stops right
    after probing the first bytes, before a playlist demuxer could open anything it lists.
    """
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "debug", "-protocol_whitelist", "file",
            "-format_whitelist", "vtr_qdrant_none", "-i", url]
    _, _, err = run_ffmpeg(args, uri=uri, deadline=deadline, check=False)
    m = re.search(r"Format (\S+) probed with size=\d+ and score=\d+", err)
    return m.group(1) if m else None
