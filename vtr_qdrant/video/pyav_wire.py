"""The pipe protocol between :mod:`.pyav_pool` (parent) and :mod:`.pyav_worker` (child).

Each message is a 4-byte big-endian length and a JSON body; a reply's raw arrays follow its body.
A worker writes ``length 0`` once its imports are done. Failures travel as ``{"error": {...}}``
and are raised again in the parent as the same exception type.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from ..errors import (
    ConfigError,
    DecodeTimeoutError,
    MissingDependencyError,
    UnsafeInputError,
    VideoDecodeError,
)

__all__ = ["HEADER", "read_exact", "write_all", "error_reply", "rebuild_error"]

HEADER = struct.Struct("!I")
ERROR_TYPES = ("VideoDecodeError", "UnsafeInputError", "DecodeTimeoutError", "ConfigError", "MissingDependencyError")


def read_exact(fd: int, n: int) -> bytes | None:
    """Exactly ``n`` bytes from ``fd``, or None at end of file."""
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def error_reply(e: BaseException) -> dict[str, Any]:
    """The worker's reply for a failed request (see :func:`rebuild_error`)."""
    name = type(e).__name__
    if isinstance(e, VideoDecodeError):
        msg = str(e)
        prefix = f"{e.uri}: "
        return {"error": {"type": name if name in ERROR_TYPES else "VideoDecodeError", "reason": e.reason,
                          "message": msg[len(prefix):] if msg.startswith(prefix) else msg}}
    if isinstance(e, (ConfigError, MissingDependencyError)):
        return {"error": {"type": name, "message": str(e)}}
    return {"error": {"type": "VideoDecodeError", "reason": "decode_failed",
                      "message": f"the PyAV decoder failed: {name}: {e}"}}



def rebuild_error(text: str, err: dict[str, Any]) -> Exception:
    """The exception an :func:`error_reply` stands for, raised in the parent."""
    kind, message = str(err.get("type")), str(err.get("message", "decoding failed"))
    reason = str(err.get("reason", "decode_failed"))
    if kind == "ConfigError":
        return ConfigError(message)
    if kind == "MissingDependencyError":
        return MissingDependencyError(message)
    if kind == "UnsafeInputError":
        return UnsafeInputError(text, message, reason=reason)
    if kind == "DecodeTimeoutError":
        return DecodeTimeoutError(text, message, reason=reason)
    return VideoDecodeError(text, message, reason=reason)
